//! Everything the run report shows, gathered from a run directory: the metrics, the
//! configuration the run used, where it stands, and a summary of its data.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ReportError, io};
use crate::metrics::{METRICS_FILE, MetricsLog, read_metrics_file};

/// The run's configuration as JSON, written by the trainer at start-up (optional: without it
/// the newest checkpoint's `trainer_state.json` supplies the configuration).
pub const RUN_CONFIG_FILE: &str = "run_config.json";

/// The data summary written by the trainer after reading its data (optional: without it the
/// report reads the configured data files itself, without tokenizing them).
pub const DATA_SUMMARY_FILE: &str = "data_summary.json";

/// The trainer state file inside a `checkpoint-N` directory.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";

/// The run's configuration and where it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Where the configuration came from (a file path, or words such as "--config run.toml").
    pub source: String,
    /// The configuration (a JSON object of `TrainConfig`'s keys).
    pub values: Value,
}

/// The newest complete checkpoint of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    /// The `checkpoint-N` directory.
    pub dir: PathBuf,
    /// Optimizer steps done when it was written.
    pub global_step: usize,
    /// Steps of the whole run.
    pub max_steps: Option<usize>,
    /// Number of complete checkpoints in the run directory.
    pub count: usize,
}

/// What happened to one data file: the counts of `sdpo-data`'s `DataReport`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// `train` or `eval`.
    pub split: String,
    /// The preference file.
    pub file: PathBuf,
    /// Records seen (valid or not).
    pub records_read: usize,
    /// Pairs in the dataset (valid records, less those dropped by truncation).
    pub pairs: usize,
    /// Records skipped as invalid.
    pub skipped_invalid: usize,
    /// Pairs dropped because truncation left no completion token; `None` when the file was not
    /// tokenized for this summary.
    #[serde(default)]
    pub dropped_truncated: Option<usize>,
    /// Pairs whose prompt was cut to `max_prompt_length`; `None` when not tokenized.
    #[serde(default)]
    pub prompts_truncated: Option<usize>,
    /// Pairs with a side longer than `max_length`; `None` when not tokenized.
    #[serde(default)]
    pub pairs_over_max_length: Option<usize>,
    /// The first reasons for skipped records, verbatim.
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl SplitSummary {
    /// The summary of a tokenized split from `sdpo-data`'s report.
    pub fn from_data_report(split: &str, file: &Path, report: &sdpo_data::DataReport) -> Self {
        Self {
            split: split.to_string(),
            file: file.to_path_buf(),
            records_read: report.records_read,
            pairs: report.pairs_kept,
            skipped_invalid: report.skipped_invalid,
            dropped_truncated: Some(report.dropped_truncated),
            prompts_truncated: Some(report.prompts_truncated),
            pairs_over_max_length: Some(report.pairs_over_max_length),
            reasons: report.reasons.clone(),
        }
    }
}

/// The data of a run, one entry per split; `data_summary.json` holds this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSummary {
    /// Where the numbers come from, in words (shown in the report).
    #[serde(default)]
    pub source: String,
    /// The splits.
    pub splits: Vec<SplitSummary>,
    /// A file named in the configuration that could not be read, with the reason.
    #[serde(default)]
    pub unreadable: Vec<String>,
}

/// Everything the run report shows.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run directory (`output_dir`).
    pub run_dir: PathBuf,
    /// The metrics.
    pub metrics: MetricsLog,
    /// The configuration, if one was found.
    pub config: Option<RunConfig>,
    /// The newest complete checkpoint, if any.
    pub checkpoint: Option<CheckpointInfo>,
    /// The data summary, if one was found or computed.
    pub data: Option<DataSummary>,
}

impl RunReport {
    /// Reads a run directory: `metrics.jsonl` (required), the configuration from
    /// `run_config.json` or else the newest checkpoint's `trainer_state.json`, and the data
    /// summary from `data_summary.json` or else from the configured data files (read, not
    /// tokenized).
    ///
    /// # Errors
    /// A missing directory or metrics file, an empty or malformed metrics file, a malformed
    /// JSON file of the run.
    pub fn load(run_dir: &Path) -> Result<Self, ReportError> {
        if !run_dir.is_dir() {
            return Err(ReportError::NoRunDir {
                path: run_dir.to_path_buf(),
            });
        }
        let metrics = read_metrics_file(&run_dir.join(METRICS_FILE))?;
        let checkpoint = newest_checkpoint(run_dir)?;
        let config_path = run_dir.join(RUN_CONFIG_FILE);
        let config = if config_path.is_file() {
            Some(RunConfig {
                source: config_path.display().to_string(),
                values: read_json(&config_path, "run configuration")?,
            })
        } else if let Some((dir, state)) = checkpoint.as_ref().map(|c| (&c.dir, &c.state)) {
            state.get("config").map(|values| RunConfig {
                source: dir.join(TRAINER_STATE_FILE).display().to_string(),
                values: values.clone(),
            })
        } else {
            None
        };
        let summary_path = run_dir.join(DATA_SUMMARY_FILE);
        let data = if summary_path.is_file() {
            let value = read_json(&summary_path, "data summary")?;
            Some(
                serde_json::from_value(value).map_err(|e| ReportError::Malformed {
                    what: "data summary",
                    path: summary_path.clone(),
                    reason: e.to_string(),
                })?,
            )
        } else {
            config.as_ref().map(|c| summarize_data_files(&c.values))
        };
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            metrics,
            config,
            checkpoint: checkpoint.map(|c| c.info),
            data,
        })
    }

    /// Replaces the configuration (e.g. the one the trainer holds, or `--config FILE`), and, if
    /// no data summary was found, summarises the data files it names.
    pub fn with_config(mut self, source: impl Into<String>, values: Value) -> Self {
        if self.data.is_none() {
            self.data = Some(summarize_data_files(&values));
        }
        self.config = Some(RunConfig {
            source: source.into(),
            values,
        });
        self
    }

    /// Replaces the data summary (e.g. with the trainer's own, from tokenized data).
    pub fn with_data_summary(mut self, data: DataSummary) -> Self {
        self.data = Some(data);
        self
    }
}

struct Checkpoint {
    dir: PathBuf,
    state: Value,
    info: CheckpointInfo,
}

fn newest_checkpoint(run_dir: &Path) -> Result<Option<Checkpoint>, ReportError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(run_dir).map_err(io("list", run_dir))? {
        let entry = entry.map_err(io("list", run_dir))?;
        let name = entry.file_name();
        if let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("checkpoint-"))
            .and_then(|n| n.parse::<usize>().ok())
            && entry.path().join(TRAINER_STATE_FILE).is_file()
        {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    let count = found.len();
    let Some((_, dir)) = found.pop() else {
        return Ok(None);
    };
    let path = dir.join(TRAINER_STATE_FILE);
    let state = read_json(&path, "trainer state")?;
    let global_step = state
        .get("global_step")
        .and_then(Value::as_u64)
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| ReportError::Malformed {
            what: "trainer state",
            path: path.clone(),
            reason: "no integer `global_step`".to_string(),
        })?;
    let max_steps = state
        .get("max_steps")
        .and_then(Value::as_u64)
        .and_then(|s| usize::try_from(s).ok());
    Ok(Some(Checkpoint {
        dir: dir.clone(),
        state,
        info: CheckpointInfo {
            dir,
            global_step,
            max_steps,
            count,
        },
    }))
}

fn read_json(path: &Path, what: &'static str) -> Result<Value, ReportError> {
    let text = std::fs::read_to_string(path).map_err(io("read", path))?;
    serde_json::from_str(&text).map_err(|e| ReportError::Malformed {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads (without tokenizing) the `train_file` and `eval_file` a configuration names. Paths are
/// as the trainer saw them: relative ones are relative to the current directory.
fn summarize_data_files(config: &Value) -> DataSummary {
    let mut summary = DataSummary {
        source:
            "read now from the configured files (not tokenized; the run wrote no data_summary.json)"
                .to_string(),
        ..DataSummary::default()
    };
    for (split, key) in [("train", "train_file"), ("eval", "eval_file")] {
        let Some(file) = config.get(key).and_then(Value::as_str) else {
            continue;
        };
        if file.is_empty() {
            continue;
        }
        let path = PathBuf::from(file);
        let mut valid = 0;
        let mut invalid = 0;
        let mut reasons = Vec::new();
        let read = sdpo_data::read_records(&path, |record| {
            match record {
                Ok(_) => valid += 1,
                Err(err) => {
                    invalid += 1;
                    if reasons.len() < 5 {
                        reasons.push(err.to_string());
                    }
                }
            }
            Ok(())
        });
        match read {
            Ok(_) => summary.splits.push(SplitSummary {
                split: split.to_string(),
                file: path,
                records_read: valid + invalid,
                pairs: valid,
                skipped_invalid: invalid,
                dropped_truncated: None,
                prompts_truncated: None,
                pairs_over_max_length: None,
                reasons,
            }),
            Err(err) => summary.unreadable.push(format!(
                "{split} file `{file}`: {err} (relative paths are relative to where `sdpo train` ran)"
            )),
        }
    }
    summary
}
