//! What the trainer reports while it runs: the metrics file and a callback for user interfaces.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{TrainError, io};

/// One line of `metrics.jsonl`: TRL's metric names (`loss`, `rewards/accuracies`, ...,
/// `eval_` prefixed for evaluation) with the step and epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    /// The optimizer step the record belongs to.
    pub step: usize,
    /// Fractional epoch at that step.
    pub epoch: f64,
    /// The metrics.
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
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
    /// `step` are dropped first, otherwise the file starts empty.
    pub fn open(output_dir: &Path, keep_up_to: Option<usize>) -> Result<Self, TrainError> {
        let path = output_dir.join(Self::NAME);
        let kept = match keep_up_to {
            Some(step) if path.exists() => read_metrics(&path)?
                .into_iter()
                .filter(|r| r.step <= step)
                .collect(),
            _ => Vec::new(),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(io("create", &path))?;
        for record in &kept {
            let line = serde_json::to_string(record).map_err(|e| TrainError::Malformed {
                what: "metrics record",
                path: path.clone(),
                reason: e.to_string(),
            })?;
            writeln!(file, "{line}").map_err(io("write", &path))?;
        }
        Ok(Self { path, file })
    }

    /// Appends one record.
    pub fn append(&mut self, record: &MetricsRecord) -> Result<(), TrainError> {
        let line = serde_json::to_string(record).map_err(|e| TrainError::Malformed {
            what: "metrics record",
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        writeln!(self.file, "{line}").map_err(io("write", &self.path))?;
        self.file.flush().map_err(io("write", &self.path))
    }
}

/// Reads a `metrics.jsonl` file.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>, TrainError> {
    let file = File::open(path).map_err(io("open", path))?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io("read", path))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| TrainError::Malformed {
            what: "metrics file",
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        out.push(record);
    }
    Ok(out)
}
