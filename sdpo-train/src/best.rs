//! The best checkpoint, as transformers 5 keeps it: `metric_for_best_model` read from every
//! evaluation (`_determine_best_metric`: a strictly better value is a new best, so ties and NaN
//! never are), the checkpoint of the best step once it exists on disk (`_save_checkpoint`),
//! `save_total_limit` never deleting it nor the newest checkpoint (`rotate_checkpoints`), and
//! `load_best_model_at_end` (`_load_best_model`), and with `save_total_limit = 1` every
//! checkpoint but the best removed at the end of training.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{checkpoint_dir, list_checkpoints};
use crate::config::TrainConfig;
use crate::error::{TrainError, io};
use crate::observer::MetricsRecord;

/// The metric that ranks checkpoints and its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct BestMetric {
    /// The evaluation record's key (`eval_` + `metric_for_best_model` unless it has the prefix).
    pub key: String,
    /// Whether larger is better.
    pub greater_is_better: bool,
}

impl BestMetric {
    /// The run's metric: `metric_for_best_model`, or `loss` with `load_best_model_at_end`;
    /// `greater_is_better` unset means "not a loss" (as transformers'
    /// `TrainingArguments.__post_init__`). `None` when nothing ranks checkpoints
    /// (`save_strategy = "best"` without a metric is refused by the configuration's check).
    pub fn for_run(config: &TrainConfig) -> Option<Self> {
        let name = match (&config.metric_for_best_model, config.load_best_model_at_end) {
            (Some(name), _) => name.clone(),
            (None, true) => "loss".to_string(),
            (None, false) => return None,
        };
        let greater_is_better = config
            .greater_is_better
            .unwrap_or_else(|| !name.ends_with("loss"));
        let key = if name.starts_with("eval_") {
            name
        } else {
            format!("eval_{name}")
        };
        Some(Self {
            key,
            greater_is_better,
        })
    }
}

/// Where the best checkpoint stands (`trainer_state.json`'s `best_metric`, `best_global_step`,
/// `best_model_checkpoint`, transformers' names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BestState {
    /// The best value of the metric so far.
    #[serde(default)]
    pub best_metric: Option<f64>,
    /// The step of that evaluation.
    #[serde(default)]
    pub best_global_step: Option<usize>,
    /// `output_dir/checkpoint-N` of the best step, once that checkpoint was written.
    #[serde(default)]
    pub best_model_checkpoint: Option<PathBuf>,
}

impl BestState {
    /// Reads an evaluation record: whether its metric is a new best (strictly better than the
    /// best so far, which starts at the worst infinity, so NaN never is). The step is kept as
    /// `best_global_step` when the run saves checkpoints at all (`saves`). A record without the
    /// metric is an error that lists the metrics it has.
    pub fn observe(
        &mut self,
        metric: &BestMetric,
        record: &MetricsRecord,
        saves: bool,
    ) -> Result<bool, TrainError> {
        let Some(&value) = record.values.get(&metric.key) else {
            let available: Vec<&str> = record.values.keys().map(String::as_str).collect();
            return Err(TrainError::Config {
                key: "metric_for_best_model".into(),
                reason: format!(
                    "is `{}`, which the evaluation at step {} does not report; it reports: {}",
                    metric.key,
                    record.step,
                    available.join(", ")
                ),
            });
        };
        let best = *self.best_metric.get_or_insert(if metric.greater_is_better {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
        let better = if metric.greater_is_better {
            value > best
        } else {
            value < best
        };
        if better {
            self.best_metric = Some(value);
            if saves {
                self.best_global_step = Some(record.step);
            }
        }
        Ok(better)
    }

    /// After a checkpoint is written under `output_dir`: the best step's checkpoint becomes
    /// `best_model_checkpoint` once it exists (`just_saved` is the step being written, which
    /// exists once its directory is renamed into place).
    pub fn after_save(&mut self, output_dir: &Path, just_saved: usize) {
        if let Some(step) = self.best_global_step.filter(|&s| s > 0) {
            let dir = checkpoint_dir(output_dir, step);
            if step == just_saved || dir.is_dir() {
                self.best_model_checkpoint = Some(dir);
            }
        }
    }
}

/// The best checkpoint of a run: the metric that ranks them, where the best stands, and the
/// checkpoint loaded as the final model (with its metric) once `load_best_model_at_end` did.
#[derive(Debug, Clone, Default)]
pub struct BestTracker {
    /// `None` when nothing ranks checkpoints.
    pub metric: Option<BestMetric>,
    /// Where the best stands (saved in `trainer_state.json`).
    pub state: BestState,
    /// The checkpoint loaded at the end and its metric.
    pub loaded: Option<(String, f64)>,
}

/// Deletes the oldest checkpoints beyond `limit`, never the newest (to resume from) nor `best`:
/// transformers' `rotate_checkpoints`, which keeps `max(limit, protected)` directories. Each is
/// renamed out of the `checkpoint-N` namespace before it is deleted, so a crash mid-deletion
/// never leaves a half-deleted checkpoint that `latest` could pick.
pub fn rotate(
    output_dir: &Path,
    limit: Option<usize>,
    best: Option<&Path>,
) -> Result<Vec<PathBuf>, TrainError> {
    let Some(limit) = limit.filter(|&l| l > 0) else {
        return Ok(Vec::new());
    };
    let all = list_checkpoints(output_dir)?;
    if all.len() <= limit {
        return Ok(Vec::new());
    }
    let newest = all.last().map(|(_, dir)| dir.clone());
    let is_protected = |dir: &Path| newest.as_deref() == Some(dir) || best == Some(dir);
    let protected = all.iter().filter(|(_, dir)| is_protected(dir)).count();
    let keep = limit.max(protected);
    let mut remaining = all.len();
    let mut removed = Vec::new();
    for (step, dir) in all {
        if remaining <= keep {
            break;
        }
        if is_protected(&dir) {
            continue;
        }
        remove_checkpoint(output_dir, step, &dir)?;
        removed.push(dir);
        remaining -= 1;
    }
    Ok(removed)
}

/// With a best checkpoint and `save_total_limit = 1`, the end of training keeps only the best
/// checkpoint (transformers deletes the others after `load_best_model_at_end`'s load).
pub fn keep_only(output_dir: &Path, best: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let mut removed = Vec::new();
    for (step, dir) in list_checkpoints(output_dir)? {
        if dir != best {
            remove_checkpoint(output_dir, step, &dir)?;
            removed.push(dir);
        }
    }
    Ok(removed)
}

fn remove_checkpoint(output_dir: &Path, step: usize, dir: &Path) -> Result<(), TrainError> {
    let doomed = output_dir.join(format!(".deleting-checkpoint-{step}"));
    std::fs::rename(dir, &doomed).map_err(io("rename for removal", dir))?;
    std::fs::remove_dir_all(&doomed).map_err(io("remove", &doomed))
}
