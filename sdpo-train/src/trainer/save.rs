//! What a run writes: atomic checkpoints (with the best-checkpoint state and, for TR-DPO, the
//! moving reference), the final model with its generation settings and model card, and the
//! end of training for the best checkpoint.

use super::*;

impl Trainer {
    /// Writes `output_dir/checkpoint-N` (atomically, with its manifest written last) and
    /// rotates old checkpoints.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let out = &self.config.output_dir;
        self.best.state.after_save(out, self.global_step);
        let state = TrainerState {
            global_step: self.global_step,
            epoch: self.global_step as f64 / self.plan.steps_per_epoch as f64,
            max_steps: self.total_steps(),
            running_moments: self.loss.running_moments(),
            param_ids: param_ids(self.policy()),
            config: self.config.clone(),
            best: self.best.state.clone(),
        };
        let dir = write_checkpoint(out, &self.optimizer, &state, |tmp| {
            self.write_model(tmp)?;
            if self.config.sync_ref_model {
                reference::sync::save_reference(&self.reference, tmp)?;
            }
            Ok(())
        })?;
        let best = self.best.state.best_model_checkpoint.as_deref();
        best::rotate(out, self.config.save_total_limit, best)?;
        Ok(dir)
    }

    /// Writes what the run report shows besides the metrics: `run_config.json` (the
    /// configuration the run uses, flat keys) and `data_summary.json` (what reading the data
    /// did), so that a library user of the trainer gets the run directory `sdpo train` gives.
    pub(super) fn write_run_files(&self) -> Result<(), TrainError> {
        let out = &self.config.output_dir;
        sdpo_run::write_run_config(out, &self.config.to_map())?;
        let summary = sdpo_run::DataSummary {
            source: "sdpo train (after tokenization)".into(),
            splits: self
                .data_reports()
                .into_iter()
                .map(|(split, file, report)| split_summary(split, file, report))
                .collect(),
            unreadable: Vec::new(),
        };
        sdpo_run::write_data_summary(out, &summary)?;
        Ok(())
    }

    /// Refuses to save weights that are not all finite (an update can overflow even when every
    /// quantity of its step was finite).
    fn check_weights(&self) -> Result<(), TrainError> {
        let count = non_finite_weights(self.policy())?;
        if count > 0 {
            return Err(TrainError::NonFinite {
                step: self.global_step,
                quantity: format!("the updated weights ({count} values)"),
                value: f64::NAN,
            });
        }
        Ok(())
    }

    /// Writes the policy into `dir`: the full model in Hugging Face layout, or, for a LoRA run,
    /// only the adapter in PEFT's layout (`adapter_config.json` + `adapter_model.safetensors`,
    /// with `model_name_or_path` as its base); plus the tokenizer files.
    fn write_model(&self, dir: &Path) -> Result<(), TrainError> {
        self.check_weights()?;
        let policy = self.policy().valid();
        if policy.adapter().is_some() {
            let base = self.config.model_name_or_path.to_string_lossy();
            policy
                .save_adapter(dir, Some(&*base))
                .map_err(model_error(dir))?;
        } else {
            policy.save_pretrained(dir).map_err(model_error(dir))?;
            copy_generation_config(&self.config.model_name_or_path, dir)?;
        }
        copy_tokenizer_files(&self.data.tokenizer_dir, dir)
    }

    /// The end of training for the best checkpoint: with `load_best_model_at_end` the policy
    /// becomes the best checkpoint's weights (the final model is then the best one), and with
    /// `save_total_limit = 1` only the best checkpoint is kept, as transformers does.
    pub(super) fn finish_best(
        &mut self,
        observer: &mut dyn TrainObserver,
    ) -> Result<(), TrainError> {
        let Some(best) = self.best.state.best_model_checkpoint.clone() else {
            return Ok(());
        };
        if self.config.load_best_model_at_end {
            let precision = self.policy().config().matmul_precision;
            let base = self.policy().valid();
            let loaded = saved_policy(&best, &base, &training_device(&self.device))?;
            self.policy = Some(loaded.with_matmul_precision(precision));
            let name = best
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let metric = self.best.state.best_metric.unwrap_or(f64::NAN);
            observer.on_message(&format!(
                "load_best_model_at_end: the final model is {name} ({} = {metric})",
                self.best
                    .metric
                    .as_ref()
                    .map_or("metric", |m| m.key.as_str())
            ));
            self.best.loaded = Some((name, metric));
        }
        if self.config.save_total_limit == Some(1) {
            best::keep_only(&self.config.output_dir, &best)?;
        }
        Ok(())
    }

    /// Writes the final model (HF layout + tokenizer files) into `output_dir`; for a LoRA run
    /// the adapter, and with `merge_adapter_at_end` also the merged full model into
    /// `output_dir/merged`.
    pub fn save_final(&self) -> Result<(), TrainError> {
        let out = &self.config.output_dir;
        self.write_model(out)?;
        if self.config.merge_adapter_at_end && self.policy().adapter().is_some() {
            let dir = out.join(MERGED_DIR);
            let merged = if self.policy().is_quantized() {
                // QLoRA: the adapter (just written to `out`) goes onto the float base, not
                // onto its 4-bit rounding.
                crate::startup::load_float_base(&self.config, &self.device)?
                    .load_adapter(out)
                    .map_err(model_error(out))?
                    .merge_adapters()
            } else {
                self.policy().valid().merge_adapters()
            };
            merged.save_pretrained(&dir).map_err(model_error(&dir))?;
            copy_tokenizer_files(&self.data.tokenizer_dir, &dir)?;
            copy_generation_config(&self.config.model_name_or_path, &dir)?;
        }
        let metrics = out.join(MetricsFile::NAME);
        let records = if metrics.is_file() {
            sdpo_run::read_metrics_records(&metrics)?
        } else {
            Vec::new()
        };
        let facts = CardFacts {
            records,
            backend: format!("{:?}", self.device),
            best: self.best.loaded.clone(),
        };
        model_card::write(out, &self.config, &facts)
    }
}

/// Counts the non-finite values of every parameter of `model` (one read-back).
fn non_finite_weights(model: &CausalLm) -> Result<u64, TrainError> {
    struct Count(Option<Tensor<1, Int>>);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let bad = param.val().inner().is_finite().bool_not().int().sum();
            self.0 = Some(match self.0.take() {
                Some(total) => total + bad,
                None => bad,
            });
        }
    }
    let mut count = Count(None);
    model.visit(&mut count);
    match count.0 {
        None => Ok(0),
        Some(total) => total
            .try_into_vec_as::<i64>()
            .map(|v| v.first().copied().unwrap_or(0).max(0) as u64)
            .map_err(|e| TrainError::DeviceRead {
                tensor: "weights",
                reason: format!("{e:?}"),
            }),
    }
}

/// The summary of a tokenized split from `sdpo-data`'s report.
fn split_summary(
    split: &str,
    file: &Path,
    report: &sdpo_data::DataReport,
) -> sdpo_run::SplitSummary {
    sdpo_run::SplitSummary {
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
