//! Everything the run report shows, gathered from a run directory: the metrics, the
//! configuration the run used, where it stands, and a summary of its data.

use std::path::{Path, PathBuf};

use serde_json::Value;

use sdpo_run::{
    DataSummary, METRICS_FILE, SplitSummary, TRAINER_STATE_FILE, list_checkpoints,
    read_data_summary, read_json, read_run_config,
};

use crate::error::ReportError;
use crate::metrics::{MetricsLog, read_metrics_file};

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
        let config = if let Some(values) = read_run_config(run_dir)? {
            Some(RunConfig {
                source: run_dir
                    .join(sdpo_run::RUN_CONFIG_FILE)
                    .display()
                    .to_string(),
                values,
            })
        } else if let Some((dir, state)) = checkpoint.as_ref().map(|c| (&c.dir, &c.state)) {
            state.get("config").map(|values| RunConfig {
                source: dir.join(TRAINER_STATE_FILE).display().to_string(),
                values: values.clone(),
            })
        } else {
            None
        };
        let data = match read_data_summary(run_dir)? {
            Some(summary) => Some(summary),
            None => config.as_ref().map(|c| summarize_data_files(&c.values)),
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
    let mut found = list_checkpoints(run_dir)?;
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
