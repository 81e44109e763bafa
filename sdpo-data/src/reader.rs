//! Streaming readers for preference files: JSONL (one object per line) and JSON arrays here,
//! Parquet and Arrow IPC in `columnar`, and [`read_data`] for any data path (file, directory,
//! glob; see `source`).
//!
//! The layout is sniffed from the first non-blank byte (`[` means a JSON array, anything else
//! JSONL), so a `.json` file written one object per line (as `datasets.Dataset.to_json` does) is
//! read correctly. Neither layout is read into memory whole: JSONL is read line by line and
//! arrays are deserialized element by element from a buffered reader. Gzip-compressed JSON
//! (`.jsonl.gz`, `.json.gz`, as the Hub stores some datasets) is decompressed as it is read.
//!
//! A record whose message keys, tools or template arguments reach a chat template is also
//! parsed into an order-preserving value (see [`PreferenceRecord::from_json_ordered`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::columnar::{ARROW_IPC, PARQUET, read_arrow_ipc, read_parquet};
use crate::error::{DataError, RecordLocation, RecordOrigin};
use crate::record::{ColumnNames, PreferenceRecord, needs_ordered_twin};
use crate::source::{DataFile, FileKind, resolve_data_files};

/// The callback a reader hands each record (or its error) to: `Err` stops reading.
pub type RecordReader<'a> =
    dyn FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError> + 'a;

/// The file layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileLayout {
    /// One JSON object per line; blank lines are ignored.
    Jsonl,
    /// One JSON array of objects.
    JsonArray,
    /// Apache Parquet, read row group by row group.
    Parquet,
    /// Arrow IPC (stream or file format), read record batch by record batch.
    ArrowIpc,
}

/// Reads every record of every file that the data path `path` stands for (a file, a directory,
/// a glob: see [`resolve_data_files`]), choosing `split` in dataset directories, with the column
/// mapping `columns`, and returns the files read, in order.
///
/// Record-level errors go to `on_record`, as in [`read_records`].
///
/// # Errors
/// As [`resolve_data_files`] and [`read_file`].
pub fn read_data<F>(
    path: &Path,
    split: &str,
    columns: &ColumnNames,
    mut on_record: F,
) -> Result<Vec<DataFile>, DataError>
where
    F: FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError>,
{
    let files = resolve_data_files(path, split)?;
    for file in &files {
        read_file(file, columns, &mut on_record)?;
    }
    Ok(files)
}

/// Reads every record of one data file of a known kind, with the column mapping `columns`.
///
/// # Errors
/// File-level errors ([`DataError::Io`], [`DataError::Columnar`], [`DataError::MissingColumn`],
/// a broken JSON array), or whatever `on_record` returns.
pub fn read_file<F>(
    file: &DataFile,
    columns: &ColumnNames,
    on_record: &mut F,
) -> Result<FileLayout, DataError>
where
    F: FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError>,
{
    match file.kind {
        FileKind::Json => read_json(&file.path, false, columns, on_record),
        FileKind::JsonGzip => read_json(&file.path, true, columns, on_record),
        FileKind::Parquet => {
            crate::error::contain_panic(|| read_parquet(&file.path, columns, on_record))
                .map_err(|message| decoder_failed(&file.path, PARQUET, message))??;
            Ok(FileLayout::Parquet)
        }
        FileKind::ArrowIpc => {
            crate::error::contain_panic(|| read_arrow_ipc(&file.path, columns, on_record))
                .map_err(|message| decoder_failed(&file.path, ARROW_IPC, message))??;
            Ok(FileLayout::ArrowIpc)
        }
    }
}

/// Reads every record of the file `path` in file order and hands each (or its error) to
/// `on_record`. The file may be JSON, JSONL, Parquet or Arrow IPC (by extension, else by its
/// first bytes); columns have their default names (`prompt`, `chosen`, `rejected`).
///
/// A record-level error (bad field, bad line) is passed to `on_record`, which decides: return
/// `Err` to stop reading with that error, `Ok(())` to go on (skip). Errors that leave no way to
/// go on (unreadable file, broken JSON-array syntax) are returned directly.
///
/// # Errors
/// [`DataError::Io`], a [`DataError::MalformedJson`]/[`DataError::InvalidUtf8`] that breaks a
/// JSON array, or whatever `on_record` returns.
pub fn read_records<F>(path: &Path, mut on_record: F) -> Result<FileLayout, DataError>
where
    F: FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError>,
{
    let file = DataFile {
        path: path.to_path_buf(),
        kind: FileKind::of_file(path)?,
    };
    read_file(&file, &ColumnNames::default(), &mut on_record)
}

fn read_json<F>(
    path: &Path,
    gzip: bool,
    columns: &ColumnNames,
    on_record: &mut F,
) -> Result<FileLayout, DataError>
where
    F: FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError>,
{
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let source: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(file)
    };
    let mut reader = BufReader::with_capacity(1 << 16, source);
    let shared_path: Arc<Path> = Arc::from(path);
    let layout = sniff_layout(&mut reader).map_err(io_error)?;
    match layout {
        FileLayout::Jsonl => read_jsonl(reader, &shared_path, columns, on_record)?,
        _ => read_array(reader, &shared_path, columns, on_record)?,
    }
    Ok(layout)
}

/// Skips a UTF-8 byte-order mark, then peeks at the first non-blank byte of the first buffer
/// without consuming anything else (JSONL line numbers stay exact).
fn sniff_layout<R: BufRead>(reader: &mut R) -> std::io::Result<FileLayout> {
    if reader.fill_buf()?.starts_with(&[0xEF, 0xBB, 0xBF]) {
        reader.consume(3);
    }
    let buf = reader.fill_buf()?;
    let first = buf.iter().find(|b| !b.is_ascii_whitespace());
    Ok(if first == Some(&b'[') {
        FileLayout::JsonArray
    } else {
        FileLayout::Jsonl
    })
}

/// serde_json reports positions as "... at line L column C"; inside one JSONL line only the
/// column is meaningful.
fn json_message(err: &serde_json::Error, jsonl: bool) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&suffix) {
        Some(bare) if jsonl => format!("{bare} at column {}", err.column()),
        _ => text,
    }
}

fn read_jsonl<R: BufRead, F>(
    mut reader: R,
    path: &Arc<Path>,
    columns: &ColumnNames,
    on_record: &mut F,
) -> Result<(), DataError>
where
    F: FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError>,
{
    let mut buf = Vec::with_capacity(4096);
    let mut line_number = 0usize;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            return Ok(());
        }
        line_number += 1;
        let origin = RecordOrigin {
            path: Arc::clone(path),
            location: RecordLocation::Line(line_number),
        };
        let bytes = buf.trim_ascii();
        if bytes.is_empty() {
            continue;
        }
        on_record(parse_line(bytes, origin, columns))?;
    }
}

fn parse_line(
    bytes: &[u8],
    origin: RecordOrigin,
    columns: &ColumnNames,
) -> Result<PreferenceRecord, DataError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            return Err(DataError::InvalidUtf8 {
                origin,
                field: field_with_invalid_utf8(bytes),
                detail: format!("at byte {} of the line", err.valid_up_to() + 1),
            });
        }
    };
    match serde_json::from_str::<Value>(text) {
        Ok(value) => record_from_text(value, text, origin, columns),
        Err(err) => Err(DataError::MalformedJson {
            origin,
            message: json_message(&err, true),
        }),
    }
}

/// Validates a parsed record, with an order-preserving parse of `text` when it matters.
fn record_from_text(
    value: Value,
    text: &str,
    origin: RecordOrigin,
    columns: &ColumnNames,
) -> Result<PreferenceRecord, DataError> {
    let twin = if needs_ordered_twin(&value) {
        serde_json::from_str::<minijinja::Value>(text).ok()
    } else {
        None
    };
    PreferenceRecord::from_json_ordered(value, twin.as_ref(), origin, columns)
}

/// Which field of a JSONL line holds the invalid bytes: parse the line with invalid sequences
/// replaced by U+FFFD and find the first string containing one (`None` if the line is not JSON
/// even then, or the bytes are in a key).
fn field_with_invalid_utf8(bytes: &[u8]) -> Option<String> {
    fn search(value: &Value, path: String) -> Option<String> {
        match value {
            Value::String(s) if s.contains('\u{FFFD}') => Some(path),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| search(v, format!("{path}[{i}]"))),
            Value::Object(map) => map.iter().find_map(|(k, v)| {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                search(v, child)
            }),
            _ => None,
        }
    }
    let lossy = String::from_utf8_lossy(bytes);
    let value: Value = serde_json::from_str(&lossy).ok()?;
    search(&value, String::new()).filter(|p| !p.is_empty())
}

fn read_array<R: Read, F>(
    reader: R,
    path: &Arc<Path>,
    columns: &ColumnNames,
    on_record: &mut F,
) -> Result<(), DataError>
where
    F: FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError>,
{
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let mut state = ArrayState {
        path,
        columns,
        on_record,
        index: 0,
        stopped: None,
    };
    let result = (&mut deserializer)
        .deserialize_seq(&mut state)
        .and_then(|()| deserializer.end());
    if let Some(err) = state.stopped {
        return Err(err);
    }
    result.map_err(|err| {
        let origin = RecordOrigin {
            path: Arc::clone(path),
            location: RecordLocation::Index(state.index),
        };
        if err.is_io() {
            return DataError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(err),
            };
        }
        let message = json_message(&err, false);
        if message.starts_with("invalid unicode code point") {
            DataError::InvalidUtf8 {
                origin,
                field: None,
                detail: format!(
                    "or bad \\u escape in a string (file line {}, column {})",
                    err.line(),
                    err.column()
                ),
            }
        } else {
            DataError::MalformedJson { origin, message }
        }
    })
}

/// The array visitor: validates each element as it is parsed and hands it on, so the whole
/// array never exists as one `Value`.
struct ArrayState<'a, F> {
    path: &'a Arc<Path>,
    columns: &'a ColumnNames,
    on_record: &'a mut F,
    index: usize,
    stopped: Option<DataError>,
}

impl<'de, F> Visitor<'de> for &mut ArrayState<'_, F>
where
    F: FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError>,
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of preference records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            let origin = RecordOrigin {
                path: Arc::clone(self.path),
                location: RecordLocation::Index(self.index),
            };
            let text = raw.get();
            let value: Value = serde_json::from_str(text).map_err(de::Error::custom)?;
            if let Err(err) = (self.on_record)(record_from_text(value, text, origin, self.columns))
            {
                self.stopped = Some(err);
                return Err(de::Error::custom("stopped by the caller"));
            }
            self.index += 1;
        }
        Ok(())
    }
}

/// A columnar decoder that panicked on the file: its message, as the file's error.
fn decoder_failed(path: &Path, format: &'static str, message: String) -> DataError {
    DataError::Columnar {
        path: path.to_path_buf(),
        format,
        part: None,
        message: format!("the decoder failed on malformed metadata or data: {message}"),
    }
}
