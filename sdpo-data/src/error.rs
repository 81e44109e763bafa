//! The crate's one error type, [`DataError`], and the record origin it reports.
//!
//! Every error about a record names the file, where in the file the record is (a JSONL line or a
//! JSON-array index, both counted from 1 for lines and from 0 for indices, as editors and
//! `jq '.[i]'` show them; for Parquet and Arrow files the row group or record batch and the row,
//! both counted from 0 as `pyarrow` and `datasets` index them) and the field (column) that is
//! wrong (`chosen[1].role`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a record sits in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordLocation {
    /// Line number in a JSONL file, counted from 1.
    Line(usize),
    /// Element index in a JSON-array file, counted from 0.
    Index(usize),
    /// A row of a Parquet file: its row group and its row index in the file (not in the row
    /// group; what `pyarrow.parquet.read_table(path)` or `datasets` index), both from 0.
    RowGroupRow {
        /// Row group index, from 0.
        row_group: usize,
        /// Row index in the file, from 0.
        row: usize,
    },
    /// A row of an Arrow IPC file (`datasets` `save_to_disk`): its record batch and its row
    /// index in the file, both from 0.
    BatchRow {
        /// Record batch index, from 0.
        batch: usize,
        /// Row index in the file, from 0.
        row: usize,
    },
}

impl fmt::Display for RecordLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordLocation::Line(line) => write!(f, "line {line}"),
            RecordLocation::Index(index) => write!(f, "index {index}"),
            RecordLocation::RowGroupRow { row_group, row } => {
                write!(f, "row group {row_group}, row {row}")
            }
            RecordLocation::BatchRow { batch, row } => write!(f, "record batch {batch}, row {row}"),
        }
    }
}

/// The file and position a record came from; carried through tokenization so that late errors
/// (a template that fails to render, a prompt that fills `max_length`) still point at the input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordOrigin {
    /// The file the record was read from (shared by all records of that file).
    pub path: Arc<Path>,
    /// The record's line (JSONL) or index (JSON array).
    pub location: RecordLocation,
}

impl RecordOrigin {
    /// An origin for records built in memory rather than read from a file.
    pub fn in_memory(index: usize) -> Self {
        Self {
            path: Arc::from(Path::new("<memory>")),
            location: RecordLocation::Index(index),
        }
    }
}

impl fmt::Display for RecordOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.location)
    }
}

/// Everything that can go wrong in `sdpo-data`.
///
/// Record-level variants carry a [`RecordOrigin`] and the field path, and their message reads
/// `FILE: line N: field `F`: what is wrong`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A text file (a dataset card, a manifest, a tokenizer config, a chat template) is not
    /// UTF-8.
    #[error("{}: not UTF-8 text: invalid byte at offset {offset}", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// The offset of the first byte that is not UTF-8.
        offset: usize,
    },

    /// A record is not valid JSON (or, in a JSON-array file, the array itself is broken, which
    /// stops reading even when skipping is allowed).
    #[error("{origin}: malformed JSON: {message}")]
    MalformedJson {
        /// File and line/index of the broken record.
        origin: RecordOrigin,
        /// The parser's description, with its column.
        message: String,
    },

    /// A line or string is not valid UTF-8.
    #[error("{origin}: {}invalid UTF-8 {detail}", field_prefix(field))]
    InvalidUtf8 {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field holding the bad bytes, when it could be found.
        field: Option<String>,
        /// Where in the line the bad byte is.
        detail: String,
    },

    /// A required column holds a null in this row (Parquet/Arrow).
    #[error("{origin}: field `{field}`: is null")]
    NullValue {
        /// File, row group/batch and row.
        origin: RecordOrigin,
        /// The column.
        field: String,
    },

    /// A required field is absent.
    #[error("{origin}: field `{field}`: missing")]
    MissingField {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field path, e.g. `rejected` or `prompt[0].content`.
        field: String,
    },

    /// A field has the wrong JSON type.
    #[error("{origin}: field `{field}`: expected {expected}, found {found}")]
    WrongType {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field path.
        field: String,
        /// What was expected, in words.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },

    /// `chosen`, `rejected` or a conversational `prompt` is empty.
    #[error("{origin}: field `{field}`: is empty")]
    EmptyField {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field path.
        field: String,
    },

    /// A message has a role outside `system`, `user`, `assistant`, `tool`, `developer`.
    #[error(
        "{origin}: field `{field}`: unknown role `{role}` (expected system, user, assistant, tool or developer)"
    )]
    UnknownRole {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field path, e.g. `chosen[1].role`.
        field: String,
        /// The role found.
        role: String,
    },

    /// The record's shape is valid JSON with valid fields but cannot be turned into a pair.
    #[error("{origin}: field `{field}`: {reason}")]
    InvalidRecord {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field path.
        field: String,
        /// Why, in words.
        reason: String,
    },

    /// The record is conversational but the tokenizer has no chat template.
    #[error(
        "{origin}: field `{field}`: conversational record but the tokenizer has no chat template (add `chat_template` to tokenizer_config.json or a chat_template.jinja file)"
    )]
    NoChatTemplate {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field whose rendering was attempted.
        field: String,
    },

    /// The chat template failed while rendering a record (it called `raise_exception`, misused
    /// an undefined value, ran out of its instruction budget or recursion depth, wrote too much).
    #[error(
        "{origin}: field `{field}`: chat template failed to render{}: {source}",
        template_line(line)
    )]
    TemplateRender {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field whose rendering failed (`prompt`, `chosen` or `rejected`).
        field: String,
        /// The template line the error is at, when the engine knows it.
        line: Option<usize>,
        /// The template engine's error.
        #[source]
        source: minijinja::Error,
    },

    /// The tokenizer failed on a record's text.
    #[error("{origin}: field `{field}`: tokenization failed: {source}")]
    Tokenize {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field being tokenized.
        field: String,
        /// The tokenizer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A text to tokenize (a field, or a conversation as the chat template rendered it) is
    /// longer than [`max_text_bytes`](crate::DataConfig::max_text_bytes).
    #[error(
        "{origin}: field `{field}`: the text to tokenize has {bytes} bytes, more than max_text_bytes = {limit} (tokenizing costs hundreds of bytes of memory per token); raise max_text_bytes, or allow skipping"
    )]
    TextTooLong {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field being tokenized.
        field: String,
        /// The text's length in bytes.
        bytes: usize,
        /// The limit in effect.
        limit: usize,
    },

    /// Truncation to `max_length` would leave no completion token (the prompt alone fills it).
    #[error(
        "{origin}: field `{field}`: prompt has {prompt_len} tokens, so truncating to max_length = {max_length} ({mode}) leaves no completion token; raise max_length, set max_prompt_length, or allow skipping"
    )]
    CompletionTruncatedAway {
        /// File and line/index.
        origin: RecordOrigin,
        /// The field at fault (`prompt`: it fills `max_length` alone).
        field: String,
        /// Prompt tokens after `max_prompt_length`.
        prompt_len: usize,
        /// The configured `max_length`.
        max_length: usize,
        /// The truncation mode in effect.
        mode: &'static str,
    },

    /// After the next-token shift and `max_length` truncation a completion has no token whose
    /// log-prob is scored (a one-token completion after an empty prompt, or a window holding
    /// only completion tokens): the pair would give a constant loss with no gradient.
    #[error(
        "{origin}: field `{field}`: no completion token is scored after the next-token shift and truncation to max_length = {max_length} ({mode}): prompt {prompt_len} tokens, completion {completion_len}; give the pair a prompt, raise max_length, or allow skipping"
    )]
    NoScoredToken {
        /// File and line/index.
        origin: RecordOrigin,
        /// `chosen` or `rejected`.
        field: String,
        /// Prompt tokens after `max_prompt_length`.
        prompt_len: usize,
        /// Completion tokens.
        completion_len: usize,
        /// The configured `max_length` (`none` when unlimited).
        max_length: String,
        /// The truncation mode in effect.
        mode: &'static str,
    },

    /// `tokenizer.json` could not be loaded.
    #[error("{}: cannot load tokenizer: {source}", path.display())]
    TokenizerLoad {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizers crate's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// `tokenizer_config.json` is unreadable or has a bad entry.
    #[error("{}: field `{field}`: {reason}", path.display())]
    TokenizerConfig {
        /// The config file.
        path: PathBuf,
        /// The offending key.
        field: String,
        /// Why, in words.
        reason: String,
    },

    /// The chat template does not parse.
    #[error("{}: chat template does not compile{}: {source}", path.display(), template_line(line))]
    TemplateSyntax {
        /// Where the template came from.
        path: PathBuf,
        /// The template line of the syntax error, when known.
        line: Option<usize>,
        /// The template engine's error.
        #[source]
        source: minijinja::Error,
    },

    /// A Parquet or Arrow file lacks a column the config asks for (`chosen_column`,
    /// `rejected_column`). This is about the whole file, so it stops reading even when skipping.
    #[error("{}: column `{column}` (`{key}`) not found; the file's columns are: {}", path.display(), available.join(", "))]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column looked for.
        column: String,
        /// The config key that names it (`chosen_column`, `rejected_column`).
        key: &'static str,
        /// The columns the file has.
        available: Vec<String>,
    },

    /// A Parquet or Arrow IPC file cannot be decoded (truncated, corrupt, not that format, an
    /// unsupported compression codec). Stops reading even when skipping.
    #[error("{}: {}cannot read {format}: {message}", path.display(), part.as_ref().map_or_else(String::new, |p| format!("{p}: ")))]
    Columnar {
        /// The file.
        path: PathBuf,
        /// `Parquet` or `Arrow IPC`.
        format: &'static str,
        /// The part being read when it failed (`row group 3`, `record batch 0`), if any.
        part: Option<String>,
        /// The decoder's description.
        message: String,
    },

    /// A data path (file, directory, glob) does not lead to data files: no glob match, no file
    /// for the requested split, an unreadable `save_to_disk` manifest, mixed file kinds.
    #[error("{}: {reason}", path.display())]
    DataSource {
        /// The path as given (or the manifest file).
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },

    /// A configuration value is out of range.
    #[error("invalid data config: `{field}`: {reason}")]
    Config {
        /// The config key.
        field: &'static str,
        /// Why, in words.
        reason: String,
    },
}

fn template_line(line: &Option<usize>) -> String {
    line.map_or_else(String::new, |l| format!(" at template line {l}"))
}

fn field_prefix(field: &Option<String>) -> String {
    field
        .as_ref()
        .map_or_else(String::new, |f| format!("field `{f}`: "))
}

impl DataError {
    /// The record this error is about, if it is about one record.
    pub fn origin(&self) -> Option<&RecordOrigin> {
        match self {
            DataError::MalformedJson { origin, .. }
            | DataError::NullValue { origin, .. }
            | DataError::InvalidUtf8 { origin, .. }
            | DataError::MissingField { origin, .. }
            | DataError::WrongType { origin, .. }
            | DataError::EmptyField { origin, .. }
            | DataError::UnknownRole { origin, .. }
            | DataError::InvalidRecord { origin, .. }
            | DataError::NoChatTemplate { origin, .. }
            | DataError::TemplateRender { origin, .. }
            | DataError::Tokenize { origin, .. }
            | DataError::TextTooLong { origin, .. }
            | DataError::CompletionTruncatedAway { origin, .. }
            | DataError::NoScoredToken { origin, .. } => Some(origin),
            _ => None,
        }
    }

    /// Whether skipping the record is a sound reaction (`skip_invalid_records`); errors about
    /// files, tokenizers and configs are never skippable.
    pub fn is_record_error(&self) -> bool {
        self.origin().is_some()
    }
}

/// Reads a text file: [`DataError::Io`] when it cannot be read, [`DataError::NotText`] with the
/// offset of the first bad byte when it is not UTF-8.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| DataError::NotText {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Runs `f`, turning a panic inside it (third-party decoders and the template engine have
/// panicked on hostile input: an Arrow buffer sliced past its end, an overflow in minijinja's
/// lexer) into its message, so that bad input is an error naming the file, never a crash.
pub(crate) fn contain_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}
