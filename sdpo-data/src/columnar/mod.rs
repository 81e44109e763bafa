//! Streaming readers for columnar files: Apache Parquet (row group by row group) and Arrow IPC
//! (record batch by record batch; `datasets` `save_to_disk` and cache files are IPC streams).
//!
//! Only the mapped columns are decoded (a projection), and at most one row group's batch of
//! [`BATCH_ROWS`] rows is in memory at a time. Each row's prompt/chosen/rejected values are
//! turned into JSON values and validated by [`PreferenceRecord::from_json_with_columns`], so the
//! three formats, the rules and the error messages are those of JSON files:
//!
//! * strings (`string`, `large_string`, `string_view`, dictionary-encoded strings) are texts;
//! * lists (`list`, `large_list`, fixed-size lists) of structs are conversations; struct fields
//!   are message keys, and a null struct field counts as an absent key (Arrow gives every message
//!   every field of the column's struct type, so `{"name": null}` means "no name");
//! * numbers and booleans are values of the wrong type, as in JSON; binary, temporal and other
//!   non-JSON types are reported as such;
//! * a null in the chosen/rejected column is [`DataError::NullValue`]; a null prompt means no
//!   prompt (implicit prompt), as a JSON `null` does;
//! * the `tools` and `chat_template_kwargs` columns, when the file has them, are read too. What
//!   the chat template sees keeps the schema's field order and, below a message's own keys,
//!   the nulls Arrow gives absent struct fields (as `datasets` hands them to TRL).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Schema};
use minijinja::value::Value as TemplateValue;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use serde_json::{Map, Value};

use crate::error::{DataError, RecordLocation, RecordOrigin};
use crate::record::{ColumnNames, PreferenceRecord};

mod parquet_guard;

use parquet_guard::{StrictEofFile, check_dictionary_pages};

/// Rows decoded per record batch.
pub(crate) const BATCH_ROWS: usize = 1024;

pub(crate) const PARQUET: &str = "Parquet";
pub(crate) const ARROW_IPC: &str = "Arrow IPC";

/// The top-level columns to read, by index in the file schema: chosen and rejected are required
/// (else [`DataError::MissingColumn`]), the prompt is optional.
struct Projection {
    indices: Vec<usize>,
}

fn projection(
    path: &Path,
    schema: &Schema,
    columns: &ColumnNames,
) -> Result<Projection, DataError> {
    let find = |name: &str| schema.fields().iter().position(|f| f.name() == name);
    let mut indices = Vec::with_capacity(3);
    for (name, key) in [
        (&columns.chosen, "chosen_column"),
        (&columns.rejected, "rejected_column"),
    ] {
        match find(name) {
            Some(index) => indices.push(index),
            None => {
                return Err(DataError::MissingColumn {
                    path: path.to_path_buf(),
                    column: name.clone(),
                    key,
                    available: schema.fields().iter().map(|f| f.name().clone()).collect(),
                });
            }
        }
    }
    if let Some(index) = find(&columns.prompt) {
        indices.push(index);
    }
    for name in &columns.template_fields {
        if let Some(index) = find(name) {
            indices.push(index);
        }
    }
    indices.sort_unstable();
    Ok(Projection { indices })
}

/// Reads every row of the Parquet file `path`, row group by row group.
///
/// # Errors
/// [`DataError::Io`], [`DataError::Columnar`] (not Parquet, truncated, corrupt, unsupported
/// codec), [`DataError::MissingColumn`], or whatever `on_record` returns.
pub(crate) fn read_parquet<F>(
    path: &Path,
    columns: &ColumnNames,
    on_record: &mut F,
) -> Result<(), DataError>
where
    F: FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError>,
{
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let columnar = |part: Option<String>, message: String| DataError::Columnar {
        path: path.to_path_buf(),
        format: PARQUET,
        part,
        message,
    };
    let len = file
        .metadata()
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len == 0 {
        return Err(columnar(None, "the file is empty (0 bytes)".into()));
    }
    let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .map_err(|e| columnar(Some("footer metadata".into()), e.to_string()))?;
    let projection = projection(path, metadata.schema(), columns)?;
    let mask = ProjectionMask::roots(metadata.parquet_schema(), projection.indices.clone());
    let shared: Arc<Path> = Arc::from(path);
    let mut row = 0usize;
    for row_group in 0..metadata.metadata().num_row_groups() {
        let part = || Some(format!("row group {row_group}"));
        let file = file.try_clone().map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        check_dictionary_pages(&file, metadata.metadata().row_group(row_group), &mask)
            .map_err(|message| columnar(part(), message))?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            StrictEofFile(file),
            metadata.clone(),
        )
        .with_row_groups(vec![row_group])
        .with_projection(mask.clone())
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| columnar(part(), e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| columnar(part(), e.to_string()))?;
            rows_to_records(&batch, &shared, columns, on_record, |r| {
                RecordLocation::RowGroupRow {
                    row_group,
                    row: row + r,
                }
            })?;
            row += batch.num_rows();
        }
    }
    Ok(())
}

/// Reads every row of the Arrow IPC file `path` (stream or file format), batch by batch.
///
/// # Errors
/// [`DataError::Io`], [`DataError::Columnar`] (not Arrow IPC, truncated, corrupt),
/// [`DataError::MissingColumn`], or whatever `on_record` returns.
pub(crate) fn read_arrow_ipc<F>(
    path: &Path,
    columns: &ColumnNames,
    on_record: &mut F,
) -> Result<(), DataError>
where
    F: FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError>,
{
    let open = || {
        File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let columnar = |part: Option<String>, message: String| DataError::Columnar {
        path: path.to_path_buf(),
        format: ARROW_IPC,
        part,
        message,
    };
    let mut head = [0u8; 6];
    let mut file = open()?;
    let is_file_format = match file.read_exact(&mut head) {
        Ok(()) => &head == b"ARROW1",
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(columnar(
                None,
                "the file is too short to be Arrow IPC (empty or truncated)".into(),
            ));
        }
        Err(source) => {
            return Err(DataError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let shared: Arc<Path> = Arc::from(path);
    let mut row = 0usize;
    let mut each_batch = |batch_index: usize, batch: RecordBatch| {
        let result = rows_to_records(&batch, &shared, columns, on_record, |r| {
            RecordLocation::BatchRow {
                batch: batch_index,
                row: row + r,
            }
        });
        row += batch.num_rows();
        result
    };
    let part = |b: usize| Some(format!("record batch {b}"));
    if is_file_format {
        let reader = arrow_ipc::reader::FileReader::try_new_buffered(open()?, None)
            .map_err(|e| columnar(Some("footer and schema".into()), e.to_string()))?;
        let projection = projection(path, &reader.schema(), columns)?;
        drop(reader);
        let reader =
            arrow_ipc::reader::FileReader::try_new_buffered(open()?, Some(projection.indices))
                .map_err(|e| columnar(Some("footer and schema".into()), e.to_string()))?;
        for (index, batch) in reader.enumerate() {
            let batch = batch.map_err(|e| columnar(part(index), e.to_string()))?;
            each_batch(index, batch)?;
        }
    } else {
        let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(open()?), None)
            .map_err(|e| columnar(Some("schema message".into()), e.to_string()))?;
        let projection = projection(path, &reader.schema(), columns)?;
        drop(reader);
        let reader = arrow_ipc::reader::StreamReader::try_new(
            BufReader::with_capacity(1 << 16, open()?),
            Some(projection.indices),
        )
        .map_err(|e| columnar(Some("schema message".into()), e.to_string()))?;
        for (index, batch) in reader.enumerate() {
            let batch = batch.map_err(|e| columnar(part(index), e.to_string()))?;
            each_batch(index, batch)?;
        }
    }
    Ok(())
}

/// Turns each row of `batch` into a record (or its error) and hands it to `on_record`.
fn rows_to_records<F>(
    batch: &RecordBatch,
    path: &Arc<Path>,
    columns: &ColumnNames,
    on_record: &mut F,
    location: impl Fn(usize) -> RecordLocation,
) -> Result<(), DataError>
where
    F: FnMut(Result<PreferenceRecord, DataError>) -> Result<(), DataError>,
{
    fn column<'a>(batch: &'a RecordBatch, name: &'a str) -> Option<(&'a str, &'a dyn Array)> {
        let index = batch.schema_ref().index_of(name).ok()?;
        Some((name, batch.column(index).as_ref()))
    }
    let required = [
        column(batch, &columns.chosen),
        column(batch, &columns.rejected),
    ];
    let optional: Vec<(&str, &dyn Array)> = std::iter::once(columns.prompt.as_str())
        .chain(columns.template_fields.iter().map(String::as_str))
        .filter(|name| !name.is_empty())
        .filter_map(|name| column(batch, name))
        .collect();
    for r in 0..batch.num_rows() {
        let origin = RecordOrigin {
            path: Arc::clone(path),
            location: location(r),
        };
        on_record(row_record(&required, &optional, r, origin, columns))?;
    }
    Ok(())
}

fn row_record(
    required: &[Option<(&str, &dyn Array)>; 2],
    optional: &[(&str, &dyn Array)],
    row: usize,
    origin: RecordOrigin,
    columns: &ColumnNames,
) -> Result<PreferenceRecord, DataError> {
    let mut object = Map::with_capacity(3 + optional.len());
    let mut twin = Vec::with_capacity(3 + optional.len());
    for (name, array) in required.iter().flatten() {
        if array.is_null(row) {
            return Err(DataError::NullValue {
                origin,
                field: (*name).to_string(),
            });
        }
        let value = cell(origin.clone(), name, *array, row)?;
        object.insert((*name).to_string(), plain_json(&value));
        twin.push(((*name).to_string(), value));
    }
    for (name, array) in optional {
        if !array.is_null(row) {
            let value = cell(origin.clone(), name, *array, row)?;
            object.insert(name.to_string(), plain_json(&value));
            twin.push((name.to_string(), value));
        }
    }
    let twin = TemplateValue::from_iter(twin);
    PreferenceRecord::from_json_ordered(Value::Object(object), Some(&twin), origin, columns)
}

/// The JSON used to validate a cell: struct fields holding null are left out (a null field is
/// an absent key).
fn plain_json(value: &TemplateValue) -> Value {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::Bool => Value::Bool(value.is_true()),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(value.clone()) {
                Value::from(i)
            } else if let Ok(u) = u64::try_from(value.clone()) {
                Value::from(u)
            } else {
                float(f64::try_from(value.clone()).unwrap_or(f64::NAN))
            }
        }
        ValueKind::String => Value::String(value.as_str().unwrap_or_default().to_string()),
        ValueKind::Seq => Value::Array(
            value
                .try_iter()
                .map(|items| items.map(|v| plain_json(&v)).collect())
                .unwrap_or_default(),
        ),
        ValueKind::Map => {
            let mut object = Map::new();
            if let Ok(keys) = value.try_iter() {
                for key in keys {
                    let item = value.get_item(&key).unwrap_or_default();
                    if !item.is_none() {
                        object.insert(key.to_string(), plain_json(&item));
                    }
                }
            }
            Value::Object(object)
        }
        _ => Value::Null,
    }
}

/// One cell as a template value, or a [`DataError::WrongType`] naming the nested field whose
/// Arrow type has no JSON counterpart.
fn cell(
    origin: RecordOrigin,
    column: &str,
    array: &dyn Array,
    row: usize,
) -> Result<TemplateValue, DataError> {
    to_json(array, row).map_err(|(suffix, found)| DataError::WrongType {
        field: format!("{column}{suffix}"),
        expected: if suffix.is_empty() {
            "a string or a list of messages"
        } else {
            "a string"
        },
        found,
        origin,
    })
}

/// The value of `array[row]` (struct fields in schema order, nulls kept). On an Arrow type
/// without a JSON counterpart, the path below the column (`[1].content`) and the type in words.
fn to_json(array: &dyn Array, row: usize) -> Result<TemplateValue, (String, &'static str)> {
    if array.is_null(row) {
        return Ok(TemplateValue::from(()));
    }
    let value = match array.data_type() {
        DataType::Utf8 => TemplateValue::from(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => TemplateValue::from(array.as_string::<i64>().value(row)),
        DataType::Utf8View => TemplateValue::from(array.as_string_view().value(row)),
        DataType::Boolean => TemplateValue::from(array.as_boolean().value(row)),
        DataType::Int8 => TemplateValue::from(array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => TemplateValue::from(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => TemplateValue::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => TemplateValue::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => TemplateValue::from(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => TemplateValue::from(array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => TemplateValue::from(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => TemplateValue::from(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float16 => {
            TemplateValue::from(f64::from(array.as_primitive::<Float16Type>().value(row)))
        }
        DataType::Float32 => {
            TemplateValue::from(f64::from(array.as_primitive::<Float32Type>().value(row)))
        }
        DataType::Float64 => TemplateValue::from(array.as_primitive::<Float64Type>().value(row)),
        DataType::List(_) => list(array.as_list::<i32>().value(row).as_ref())?,
        DataType::LargeList(_) => list(array.as_list::<i64>().value(row).as_ref())?,
        DataType::FixedSizeList(_, _) => list(array.as_fixed_size_list().value(row).as_ref())?,
        DataType::Struct(fields) => {
            let strukt = array.as_struct();
            let mut entries = Vec::with_capacity(fields.len());
            for (field, child) in fields.iter().zip(strukt.columns()) {
                let value = to_json(child.as_ref(), row)
                    .map_err(|(suffix, found)| (format!(".{}{suffix}", field.name()), found))?;
                entries.push((field.name().clone(), value));
            }
            TemplateValue::from_iter(entries)
        }
        DataType::Dictionary(_, _) => {
            let dict = array
                .as_any_dictionary_opt()
                .ok_or((String::new(), "an unsupported dictionary"))?;
            let key = dict.normalized_keys()[row];
            to_json(dict.values().as_ref(), key)?
        }
        DataType::Null => TemplateValue::from(()),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => return Err((String::new(), "binary data")),
        DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Timestamp(_, _)
        | DataType::Duration(_)
        | DataType::Interval(_) => return Err((String::new(), "a date or time")),
        DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => return Err((String::new(), "a decimal number")),
        DataType::Map(_, _) => return Err((String::new(), "a map")),
        _ => return Err((String::new(), "a value of an unsupported Arrow type")),
    };
    Ok(value)
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn list(items: &dyn Array) -> Result<TemplateValue, (String, &'static str)> {
    (0..items.len())
        .map(|i| to_json(items, i).map_err(|(suffix, found)| (format!("[{i}]{suffix}"), found)))
        .collect::<Result<Vec<_>, _>>()
        .map(TemplateValue::from)
}
