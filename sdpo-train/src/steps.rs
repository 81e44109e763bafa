//! Step counts that may be fractions of the run, as transformers 5 reads `warmup_steps`,
//! `logging_steps`, `eval_steps` and `save_steps` (an integer, or a float in `[0, 1)` meaning
//! that fraction of the total optimizer steps, rounded up), and when a run logs, evaluates and
//! saves (`logging_strategy`, `eval_strategy`, `save_strategy`).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of optimizer steps, or a fraction of the run's total steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Steps {
    /// This many steps.
    Count(usize),
    /// This fraction (in `(0, 1)`) of the total optimizer steps, rounded up
    /// (`math.ceil(max_steps * ratio)`, `TrainerState.compute_steps`).
    Ratio(f64),
}

impl Steps {
    /// The steps for a run of `total_steps` optimizer steps.
    pub fn resolve(self, total_steps: usize) -> usize {
        match self {
            Steps::Count(n) => n,
            Steps::Ratio(r) => (total_steps as f64 * r).ceil() as usize,
        }
    }

    /// Whether this is zero steps.
    pub fn is_zero(self) -> bool {
        self == Steps::Count(0)
    }
}

impl From<usize> for Steps {
    fn from(n: usize) -> Self {
        Steps::Count(n)
    }
}

impl Serialize for Steps {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Steps::Count(n) => serializer.serialize_u64(*n as u64),
            Steps::Ratio(r) => serializer.serialize_f64(*r),
        }
    }
}

impl<'de> Deserialize<'de> for Steps {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let bad = || {
            D::Error::custom(format!(
                "expected a whole number of steps or a fraction in [0, 1) of the run, got {value}"
            ))
        };
        if let Some(n) = value.as_u64() {
            return Ok(Steps::Count(n as usize));
        }
        let x = value.as_f64().ok_or_else(bad)?;
        if x.is_finite() && (0.0..1.0).contains(&x) {
            Ok(if x == 0.0 {
                Steps::Count(0)
            } else {
                Steps::Ratio(x)
            })
        } else if x.is_finite() && x >= 1.0 && x.fract() == 0.0 {
            Ok(Steps::Count(x as usize))
        } else {
            Err(bad())
        }
    }
}

/// When to evaluate during training (`eval_strategy`, transformers' `IntervalStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalStrategy {
    /// Never during training.
    No,
    /// Every `eval_steps` (default `logging_steps`) and at the last step.
    Steps,
    /// At the end of every epoch and at the last step.
    Epoch,
}

/// When to write checkpoints (`save_strategy`, transformers' `SaveStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaveStrategy {
    /// Only the final model.
    No,
    /// Every `save_steps`.
    Steps,
    /// At the end of every epoch.
    Epoch,
    /// After every evaluation that improves `metric_for_best_model`.
    Best,
}

/// How often something happens during training, resolved against the run's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// Every this many optimizer steps.
    Steps(usize),
    /// At the end of every epoch (a partial last epoch included).
    Epoch,
    /// Never during training.
    Never,
}

/// The strategies and step counts that decide when a run logs, evaluates and saves, as the
/// configuration gives them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    /// `logging_strategy`.
    pub logging_strategy: IntervalStrategy,
    /// `logging_steps`.
    pub logging_steps: Steps,
    /// `logging_first_step`.
    pub logging_first_step: bool,
    /// `eval_strategy` (unset: sdpo-rs' rule, see [`RunIntervals::resolve`]).
    pub eval_strategy: Option<IntervalStrategy>,
    /// `eval_steps`.
    pub eval_steps: Option<Steps>,
    /// `eval_delay`: steps (or epochs, with `eval_strategy = "epoch"`) before the first
    /// evaluation.
    pub eval_delay: f64,
    /// `save_strategy`.
    pub save_strategy: SaveStrategy,
    /// `save_steps` (0: only the last step's checkpoint with the `steps` strategy).
    pub save_steps: Steps,
}

/// When a run of known length logs, evaluates and saves: transformers' `DefaultFlowCallback`
/// ([`RunIntervals::at_step_end`], then at an epoch's end [`RunIntervals::at_epoch_end`]), each
/// carried out as `_maybe_log_save_evaluate` does ([`Actions`]: log, evaluate, save).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunIntervals {
    /// When to write a training record.
    pub logging: Every,
    /// Also after the first step.
    pub logging_first_step: bool,
    /// When to evaluate (with `steps`, also at the last step).
    pub eval: Every,
    /// No evaluation at a step (or, evaluating by epoch, an epoch) below this.
    pub eval_delay: f64,
    /// When to save a checkpoint (with `steps`, also at the last step; `Steps(0)`: only there);
    /// `save_strategy =
    /// "best"` is [`RunIntervals::save_best`].
    pub save: Every,
    /// `save_strategy = "best"`: save after each evaluation that improves the best metric.
    pub save_best: bool,
}

impl RunIntervals {
    /// Resolves ratios against `total_steps` (`TrainerState.compute_steps`). `eval_strategy`
    /// unset keeps sdpo-rs' rule (every `eval_steps` if set, else every epoch); `steps` without
    /// `eval_steps` falls back to `logging_steps` as transformers does.
    pub fn resolve(settings: &StepSettings, total_steps: usize) -> Self {
        let every = |s: Steps| Every::Steps(s.resolve(total_steps).max(1));
        let logging = match settings.logging_strategy {
            IntervalStrategy::Steps => every(settings.logging_steps),
            IntervalStrategy::Epoch => Every::Epoch,
            IntervalStrategy::No => Every::Never,
        };
        // `eval_steps = 0` is unset, as transformers reads it.
        let eval_steps = settings.eval_steps.filter(|s| !s.is_zero());
        let eval = match (settings.eval_strategy, eval_steps) {
            (None, Some(s)) => every(s),
            (None, None) | (Some(IntervalStrategy::Epoch), _) => Every::Epoch,
            (Some(IntervalStrategy::No), _) => Every::Never,
            (Some(IntervalStrategy::Steps), s) => every(s.unwrap_or(settings.logging_steps)),
        };
        let save = match settings.save_strategy {
            // `save_steps = 0`: only the last step, as transformers' end-of-training save.
            SaveStrategy::Steps => Every::Steps(settings.save_steps.resolve(total_steps)),
            SaveStrategy::Epoch => Every::Epoch,
            SaveStrategy::No | SaveStrategy::Best => Every::Never,
        };
        Self {
            logging,
            logging_first_step: settings.logging_first_step,
            eval,
            eval_delay: settings.eval_delay,
            save,
            save_best: settings.save_strategy == SaveStrategy::Best,
        }
    }

    /// What step `step` (1-based) of `total` does when it ends (transformers'
    /// `DefaultFlowCallback.on_step_end`): `logging_first_step`, the `steps` strategies, and at
    /// the last step the evaluation and the checkpoint of the `steps` strategies.
    pub fn at_step_end(&self, step: usize, total: usize) -> Actions {
        let every = |every: Every| match every {
            Every::Steps(n) => n > 0 && step.is_multiple_of(n),
            _ => false,
        };
        let last = step >= total;
        let steps_kind = |every: Every| matches!(every, Every::Steps(_));
        Actions {
            log: (self.logging_first_step && step == 1) || every(self.logging),
            evaluate: steps_kind(self.eval)
                && (every(self.eval) || last)
                && self.eval_delay <= step as f64,
            save: steps_kind(self.save) && (every(self.save) || last),
        }
    }

    /// What the end of an epoch does (`on_epoch_end`), after the step's own actions; a run that
    /// stops part-way through an epoch ends it at its last step. `epoch` is the fractional
    /// epoch reached (`eval_delay` counts epochs here).
    pub fn at_epoch_end(&self, epoch: f64) -> Actions {
        Actions {
            log: self.logging == Every::Epoch,
            evaluate: self.eval == Every::Epoch && self.eval_delay <= epoch,
            save: self.save == Every::Epoch,
        }
    }
}

/// What a point of the training loop does, in this order: write a training record, evaluate,
/// save a checkpoint (with `save_strategy = "best"`, the evaluation decides the save).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions {
    /// Write a training record (never twice for one step).
    pub log: bool,
    /// Evaluate.
    pub evaluate: bool,
    /// Save a checkpoint.
    pub save: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_as_transformers_reads_them() {
        let parse = |json: &str| serde_json::from_str::<Steps>(json);
        assert_eq!(parse("10").unwrap(), Steps::Count(10));
        assert_eq!(parse("10.0").unwrap(), Steps::Count(10));
        assert_eq!(parse("0.0").unwrap(), Steps::Count(0));
        assert_eq!(parse("0.25").unwrap(), Steps::Ratio(0.25));
        for bad in ["2.5", "-1", "\"ten\"", "1e400"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Steps::Ratio(0.1).resolve(37), 4);
    }
}
