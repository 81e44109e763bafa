//! Checking a configuration before a run starts: every value in range, and the keys that only
//! make sense together (LoRA, precision, the reference, saving and evaluation).

use sdpo_models::lora::TargetModules;

use super::TrainConfig;
use crate::error::TrainError;
use crate::schedule::ScheduleParams;
use crate::steps::{IntervalStrategy, SaveStrategy, Steps};

fn show(steps: Steps) -> String {
    match steps {
        Steps::Count(n) => n.to_string(),
        Steps::Ratio(r) => r.to_string(),
    }
}

fn bad(key: &str, reason: impl Into<String>) -> TrainError {
    TrainError::Config {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl TrainConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.model_name_or_path.as_os_str().is_empty() {
            return Err(bad("model_name_or_path", "is required"));
        }
        if self.train_file.as_os_str().is_empty()
            && self.data.dataset_name.is_none()
            && self.data.datasets.is_none()
        {
            return Err(bad(
                "train_file",
                "is required (or dataset_name, or a datasets mixture)",
            ));
        }
        ScheduleParams::from_kwargs(
            self.lr_scheduler_type,
            self.learning_rate,
            self.lr_scheduler_kwargs.as_ref(),
        )
        .map_err(|reason| bad("lr_scheduler_kwargs", reason))?;
        if self.model_revision.trim().is_empty() {
            return Err(bad("model_revision", "must not be empty"));
        }
        if self.output_dir.as_os_str().is_empty() {
            return Err(bad("output_dir", "must not be empty"));
        }
        self.loss.validate().map_err(TrainError::Loss)?;
        self.validate_scoring_models()?;
        self.data.validate()?;
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(key, format!("must be a finite number > 0, got {v}")))
            }
        };
        positive("learning_rate", self.learning_rate)?;
        positive("adam_epsilon", self.adam_epsilon)?;
        for (key, v) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(bad(key, format!("must lie in [0, 1), got {v}")));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(bad("weight_decay", "must be a finite number >= 0"));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return Err(bad(
                "max_grad_norm",
                "must be a finite number >= 0 (0 disables clipping)",
            ));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return Err(bad(
                "warmup_ratio",
                format!("must lie in [0, 1], got {}", self.warmup_ratio),
            ));
        }
        for (key, v) in [
            (
                "per_device_train_batch_size",
                self.per_device_train_batch_size,
            ),
            (
                "per_device_eval_batch_size",
                self.per_device_eval_batch_size,
            ),
            (
                "gradient_accumulation_steps",
                self.gradient_accumulation_steps,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        for (key, v) in [
            ("memory_budget_mib", self.memory_budget_mib),
            ("max_buffer_mib", self.max_buffer_mib),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if self.ref_layer_streaming && !self.precompute_ref_log_probs {
            return Err(bad(
                "ref_layer_streaming",
                "streams the reference while precomputing its log-probs: it needs \
                 precompute_ref_log_probs = true",
            ));
        }
        if self.precompute_ref_batch_size == Some(0) {
            return Err(bad(
                "precompute_ref_batch_size",
                "must be at least 1 (or unset)",
            ));
        }
        if self.logging_steps.is_zero() {
            return Err(bad(
                "logging_steps",
                "must be at least 1 (or a fraction of the run)",
            ));
        }
        if self.max_steps <= 0
            && !(self.num_train_epochs.is_finite() && self.num_train_epochs > 0.0)
        {
            return Err(bad(
                "num_train_epochs",
                "must be > 0 when max_steps is not set",
            ));
        }
        if self.bf16 && self.fp16 {
            return Err(bad("fp16", "and bf16 are both true; choose one"));
        }
        if self.ref_dtype.is_some() && self.use_peft {
            return Err(bad(
                "ref_dtype",
                "has no effect with use_peft = true: the reference is the policy's own frozen \
                 base (adapters disabled), not a separate copy",
            ));
        }
        if self.precompute_ref_log_probs && self.loss.reference_free {
            return Err(bad(
                "precompute_ref_log_probs",
                "has nothing to precompute with reference_free = true",
            ));
        }
        if !(self.eval_delay.is_finite() && self.eval_delay >= 0.0) {
            return Err(bad(
                "eval_delay",
                format!("must be a finite number >= 0, got {}", self.eval_delay),
            ));
        }
        self.validate_best_model()?;
        self.validate_sync_ref_model()?;
        self.validate_lora()?;
        self.validate_quantization()
    }

    /// `save_strategy = "best"` needs a metric, and `load_best_model_at_end` needs a checkpoint
    /// at every evaluation: the save and evaluation strategies must match and, by steps,
    /// `save_steps` must be a multiple of `eval_steps` (transformers' checks).
    fn validate_best_model(&self) -> Result<(), TrainError> {
        if self.save_strategy == SaveStrategy::Best
            && self.metric_for_best_model.is_none()
            && !self.load_best_model_at_end
        {
            return Err(bad(
                "metric_for_best_model",
                "must be set with save_strategy = \"best\" (load_best_model_at_end = true \
                 defaults it to `loss`)",
            ));
        }
        if self
            .metric_for_best_model
            .as_deref()
            .is_some_and(str::is_empty)
        {
            return Err(bad("metric_for_best_model", "must not be empty"));
        }
        if !self.load_best_model_at_end || self.save_strategy == SaveStrategy::Best {
            return Ok(());
        }
        // The evaluation strategy in effect (unset: every `eval_steps` if set, else every epoch).
        let eval = match (self.eval_strategy, self.eval_steps) {
            (Some(strategy), _) => strategy,
            (None, Some(_)) => IntervalStrategy::Steps,
            (None, None) => IntervalStrategy::Epoch,
        };
        let save = self.save_strategy;
        let matching = matches!(
            (eval, save),
            (IntervalStrategy::No, SaveStrategy::No)
                | (IntervalStrategy::Steps, SaveStrategy::Steps)
                | (IntervalStrategy::Epoch, SaveStrategy::Epoch)
        );
        if !matching {
            return Err(bad(
                "load_best_model_at_end",
                format!(
                    "needs a checkpoint at every evaluation: the save and evaluation strategies \
                     must match (or save_strategy = \"best\"), but evaluation is {eval:?} and \
                     saving {save:?}"
                ),
            ));
        }
        if eval == IntervalStrategy::Steps {
            let eval_steps = self
                .eval_steps
                .filter(|s| !s.is_zero())
                .unwrap_or(self.logging_steps);
            let value = |steps: Steps| match steps {
                Steps::Count(n) => n as f64,
                Steps::Ratio(r) => r,
            };
            let (save, eval) = (value(self.save_steps), value(eval_steps));
            // transformers' order: a float remainder of 0 passes; otherwise ratios must both be
            // ratios and divide exactly in millionths.
            let multiple = (save % eval == 0.0)
                || (save < 1.0 && eval < 1.0 && {
                    let (s, e) = ((save * 1e6).round() as u64, (eval * 1e6).round() as u64);
                    e > 0 && s % e == 0
                });
            if !multiple {
                return Err(bad(
                    "save_steps",
                    format!(
                        "must be a multiple of eval_steps with load_best_model_at_end (a ratio \
                         and a whole number of steps cannot be checked), got save_steps {} and \
                         eval_steps {}",
                        show(self.save_steps),
                        show(eval_steps)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// TR-DPO moves a reference model: it needs one of its own.
    fn validate_sync_ref_model(&self) -> Result<(), TrainError> {
        if !self.sync_ref_model {
            return Ok(());
        }
        if self.precompute_ref_log_probs {
            return Err(bad(
                "sync_ref_model",
                "cannot move a precomputed reference: set precompute_ref_log_probs = false \
                 (TRL refuses the same combination)",
            ));
        }
        if self.loss.reference_free {
            return Err(bad(
                "sync_ref_model",
                "has no reference to move with reference_free = true",
            ));
        }
        if self.use_peft && self.ref_model_name_or_path.is_none() {
            return Err(bad(
                "sync_ref_model",
                "with use_peft the reference is the policy's own base with the adapters \
                 disabled, which cannot move without moving the policy; set \
                 ref_model_name_or_path to a copy of the base model (it then follows the \
                 merged policy). TRL refuses sync_ref_model with PEFT altogether",
            ));
        }
        if !(self.ref_model_mixup_alpha.is_finite()
            && (0.0..=1.0).contains(&self.ref_model_mixup_alpha))
        {
            return Err(bad(
                "ref_model_mixup_alpha",
                format!("must lie in [0, 1], got {}", self.ref_model_mixup_alpha),
            ));
        }
        if self.ref_model_sync_steps == 0 {
            return Err(bad("ref_model_sync_steps", "must be at least 1"));
        }
        Ok(())
    }

    /// The LoRA keys set to something other than their default, by name.
    fn lora_keys_set(&self) -> Vec<&'static str> {
        let d = TrainConfig::default();
        let mut set = Vec::new();
        for (key, changed) in [
            ("lora_r", self.lora_r != d.lora_r),
            ("lora_alpha", self.lora_alpha != d.lora_alpha),
            ("lora_dropout", self.lora_dropout != d.lora_dropout),
            ("lora_target_modules", self.lora_target_modules.is_some()),
            ("lora_modules_to_save", self.lora_modules_to_save.is_some()),
            ("use_rslora", self.use_rslora),
            ("use_dora", self.use_dora),
        ] {
            if changed {
                set.push(key);
            }
        }
        set
    }

    /// The 4-bit base keys: `load_in_4bit` needs adapters to train (transformers refuses to
    /// fine-tune a purely quantized model), the `bnb_4bit_*` keys need `load_in_4bit`, and
    /// their values must parse; `load_in_8bit` is refused.
    fn validate_quantization(&self) -> Result<(), TrainError> {
        if self.load_in_8bit {
            return Err(bad(
                "load_in_8bit",
                "8-bit (LLM.int8) bases are not implemented: their mixed int8/float16 \
                 decomposition of outlier features is not reproduced here; use load_in_4bit \
                 = true (QLoRA)",
            ));
        }
        let d = TrainConfig::default();
        if !self.load_in_4bit {
            for (key, set) in [
                (
                    "bnb_4bit_quant_type",
                    self.bnb_4bit_quant_type != d.bnb_4bit_quant_type,
                ),
                ("bnb_4bit_use_double_quant", self.bnb_4bit_use_double_quant),
                (
                    "bnb_4bit_compute_dtype",
                    self.bnb_4bit_compute_dtype.is_some(),
                ),
                (
                    "bnb_4bit_quant_storage",
                    self.bnb_4bit_quant_storage.is_some(),
                ),
            ] {
                if set {
                    return Err(bad(
                        key,
                        "is a 4-bit base setting and needs load_in_4bit = true",
                    ));
                }
            }
            return Ok(());
        }
        if !self.use_peft {
            return Err(bad(
                "load_in_4bit",
                "a 4-bit base cannot be trained itself (transformers refuses to fine-tune a \
                 purely quantized model): set use_peft = true to train LoRA adapters on it",
            ));
        }
        if self.ref_layer_streaming && self.ref_model_name_or_path.is_none() {
            return Err(bad(
                "ref_layer_streaming",
                "streams the reference's float weight files, but with load_in_4bit the \
                 reference is the 4-bit base: precompute without streaming (the 4-bit base is \
                 small), or name a ref_model_name_or_path",
            ));
        }
        if let Err(e) = self.bnb_4bit_config() {
            let key = match &e {
                sdpo_models::ModelError::InvalidConfig { key, .. } => key.clone(),
                _ => "load_in_4bit".to_string(),
            };
            return Err(bad(&key, e.to_string()));
        }
        Ok(())
    }

    /// TRL silently ignores the LoRA keys without `use_peft`; a run that was meant to train
    /// adapters would then train the full model, so here they are errors.
    fn validate_lora(&self) -> Result<(), TrainError> {
        if !self.use_peft {
            let mut set = self.lora_keys_set();
            if self.peft_adapter_path.is_some() {
                set.push("peft_adapter_path");
            }
            if self.merge_adapter_at_end {
                set.push("merge_adapter_at_end");
            }
            if let Some(key) = set.first() {
                return Err(bad(
                    key,
                    "is a LoRA setting and needs use_peft = true (without it the full model \
                     is trained)",
                ));
            }
            return Ok(());
        }
        if let Some(path) = &self.peft_adapter_path {
            if let Some(key) = self.lora_keys_set().first() {
                return Err(bad(
                    key,
                    format!(
                        "cannot be set with peft_adapter_path: the adapter's \
                         `{}/adapter_config.json` defines the LoRA settings",
                        path.display()
                    ),
                ));
            }
            return Ok(());
        }
        if self.lora_r == 0 {
            return Err(bad("lora_r", "must be at least 1"));
        }
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            return Err(bad(
                "lora_alpha",
                format!("must be a finite number > 0, got {}", self.lora_alpha),
            ));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(bad(
                "lora_dropout",
                format!("must lie in [0, 1), got {}", self.lora_dropout),
            ));
        }
        match &self.lora_target_modules {
            Some(TargetModules::Names(names)) if names.is_empty() => {
                return Err(bad("lora_target_modules", "must not be an empty list"));
            }
            Some(TargetModules::Regex(regex)) if regex.is_empty() => {
                return Err(bad("lora_target_modules", "must not be empty"));
            }
            _ => {}
        }
        if let Some(names) = &self.lora_modules_to_save
            && names.iter().any(String::is_empty)
        {
            return Err(bad("lora_modules_to_save", "holds an empty module name"));
        }
        Ok(())
    }
}
