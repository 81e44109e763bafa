//! Evaluation during and after training: the policy without autodiff over the eval split,
//! weighted means with the `eval_` prefix.

use super::*;

impl Trainer {
    /// Evaluates the policy on the eval split (if any): weighted means with the `eval_` prefix.
    /// A non-finite value is kept as it is (written as `null` in `metrics.jsonl`).
    pub fn evaluate(&mut self) -> Result<Option<MetricsRecord>, TrainError> {
        let Some(eval) = &self.data.eval else {
            return Ok(None);
        };
        let started = Instant::now();
        let model = self.policy().valid();
        let indices: Vec<usize> = (0..eval.len()).collect();
        let mut weighted: Vec<Metric> = Vec::new();
        // Evaluation must not advance the bco_pair running mean of training.
        let mut objective = self.loss.clone();
        let path = LogpsPath::for_config(&self.config);
        for chunk in indices.chunks(self.config.per_device_eval_batch_size) {
            let host = self.data.collator.collate_indices(eval, chunk)?;
            let batch = DeviceBatch::new(&host, &self.device);
            let out = batch_objective(
                &model,
                self.frozen(),
                &path,
                Split::Eval,
                &host,
                &batch,
                &mut objective,
            )?;
            accumulate_metrics(
                &mut weighted,
                out.metrics,
                chunk.len() as f64 / eval.len() as f64,
            );
        }
        if weighted.is_empty() {
            return Ok(None);
        }
        let mut values: BTreeMap<String, f64> = read_metrics(weighted)
            .map_err(TrainError::Compute)?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // TRL logs the training token count with every evaluation too.
        let tokens = self.counts.map_or(0, |c| c.tokens);
        values.insert("num_tokens".into(), tokens as f64);
        let batches = eval.len().div_ceil(self.config.per_device_eval_batch_size);
        for (key, value) in eval_speed(started, eval.len(), batches) {
            values.insert(key.into(), value);
        }
        Ok(Some(self.record(values, "eval_")))
    }
}

/// Tells the observer which evaluation metrics are not finite (training continues: evaluation
/// does not touch the weights).
pub(super) fn warn_non_finite(record: &MetricsRecord, observer: &mut dyn TrainObserver) {
    let bad: Vec<&str> = record
        .values
        .iter()
        .filter(|(_, v)| !v.is_finite())
        .map(|(k, _)| k.as_str())
        .collect();
    if !bad.is_empty() {
        observer.on_message(&format!(
            "warning: evaluation at step {} gave non-finite {}",
            record.step,
            bad.join(", ")
        ));
    }
}
