//! Reading `metrics.jsonl` as `sdpo-train` keeps it: one JSON object per line with `step`,
//! `epoch` and TRL's metric names (`eval_` prefixed for evaluation), possibly still being
//! written (a partial last line) and possibly continued by a resumed run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sdpo_run::{MetricsRecord, read_metrics_lines};

use crate::error::ReportError;

/// The prefix of evaluation metrics (TRL's).
pub const EVAL_PREFIX: &str = "eval_";

/// The metrics of transformers' end-of-run record (logged once, after the last step).
pub const END_OF_RUN_METRICS: [&str; 5] = [
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "total_flos",
    "train_loss",
];

/// Which log a record belongs to: a resumed run replaces records of the same kind only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordKind {
    Train,
    Eval,
    EndOfRun,
}

/// One value of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricPoint {
    /// The optimizer step of the record.
    pub step: usize,
    /// The fractional epoch of the record (NaN when the record had none).
    pub epoch: f64,
    /// The value; NaN for a `null` (the trainer writes non-finite numbers as `null`) or a NaN.
    pub value: f64,
}

/// The metrics of a run: one series per metric name, in step order, after resolving resumed
/// runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsLog {
    /// The file read.
    pub path: PathBuf,
    /// Every metric by its full name (`loss`, `eval_loss`, `sdpo/chosen_kept_fraction`, ...).
    pub series: BTreeMap<String, Vec<MetricPoint>>,
    /// Records kept (after dropping superseded ones).
    pub records: usize,
    /// Records dropped because a later record of the same kind (train or eval) re-logged their
    /// step or an earlier one: what a run resumed from an older checkpoint overwrites.
    pub superseded: usize,
    /// The last line had no newline and did not parse: a record being written by a run in
    /// progress. It was left out.
    pub partial_last_line: bool,
}

impl MetricsLog {
    /// The highest step logged.
    pub fn last_step(&self) -> Option<usize> {
        self.series
            .values()
            .filter_map(|points| points.last().map(|p| p.step))
            .max()
    }

    /// The series of `name`, if logged.
    pub fn get(&self, name: &str) -> Option<&[MetricPoint]> {
        self.series.get(name).map(Vec::as_slice)
    }
}

/// One record and the log it belongs to.
struct Record {
    step: usize,
    epoch: f64,
    kind: RecordKind,
    values: Vec<(String, f64)>,
}

impl Record {
    fn new(record: MetricsRecord) -> Self {
        let values: Vec<(String, f64)> = record.values.into_iter().collect();
        let all = |f: &dyn Fn(&str) -> bool| !values.is_empty() && values.iter().all(|(k, _)| f(k));
        let kind = if all(&|k| k.starts_with(EVAL_PREFIX)) {
            RecordKind::Eval
        } else if all(&|k| END_OF_RUN_METRICS.contains(&k)) {
            RecordKind::EndOfRun
        } else {
            RecordKind::Train
        };
        Self {
            step: record.step,
            epoch: record.epoch,
            kind,
            values,
        }
    }
}

/// Reads `path`. Blank lines are ignored; a last line without a newline that does not parse is
/// a record in progress and is skipped (flagged in the result); any other bad line is an error
/// naming the line. When a record's step is not after the steps already read (a run resumed
/// from an earlier checkpoint and appending), the earlier records it overlaps are dropped and
/// counted in [`MetricsLog::superseded`].
///
/// # Errors
/// [`ReportError::NoMetrics`] when the file is missing, [`ReportError::EmptyMetrics`] when it
/// holds no record, [`ReportError::BadMetricsLine`] for a malformed line.
pub fn read_metrics_file(path: &Path) -> Result<MetricsLog, ReportError> {
    if !path.is_file() {
        return Err(ReportError::NoMetrics {
            path: path.to_path_buf(),
        });
    }
    let lines = read_metrics_lines(path)?;
    let mut records: Vec<Record> = Vec::new();
    let mut superseded = 0;
    for record in lines.records.into_iter().map(Record::new) {
        // Records are kept in non-decreasing step order; a step at or before the last one
        // starts a continuation that replaces what it overlaps.
        if records.last().is_some_and(|last| last.step >= record.step) {
            let before = records.len();
            records.retain(|r| {
                r.step < record.step || (r.step == record.step && r.kind != record.kind)
            });
            superseded += before - records.len();
        }
        records.push(record);
    }
    let partial_last_line = lines.partial_last_line;
    if records.is_empty() {
        return Err(ReportError::EmptyMetrics {
            path: path.to_path_buf(),
        });
    }
    let mut series: BTreeMap<String, Vec<MetricPoint>> = BTreeMap::new();
    for record in &records {
        for (name, value) in &record.values {
            series.entry(name.clone()).or_default().push(MetricPoint {
                step: record.step,
                epoch: record.epoch,
                value: *value,
            });
        }
    }
    Ok(MetricsLog {
        path: path.to_path_buf(),
        series,
        records: records.len(),
        superseded,
        partial_last_line,
    })
}
