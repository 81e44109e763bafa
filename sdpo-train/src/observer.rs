//! What the trainer reports while it runs: the metrics file and a callback for user interfaces.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{TrainError, io};

/// One line of `metrics.jsonl`: TRL's metric names (`loss`, `rewards/accuracies`, ...,
/// `eval_` prefixed for evaluation) with the step and epoch.
///
/// JSON has no NaN: a non-finite value is written as `null` and read back as NaN, so whatever
/// the trainer writes it reads back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsRecord {
    /// The optimizer step the record belongs to.
    pub step: usize,
    /// Fractional epoch at that step.
    pub epoch: f64,
    /// The metrics.
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
}

impl<'de> Deserialize<'de> for MetricsRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let mut step = None;
        let mut epoch = None;
        let mut values = BTreeMap::new();
        for (key, value) in map {
            match key.as_str() {
                "step" => {
                    step = Some(value.as_u64().ok_or_else(|| {
                        D::Error::custom(format!(
                            "`step` must be a non-negative integer, got {value}"
                        ))
                    })? as usize)
                }
                "epoch" => {
                    epoch = Some(value.as_f64().ok_or_else(|| {
                        D::Error::custom(format!("`epoch` must be a number, got {value}"))
                    })?)
                }
                _ => {
                    let v = match &value {
                        serde_json::Value::Null => f64::NAN,
                        serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                        other => {
                            return Err(D::Error::custom(format!(
                                "metric `{key}` must be a number or null, got {other}"
                            )));
                        }
                    };
                    values.insert(key, v);
                }
            }
        }
        Ok(Self {
            step: step.ok_or_else(|| D::Error::missing_field("step"))?,
            epoch: epoch.ok_or_else(|| D::Error::missing_field("epoch"))?,
            values,
        })
    }
}

/// Progress of one optimizer step, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub struct StepProgress {
    /// Steps done.
    pub step: usize,
    /// Steps in the run.
    pub total_steps: usize,
    /// The step's loss.
    pub loss: f64,
    /// The step's `rewards/accuracies`.
    pub accuracy: f64,
    /// Real (non-padding) tokens per second through policy and reference.
    pub tokens_per_second: f64,
    /// Real (non-padding) tokens of the step.
    pub tokens: usize,
    /// Seconds the step took.
    pub seconds: f64,
}

/// Receives the trainer's reports. Every method has an empty default.
pub trait TrainObserver {
    /// Training starts (or resumes at `start_step`).
    fn on_start(&mut self, _start_step: usize, _total_steps: usize) {}
    /// An optimizer step finished.
    fn on_step(&mut self, _progress: &StepProgress) {}
    /// Training metrics were logged.
    fn on_log(&mut self, _record: &MetricsRecord) {}
    /// Evaluation metrics were computed.
    fn on_eval(&mut self, _record: &MetricsRecord) {}
    /// A checkpoint was written.
    fn on_checkpoint(&mut self, _dir: &Path) {}
    /// A notable event in words (data report, cache use, ...).
    fn on_message(&mut self, _message: &str) {}
    /// Training finished; the final model is in `dir`.
    fn on_finish(&mut self, _dir: &Path) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct SilentObserver;

impl TrainObserver for SilentObserver {}

/// Appends records to `output_dir/metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsFile {
    path: PathBuf,
    file: File,
}

impl MetricsFile {
    /// The file name under `output_dir`.
    pub const NAME: &'static str = "metrics.jsonl";

    /// Opens the metrics file; with `keep_up_to = Some(step)` (a resumed run) the records after
    /// `step` are dropped first, otherwise the file starts empty. The kept records are written
    /// to a temporary file that replaces the old one by a rename, so a kill at any moment leaves
    /// either the old file or the new one.
    pub fn open(output_dir: &Path, keep_up_to: Option<usize>) -> Result<Self, TrainError> {
        let path = output_dir.join(Self::NAME);
        let kept: Vec<MetricsRecord> = match keep_up_to {
            Some(step) if path.exists() => read_metrics(&path)?
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
    pub fn append(&mut self, record: &MetricsRecord) -> Result<(), TrainError> {
        let line = record_line(record, &self.path)?;
        self.file
            .write_all(line.as_bytes())
            .map_err(io("write", &self.path))?;
        self.file.flush().map_err(io("write", &self.path))
    }
}

/// One record as a JSON line, newline included.
fn record_line(record: &MetricsRecord, path: &Path) -> Result<String, TrainError> {
    serde_json::to_string(record)
        .map(|line| line + "\n")
        .map_err(|e| TrainError::Malformed {
            what: "metrics record",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Reads a `metrics.jsonl` file. A last line without its newline that does not parse is a
/// record cut short by a killed run (the trainer writes each record with its newline in one
/// write) and is left out; any other bad line is an error naming the line.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io("read", path))?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(record) => out.push(record),
            Err(_) if n + 1 == lines.len() && !complete => break,
            Err(e) => {
                return Err(TrainError::Malformed {
                    what: "metrics file",
                    path: path.to_path_buf(),
                    reason: format!("line {}: {e}", n + 1),
                });
            }
        }
    }
    Ok(out)
}
