//! `metrics.jsonl`: one JSON object per line with `step`, `epoch` and TRL's metric names
//! (`eval_` prefixed for evaluation), appended by the trainer, possibly still being written (a
//! partial last line) and possibly continued by a resumed run.
//!
//! JSON has no NaN: a non-finite value is written as `null` and read back as NaN, so whatever
//! the trainer writes it reads back. Python's `NaN`/`Infinity` literals (what `json.dumps`
//! writes) read as NaN too.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{RunDirError, io};
use crate::layout::METRICS_FILE;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsRecord {
    /// The optimizer step the record belongs to.
    pub step: usize,
    /// Fractional epoch at that step (NaN when the line had none).
    pub epoch: f64,
    /// The metrics.
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
}

impl<'de> Deserialize<'de> for MetricsRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = Map::<String, Value>::deserialize(deserializer)?;
        record_from_object(&object).map_err(serde::de::Error::custom)
    }
}

/// Parses one line of `metrics.jsonl`.
///
/// # Errors
/// What is wrong with the line, in words: not a JSON object, no integer `step`, an `epoch` or
/// a metric that is neither a number nor `null`.
pub fn parse_metrics_line(line: &str) -> Result<MetricsRecord, String> {
    record_from_object(&parse_object(line)?)
}

/// Parses a line as a JSON object; Python's `NaN`/`Infinity` literals read as `null`.
fn parse_object(line: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(line) {
        Ok(object) => Ok(object),
        Err(e) if line.contains("NaN") || line.contains("Infinity") => {
            let patched = line
                .replace("-Infinity", "null")
                .replace("Infinity", "null")
                .replace("NaN", "null");
            serde_json::from_str(&patched).map_err(|_| format!("not a JSON object: {e}"))
        }
        Err(e) => Err(format!("not a JSON object: {e}")),
    }
}

fn record_from_object(object: &Map<String, Value>) -> Result<MetricsRecord, String> {
    let step = match object.get("step") {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| format!("`step` must be a non-negative integer, got {n}"))?,
        Some(other) => return Err(format!("`step` must be an integer, got {other}")),
        None => return Err("no `step` field".to_string()),
    };
    let epoch = match object.get("epoch") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::Null) | None => f64::NAN,
        Some(other) => return Err(format!("`epoch` must be a number, got {other}")),
    };
    let mut values = BTreeMap::new();
    for (key, value) in object {
        if key == "step" || key == "epoch" {
            continue;
        }
        let value = match value {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Value::Null => f64::NAN,
            other => {
                return Err(format!(
                    "metric `{key}` must be a number or null, got {other}"
                ));
            }
        };
        values.insert(key.clone(), value);
    }
    Ok(MetricsRecord {
        step,
        epoch,
        values,
    })
}

/// The records of a `metrics.jsonl` file, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsLines {
    /// The records.
    pub records: Vec<MetricsRecord>,
    /// The last line had no newline and did not parse: a record being written by a run in
    /// progress (or cut short by a kill). It was left out.
    pub partial_last_line: bool,
}

/// Reads a `metrics.jsonl` file. Blank lines are ignored; a last line without its newline that
/// does not parse is a record cut short (the trainer writes each record with its newline in one
/// write) and is left out, flagged in the result; any other bad line is an error naming it.
///
/// # Errors
/// [`RunDirError::Io`] when the file cannot be read, [`RunDirError::BadMetricsLine`] for a
/// malformed line.
pub fn read_metrics_lines(path: &Path) -> Result<MetricsLines, RunDirError> {
    let bytes = std::fs::read(path).map_err(io("read", path))?;
    let text = String::from_utf8_lossy(&bytes);
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = MetricsLines::default();
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_metrics_line(line) {
            Ok(record) => out.records.push(record),
            Err(_) if n + 1 == lines.len() && !complete => out.partial_last_line = true,
            Err(reason) => {
                return Err(RunDirError::BadMetricsLine {
                    path: path.to_path_buf(),
                    line: n + 1,
                    reason,
                });
            }
        }
    }
    Ok(out)
}

/// The records of [`read_metrics_lines`], a partial last line left out.
///
/// # Errors
/// As [`read_metrics_lines`].
pub fn read_metrics_records(path: &Path) -> Result<Vec<MetricsRecord>, RunDirError> {
    read_metrics_lines(path).map(|lines| lines.records)
}

/// Appends records to `output_dir/metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsFile {
    path: PathBuf,
    file: File,
}

impl MetricsFile {
    /// The file name under `output_dir` ([`METRICS_FILE`]).
    pub const NAME: &'static str = METRICS_FILE;

    /// Opens the metrics file; with `keep_up_to = Some(step)` (a resumed run) the records after
    /// `step` are dropped first, otherwise the file starts empty. The kept records are written
    /// to a temporary file that replaces the old one by a rename, so a kill at any moment leaves
    /// either the old file or the new one.
    ///
    /// # Errors
    /// The file cannot be read, written or renamed; a kept record is malformed.
    pub fn open(output_dir: &Path, keep_up_to: Option<usize>) -> Result<Self, RunDirError> {
        let path = output_dir.join(Self::NAME);
        let kept: Vec<MetricsRecord> = match keep_up_to {
            Some(step) if path.exists() => read_metrics_records(&path)?
                .into_iter()
                .filter(|r| r.step <= step)
                .collect(),
            _ => Vec::new(),
        };
        let tmp = output_dir.join(format!("{}.tmp", Self::NAME));
        let mut text = String::new();
        for record in &kept {
            text.push_str(&record_line(record, &path)?);
        }
        std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        Ok(Self { path, file })
    }

    /// Appends one record (with its newline, in one write).
    ///
    /// # Errors
    /// The write fails.
    pub fn append(&mut self, record: &MetricsRecord) -> Result<(), RunDirError> {
        let line = record_line(record, &self.path)?;
        self.file
            .write_all(line.as_bytes())
            .map_err(io("write", &self.path))?;
        self.file.flush().map_err(io("write", &self.path))
    }
}

/// One record as a JSON line, newline included.
fn record_line(record: &MetricsRecord, path: &Path) -> Result<String, RunDirError> {
    serde_json::to_string(record)
        .map(|line| line + "\n")
        .map_err(|e| RunDirError::Malformed {
            what: "metrics record",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}
