//! One optimizer step: each micro-batch's gradients from [`crate::objective::micro_step`]
//! (whatever the memory mode), accumulated; the metrics and checks read back in one transfer,
//! a refusal of anything non-finite, then clipping and AdamW.

use super::*;

impl Trainer {
    /// The micro-batches (pair indices) of optimizer step `step` (0-based).
    pub(super) fn step_batches(&self, step: usize) -> Vec<Vec<usize>> {
        let epoch = step / self.plan.steps_per_epoch;
        let within = step % self.plan.steps_per_epoch;
        let batches = self.plan.sampler.epoch(epoch as u64);
        let accum = self.config.gradient_accumulation_steps;
        batches
            .into_iter()
            .skip(within * accum)
            .take(accum)
            .collect()
    }

    /// The tokens of the steps before `global_step`, from the run's deterministic schedule (a
    /// resumed run goes on counting where the interrupted one stopped).
    pub(super) fn replay_token_counts(&self) -> Result<TokenCounts, TrainError> {
        let mut counts = TokenCounts::default();
        for step in 0..self.global_step {
            for indices in self.step_batches(step) {
                let host = self
                    .data
                    .collator
                    .collate_indices(&self.data.train, &indices)?;
                counts.tokens += DeviceBatch::num_tokens(&host) as u64;
                counts.padded += host.input_ids.len() as u64;
            }
        }
        Ok(counts)
    }

    /// One optimizer step over `gradient_accumulation_steps` micro-batches: accumulate the
    /// gradients, read the metrics, the checks and the gradient norm back in one transfer,
    /// refuse the step if any is not finite, then clip and step AdamW.
    pub(super) fn train_step(&mut self) -> Result<StepOutcome, TrainError> {
        let step = self.global_step;
        let batches = self.step_batches(step);
        let total_pairs: usize = batches.iter().map(Vec::len).sum();
        if total_pairs == 0 {
            return Err(TrainError::EmptyStep { step: step + 1 });
        }
        if self
            .policy()
            .adapter()
            .is_some_and(|a| a.config.lora_dropout > 0.0)
        {
            // LoRA dropout draws from the backend's generator: seeding it from (seed, step)
            // makes the masks a function of the step, so a resumed run draws the same ones.
            let mut seed = Fnv1a::new();
            seed.write_u64(self.config.seed);
            seed.write_u64(step as u64);
            let seed = seed.finish();
            self.device.seed(seed);
            training_device(&self.device).seed(seed);
        }
        let mut accumulator = GradientsAccumulator::<CausalLm>::new();
        let mut metrics: Vec<Metric> = Vec::new();
        let mut checks: Vec<Metric> = Vec::new();
        let (mut tokens, mut padded) = (0, 0);
        let mut objective = self.loss.clone();
        let path = LogpsPath::for_config(&self.config);
        let loss_scale = self.loss_scale.scale();
        for indices in &batches {
            let host = self
                .data
                .collator
                .collate_indices(&self.data.train, indices)?;
            tokens += DeviceBatch::num_tokens(&host);
            padded += host.input_ids.len();
            let batch = DeviceBatch::new(&host, &self.device);
            let weight = indices.len() as f64 / total_pairs as f64;
            // With fp16 the loss (and so every gradient) is multiplied by the loss scale;
            // the metrics keep the weight alone.
            let loss_weight = weight * loss_scale;
            let out = micro_step(
                self.policy(),
                self.frozen(),
                &path,
                &host,
                &batch,
                &mut objective,
                loss_weight,
            )?;
            accumulator.accumulate(self.policy(), out.grads);
            accumulate_metrics(&mut metrics, out.metrics, weight);
            accumulate_metrics(&mut checks, out.checks, 1.0);
        }
        let mut grads = accumulator.grads();
        if let Some(norm) = global_grad_norm(self.policy(), &grads) {
            metrics.push(("grad_norm", norm.without_autodiff()));
        }
        metrics.extend(checks);
        let host = read_metrics(metrics).map_err(TrainError::Compute)?;
        if self.loss_scale.enabled() && gradients_overflowed(&host) {
            return Ok(self.skip_overflowed_step(host, tokens, padded));
        }
        for (name, value) in &host {
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    step: step + 1,
                    quantity: (*name).to_string(),
                    value: *value,
                });
            }
        }
        // Everything is finite: the step may touch the weights and the loss state.
        self.loss = objective;
        let mut values: BTreeMap<String, f64> = host
            .into_iter()
            .filter(|(name, _)| !CHECKS.contains(name))
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if self.loss_scale.enabled() {
            scale_grads(self.policy(), &mut grads, 1.0 / loss_scale);
            if let Some(norm) = values.get_mut("grad_norm") {
                *norm /= loss_scale;
            }
            self.loss_scale.on_finite_step();
        }
        let norm = values.get("grad_norm").copied().unwrap_or(0.0);
        clip_grad_norm(self.policy(), &mut grads, norm, self.config.max_grad_norm);
        let lr = self.schedule().lr(step);
        let policy = self
            .policy
            .take()
            .expect("the policy is only taken inside an optimizer step");
        self.policy = Some(self.optimizer.step(lr, policy, grads));
        self.global_step += 1;
        values.insert("learning_rate".into(), lr);
        Ok(StepOutcome {
            values,
            tokens,
            padded,
            warning: None,
        })
    }

    /// An `fp16` step whose gradients overflowed at the current loss scale: the weights, AdamW
    /// and the loss state stay as they were, the step counts (as in transformers), and the
    /// scale is halved for the next one.
    fn skip_overflowed_step(
        &mut self,
        host: Vec<(&'static str, f64)>,
        tokens: usize,
        padded: usize,
    ) -> StepOutcome {
        let step = self.global_step + 1;
        let scale = self.loss_scale.scale();
        self.loss_scale.on_overflow();
        let mut values: BTreeMap<String, f64> = host
            .into_iter()
            .filter(|(name, _)| !CHECKS.contains(name) && *name != "grad_norm")
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        values.insert("learning_rate".into(), self.schedule().lr(self.global_step));
        self.global_step += 1;
        StepOutcome {
            values,
            tokens,
            padded,
            warning: Some(format!(
                "warning: step {step}: float16 gradients overflowed at loss scale {scale}; the \
                 step is skipped (weights unchanged) and the scale is now {}",
                self.loss_scale.scale()
            )),
        }
    }
}
