//! The metrics records of a run: a logging window's mean, written to `metrics.jsonl` with the
//! step and epoch.

use super::*;

impl Trainer {
    /// Appends `record` to `metrics.jsonl` (once `train` opened it).
    pub(super) fn write(&mut self, record: &MetricsRecord) -> Result<(), TrainError> {
        match &mut self.metrics {
            Some(file) => Ok(file.append(record)?),
            None => Ok(()),
        }
    }

    /// A record of `values` at the current step, each name prefixed with `prefix`.
    pub(super) fn record(&self, values: BTreeMap<String, f64>, prefix: &str) -> MetricsRecord {
        MetricsRecord {
            step: self.global_step,
            epoch: self.global_step as f64 / self.plan.steps_per_epoch as f64,
            values: values
                .into_iter()
                .map(|(k, v)| (format!("{prefix}{k}"), v))
                .collect(),
        }
    }
}

/// Mean of each metric over a logging window.
pub(super) fn average(window: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for values in window {
        for (k, v) in values {
            *out.entry(k.clone()).or_default() += v / window.len() as f64;
        }
    }
    // The last step's learning rate and gradient norm, as transformers logs them, and TRL's
    // running token count.
    if let Some(last) = window.last() {
        for key in ["learning_rate", "grad_norm", "num_tokens"] {
            if let Some(v) = last.get(key) {
                out.insert(key.into(), *v);
            }
        }
    }
    out
}
