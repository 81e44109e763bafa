//! Step counts that may be fractions of the run, as transformers 5 reads `warmup_steps`,
//! `logging_steps`, `eval_steps` and `save_steps` (an integer, or a float in `[0, 1)` meaning
//! that fraction of the total optimizer steps, rounded up), and when a run logs, evaluates and
//! saves (`eval_strategy`).

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
pub enum EvalStrategy {
    /// Never during training.
    No,
    /// Every `eval_steps` (default `logging_steps`) and at the last step.
    Steps,
    /// At the end of every epoch and at the last step.
    Epoch,
}

/// When a run evaluates, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalEvery {
    /// Every this many steps and at the last step.
    Steps(usize),
    /// At the end of every epoch and at the last step.
    Epoch,
    /// Not during training.
    Never,
}

/// The logging, evaluation and saving steps of a run of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunIntervals {
    /// Log every this many steps (and at the last step).
    pub logging_steps: usize,
    /// When to evaluate.
    pub eval: EvalEvery,
    /// Save a checkpoint every this many steps (0: only the final model).
    pub save_steps: usize,
}

impl RunIntervals {
    /// Resolves ratios against `total_steps`. `eval_strategy` unset keeps sdpo-rs' rule
    /// (`eval_steps` if set, else every epoch); `steps` falls back to `logging_steps` as
    /// transformers does.
    pub fn resolve(
        logging_steps: Steps,
        eval_steps: Option<Steps>,
        save_steps: Steps,
        eval_strategy: Option<EvalStrategy>,
        total_steps: usize,
    ) -> Self {
        let logging = logging_steps.resolve(total_steps).max(1);
        let every = |s: Steps| EvalEvery::Steps(s.resolve(total_steps).max(1));
        let eval = match (eval_strategy, eval_steps) {
            (None, Some(s)) => every(s),
            (None, None) | (Some(EvalStrategy::Epoch), _) => EvalEvery::Epoch,
            (Some(EvalStrategy::No), _) => EvalEvery::Never,
            (Some(EvalStrategy::Steps), s) => every(s.unwrap_or(logging_steps)),
        };
        Self {
            logging_steps: logging,
            eval,
            save_steps: save_steps.resolve(total_steps),
        }
    }

    /// Whether step `step` (1-based) of `total` writes a training record.
    pub fn log_at(&self, step: usize, total: usize) -> bool {
        step.is_multiple_of(self.logging_steps) || step == total
    }

    /// Whether step `step` of `total` evaluates; `epoch_end` when it closes an epoch.
    pub fn eval_at(&self, step: usize, total: usize, epoch_end: bool) -> bool {
        match self.eval {
            EvalEvery::Steps(n) => step.is_multiple_of(n) || step == total,
            EvalEvery::Epoch => epoch_end || step == total,
            EvalEvery::Never => false,
        }
    }

    /// Whether step `step` saves a checkpoint.
    pub fn save_at(&self, step: usize) -> bool {
        self.save_steps > 0 && step.is_multiple_of(self.save_steps)
    }
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
