//! Defences against hostile Parquet files, applied before the `parquet` crate decodes them:
//! readers that stop at the end of the file, and dictionary pages that must hold the values
//! they declare. Each closes a hang or an unbounded allocation of parquet 60.1 found by
//! libFuzzer (docs/reliability.md; the inputs are in `fixtures/fuzz/parquet/`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::sync::Arc;

use parquet::arrow::ProjectionMask;

/// Refuses a row group whose projected column chunk starts with a dictionary page declaring
/// more values than its bytes can hold.
///
/// parquet 60.1 reserves room for the declared count before it decodes a value: a 6.5 KB
/// file declaring billions of dictionary values took gigabytes (found by libFuzzer). A plain
/// dictionary spends at least 4 bytes per value on byte arrays (their length), the type's
/// width on fixed-size values, and one bit on booleans.
pub(super) fn check_dictionary_pages(
    file: &File,
    row_group: &parquet::file::metadata::RowGroupMetaData,
    mask: &ProjectionMask,
) -> Result<(), String> {
    use parquet::basic::Type as Physical;
    use parquet::column::page::{Page, PageReader};
    let rows = usize::try_from(row_group.num_rows()).unwrap_or(0);
    for (leaf, column) in row_group.columns().iter().enumerate() {
        if !mask.leaf_included(leaf) {
            continue;
        }
        let file = file.try_clone().map_err(|e| e.to_string())?;
        let mut pages = parquet::file::serialized_reader::SerializedPageReader::new(
            Arc::new(StrictEofFile(file)),
            column,
            rows,
            None,
        )
        .map_err(|e| e.to_string())?;
        let Some(Page::DictionaryPage {
            buf, num_values, ..
        }) = pages.get_next_page().map_err(|e| e.to_string())?
        else {
            continue;
        };
        let bits_per_value: u64 = match column.column_type() {
            Physical::BOOLEAN => 1,
            Physical::INT32 | Physical::FLOAT | Physical::BYTE_ARRAY => 32,
            Physical::INT64 | Physical::DOUBLE => 64,
            Physical::INT96 => 96,
            Physical::FIXED_LEN_BYTE_ARRAY => {
                8 * u64::try_from(column.column_descr().type_length().max(1)).unwrap_or(1)
            }
        };
        let bits = u64::from(num_values).saturating_mul(bits_per_value);
        if bits > (buf.len() as u64).saturating_mul(8) {
            return Err(format!(
                "column `{}`: its dictionary page declares {num_values} values in {} bytes",
                column.column_path().string(),
                buf.len()
            ));
        }
    }
    Ok(())
}

/// A Parquet file whose readers fail on a second read at the end of the file.
///
/// parquet 60.1 skips unknown Thrift fields of a page header with `io::copy` into a sink,
/// which returns without error at the end of the input; a header declaring nested lists of
/// 2^31 elements past the end then spent minutes in empty reads (a 3 KB file found by
/// libFuzzer: 40 s). A reader of a valid file stops at the first empty read, so the second
/// is an error and the header's decoding ends there.
pub(super) struct StrictEofFile(pub(super) File);

impl parquet::file::reader::Length for StrictEofFile {
    fn len(&self) -> u64 {
        self.0.len()
    }
}

impl parquet::file::reader::ChunkReader for StrictEofFile {
    type T = StrictEofReader<BufReader<File>>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(StrictEofReader {
            inner: self.0.get_read(start)?,
            at_end: false,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        self.0.get_bytes(start, length)
    }
}

/// See [`StrictEofFile`].
pub(super) struct StrictEofReader<R> {
    inner: R,
    at_end: bool,
}

impl<R: Read> Read for StrictEofReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let read = self.inner.read(buf)?;
        if read == 0 {
            if self.at_end {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                ));
            }
            self.at_end = true;
        }
        Ok(read)
    }
}
