//! The training configuration, with Hugging Face TRL `DPOConfig` names wherever TRL has the
//! option. The complete reference with defaults is `docs/configuration.md`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use sdpo_core::{FDivergenceType, LossConfig, LossTypes};
use sdpo_data::{DataConfig, TruncationMode};

use crate::error::TrainError;

/// The learning-rate schedule (`lr_scheduler_type`), as in transformers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedulerType {
    /// Linear warm-up, then linear decay to 0 at the last step.
    #[default]
    Linear,
    /// Linear warm-up, then half a cosine down to 0 at the last step.
    Cosine,
    /// The same learning rate at every step (warm-up ignored, as in transformers).
    Constant,
    /// Linear warm-up, then constant.
    ConstantWithWarmup,
}

/// Everything `sdpo train` needs. Unknown keys are an error (a typo must not silently train
/// with a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Where checkpoints, metrics, the cache and the final model go.
    pub output_dir: PathBuf,
    /// The policy: a Hugging Face model directory (`config.json` + safetensors).
    pub model_name_or_path: PathBuf,
    /// The reference model directory; unset = a frozen copy of the initial policy. Any
    /// supported architecture and size with the same tokenizer.
    pub ref_model_name_or_path: Option<PathBuf>,
    /// The tokenizer directory (`tokenizer.json`, `tokenizer_config.json`); default: the
    /// policy's directory.
    pub tokenizer_name_or_path: Option<PathBuf>,
    /// Build the policy from `model_name_or_path/config.json` with random weights (seeded by
    /// `seed`) instead of loading weights (sdpo-rs extension, for small experiments).
    pub init_from_config: bool,
    /// The training preference file (JSON or JSONL; standard, conversational or implicit
    /// prompt format).
    pub train_file: PathBuf,
    /// An evaluation preference file (same formats); metrics get the `eval_` prefix.
    pub eval_file: Option<PathBuf>,

    /// The loss type, or a list combined with `loss_weights`.
    pub loss_type: LossTypes,
    /// One weight per loss type.
    pub loss_weights: Option<Vec<f64>>,
    /// Inverse temperature of the implicit reward.
    pub beta: f64,
    /// Label noise for the sigmoid / robust / EXO losses.
    pub label_smoothing: f64,
    /// SDPO: per-sequence quantile of token scores below which tokens are dropped.
    pub sdpo_threshold: f64,
    /// Ignore the reference model in the loss.
    pub reference_free: bool,
    /// The f-divergence of the sigmoid-family logits.
    pub f_divergence_type: FDivergenceType,
    /// Alpha of `alpha_divergence`.
    pub f_alpha_divergence_coef: f64,
    /// Temperature of `discopop`.
    pub discopop_tau: f64,

    /// Peak learning rate of AdamW.
    pub learning_rate: f64,
    /// The schedule.
    pub lr_scheduler_type: LrSchedulerType,
    /// Warm-up steps (wins over `warmup_ratio` when > 0).
    pub warmup_steps: usize,
    /// Warm-up as a fraction of the total optimizer steps.
    pub warmup_ratio: f64,
    /// Decoupled weight decay of AdamW.
    pub weight_decay: f64,
    /// AdamW beta1.
    pub adam_beta1: f64,
    /// AdamW beta2.
    pub adam_beta2: f64,
    /// AdamW epsilon.
    pub adam_epsilon: f64,
    /// Clip the global gradient norm to this value (0 disables clipping).
    pub max_grad_norm: f64,
    /// Pairs per micro-batch for training.
    pub per_device_train_batch_size: usize,
    /// Pairs per batch for evaluation.
    pub per_device_eval_batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Epochs (fractional values stop part-way through the last epoch).
    pub num_train_epochs: f64,
    /// Optimizer steps; > 0 overrides `num_train_epochs`.
    pub max_steps: i64,
    /// Maximum prompt + completion tokens (0: no limit).
    pub max_length: Option<usize>,
    /// Maximum prompt tokens (0: no limit).
    pub max_prompt_length: Option<usize>,
    /// Which end of an over-long prompt to keep.
    pub truncation_mode: TruncationMode,
    /// Pad batches to a multiple of this length.
    pub pad_to_multiple_of: Option<usize>,
    /// Skip malformed records (counted and reported) instead of stopping at the first.
    pub skip_invalid_records: bool,
    /// Seed of data shuffling and random initialisation.
    pub seed: u64,
    /// Log metrics every this many optimizer steps.
    pub logging_steps: usize,
    /// Evaluate every this many steps (unset: at the end of every epoch and of training).
    pub eval_steps: Option<usize>,
    /// Save a checkpoint every this many steps (0: only the final model).
    pub save_steps: usize,
    /// Keep at most this many `checkpoint-N` directories (oldest removed first).
    pub save_total_limit: Option<usize>,
    /// Compute the reference's per-token log-probs once, cache them, and train without
    /// loading the reference.
    pub precompute_ref_log_probs: bool,
    /// Recompute activations in the backward pass to save memory.
    pub gradient_checkpointing: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let loss = LossConfig::default();
        Self {
            output_dir: PathBuf::from("runs/sdpo"),
            model_name_or_path: PathBuf::new(),
            ref_model_name_or_path: None,
            tokenizer_name_or_path: None,
            init_from_config: false,
            train_file: PathBuf::new(),
            eval_file: None,
            loss_type: loss.loss_type,
            loss_weights: loss.loss_weights,
            beta: loss.beta,
            label_smoothing: loss.label_smoothing,
            sdpo_threshold: loss.sdpo_threshold,
            reference_free: loss.reference_free,
            f_divergence_type: loss.f_divergence_type,
            f_alpha_divergence_coef: loss.f_alpha_divergence_coef,
            discopop_tau: loss.discopop_tau,
            learning_rate: 1e-6,
            lr_scheduler_type: LrSchedulerType::Linear,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            gradient_accumulation_steps: 1,
            num_train_epochs: 3.0,
            max_steps: -1,
            max_length: Some(1024),
            max_prompt_length: Some(512),
            truncation_mode: TruncationMode::KeepEnd,
            pad_to_multiple_of: None,
            skip_invalid_records: false,
            seed: 42,
            logging_steps: 10,
            eval_steps: None,
            save_steps: 500,
            save_total_limit: None,
            precompute_ref_log_probs: false,
            gradient_checkpointing: false,
        }
    }
}

fn bad(key: &str, reason: impl Into<String>) -> TrainError {
    TrainError::Config {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl TrainConfig {
    /// The loss part, for `sdpo-core`.
    pub fn loss_config(&self) -> LossConfig {
        LossConfig {
            loss_type: self.loss_type.clone(),
            loss_weights: self.loss_weights.clone(),
            beta: self.beta,
            label_smoothing: self.label_smoothing,
            reference_free: self.reference_free,
            f_divergence_type: self.f_divergence_type,
            f_alpha_divergence_coef: self.f_alpha_divergence_coef,
            discopop_tau: self.discopop_tau,
            sdpo_threshold: self.sdpo_threshold,
        }
    }

    /// The data part, for `sdpo-data`.
    pub fn data_config(&self) -> DataConfig {
        // TOML has no null: 0 switches a limit off.
        DataConfig {
            max_length: self.max_length.filter(|&n| n > 0),
            max_prompt_length: self.max_prompt_length.filter(|&n| n > 0),
            truncation_mode: self.truncation_mode,
            pad_to_multiple_of: self.pad_to_multiple_of,
            skip_invalid_records: self.skip_invalid_records,
            ..DataConfig::default()
        }
    }

    /// The tokenizer directory.
    pub fn tokenizer_dir(&self) -> &std::path::Path {
        self.tokenizer_name_or_path
            .as_deref()
            .unwrap_or(&self.model_name_or_path)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.model_name_or_path.as_os_str().is_empty() {
            return Err(bad("model_name_or_path", "is required"));
        }
        if self.train_file.as_os_str().is_empty() {
            return Err(bad("train_file", "is required"));
        }
        if self.output_dir.as_os_str().is_empty() {
            return Err(bad("output_dir", "must not be empty"));
        }
        self.loss_config().validate()?;
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
            ("logging_steps", self.logging_steps),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if self.eval_steps == Some(0) {
            return Err(bad("eval_steps", "must be at least 1 (or unset)"));
        }
        if self.save_total_limit == Some(0) {
            return Err(bad("save_total_limit", "must be at least 1 (or unset)"));
        }
        if self.max_steps <= 0
            && !(self.num_train_epochs.is_finite() && self.num_train_epochs > 0.0)
        {
            return Err(bad(
                "num_train_epochs",
                "must be > 0 when max_steps is not set",
            ));
        }
        if self.precompute_ref_log_probs && self.reference_free {
            return Err(bad(
                "precompute_ref_log_probs",
                "has nothing to precompute with reference_free = true",
            ));
        }
        Ok(())
    }
}
