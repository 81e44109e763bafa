//! The training configuration, with Hugging Face TRL `DPOConfig` names wherever TRL has the
//! option. The complete reference with defaults is `docs/configuration.md`.
//!
//! One definition of each key: the loss keys are [`sdpo_core::LossConfig`]'s and the data keys
//! [`sdpo_data::DataConfig`]'s; [`TrainConfig`] holds both and adds the trainer's own. In a
//! configuration file all keys sit at the top level, as in TRL.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use sdpo_core::LossConfig;
use sdpo_data::DataConfig;
use sdpo_models::lora::{LoraConfig, TargetModules};
use sdpo_models::quant::{Bnb4bitConfig, QuantStorage, compute_dtype_from_name};
use sdpo_track::ReportTo;

pub use crate::optimizer::Optimizer;
pub use crate::schedule::LrSchedulerType;
use crate::steps::{IntervalStrategy, SaveStrategy, StepSettings, Steps};

mod dtype;
mod effects;
mod keys;
mod validate;

pub use dtype::{ModelDtype, RefDtype};
pub use effects::{KEY_EFFECTS, KeyEffects, OnResume, ReferenceEffect, key_effects};
pub use keys::closest_key;

/// Default `memory_budget_mib`: 512 MiB for one head chunk or attention block of the
/// memory-bounded engine.
pub const DEFAULT_MEMORY_BUDGET_MIB: u64 = 512;

/// Default `max_buffer_mib`: 128 MiB, the largest storage buffer every WebGPU adapter must
/// support (`maxStorageBufferBindingSize`'s guaranteed minimum; lavapipe's actual limit).
pub const DEFAULT_MAX_BUFFER_MIB: u64 = 128;

/// Everything `sdpo train` needs. Unknown keys are an error (a typo must not silently train
/// with a default); a key of the wrong type is named in the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Where checkpoints, metrics, the cache and the final model go.
    pub output_dir: PathBuf,
    /// The policy: a Hugging Face model directory (`config.json` + safetensors).
    pub model_name_or_path: PathBuf,
    /// The reference model directory; unset = a frozen copy of the initial policy. Any
    /// supported architecture and size with the same tokenizer.
    pub ref_model_name_or_path: Option<PathBuf>,
    /// SePO: the oracle model whose token rewards `log(pi_oracle / pi_oracle_ref)` select the
    /// tokens (required with `loss_type = "sepo"`).
    pub sepo_oracle_model_name_or_path: Option<PathBuf>,
    /// SePO: the oracle's own reference; unset = the run's reference (`ref_model_name_or_path`,
    /// else the initial policy).
    pub sepo_oracle_ref_model_name_or_path: Option<PathBuf>,
    /// TIS-DPO: the forward-DPO model `pi+` of the contrastive pair (required with
    /// `loss_type = "tisdpo"`).
    pub tisdpo_positive_model_name_or_path: Option<PathBuf>,
    /// TIS-DPO: the reverse-DPO model `pi-` of the contrastive pair (required with
    /// `loss_type = "tisdpo"`).
    pub tisdpo_negative_model_name_or_path: Option<PathBuf>,
    /// Critical tokens: the model tuned on chosen completions (required with
    /// `loss_type = "critical_token"`).
    pub ct_positive_model_name_or_path: Option<PathBuf>,
    /// Critical tokens: the model tuned on rejected completions (required with
    /// `loss_type = "critical_token"`).
    pub ct_negative_model_name_or_path: Option<PathBuf>,
    /// TGDPO: the DPO-trained model whose token rewards `log(pi_reward / pi_ref)` set each
    /// token's beta (required with `loss_type = "tgdpo"`).
    pub tgdpo_reward_model_name_or_path: Option<PathBuf>,
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

    /// Peak learning rate of AdamW.
    pub learning_rate: f64,
    /// The schedule.
    pub lr_scheduler_type: LrSchedulerType,
    /// Warm-up steps, or (below 1) a fraction of the total steps, as transformers 5; wins over
    /// `warmup_ratio` when > 0.
    pub warmup_steps: Steps,
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
    /// Seed of data shuffling and random initialisation.
    pub seed: u64,
    /// Log metrics every this many optimizer steps (below 1: a fraction of the run).
    pub logging_steps: Steps,
    /// Evaluate every this many steps (below 1: a fraction of the run); unset: at the end of
    /// every epoch and of training (with `eval_strategy = "steps"`: `logging_steps`).
    pub eval_steps: Option<Steps>,
    /// Save a checkpoint every this many steps (below 1: a fraction of the run; 0: only the
    /// final model).
    pub save_steps: Steps,
    /// Where the logged metrics go besides `metrics.jsonl` (transformers' `report_to`):
    /// `"none"`, `"all"`, `"tensorboard"`, `"mlflow"` or a list. The `sdpo` command starts
    /// them ([`sdpo_track`]); an unknown or unavailable integration is an error.
    pub report_to: ReportTo,
    /// The run's name in MLflow (transformers' `run_name`; unset: the server picks one).
    pub run_name: Option<String>,
    /// TensorBoard's directory (unset: `TENSORBOARD_LOGGING_DIR`, else
    /// `output_dir/runs/<date>_<host>`, as transformers).
    pub logging_dir: Option<PathBuf>,
    /// Keep at most this many `checkpoint-N` directories (oldest removed first).
    pub save_total_limit: Option<usize>,
    /// Compute the reference's per-token log-probs once, cache them, and train without
    /// loading the reference.
    pub precompute_ref_log_probs: bool,
    /// Batch pairs of similar length together (TRL's `TrainingArguments.group_by_length`):
    /// each epoch's shuffled order is cut into groups of 50 batches, each sorted by length and
    /// cut into batches whose order is shuffled again, so batches carry less padding.
    pub group_by_length: bool,
    /// Pairs per forward pass when precomputing the reference's log-probs (TRL's key); unset:
    /// `per_device_train_batch_size` for the train split and `per_device_eval_batch_size` for
    /// the eval split, as TRL does.
    pub precompute_ref_batch_size: Option<usize>,
    /// Precompute the reference's log-probs one decoder layer at a time, reading each layer's
    /// weights from the checkpoint's memory-mapped safetensors and releasing them before the
    /// next: the reference never needs to fit in memory (peak: one layer's weights plus the
    /// hidden states of a chunk of pairs, sized by `memory_budget_mib`). Needs
    /// `precompute_ref_log_probs` and a reference with weight files. The log-probs are those of
    /// the memory-bounded engine (as with `gradient_checkpointing`), bit for bit.
    pub ref_layer_streaming: bool,
    /// Train through the memory-bounded engine: only each decoder layer's input is kept during
    /// the forward and the layers are recomputed one at a time in the backward, attention runs
    /// in query blocks and the output head only at completion positions, in chunks
    /// ([`crate::logps::policy_step`]). The reference, evaluation and the reference cache use the same
    /// chunked forward. Same log-probs and gradients as without it (within float rounding).
    pub gradient_checkpointing: bool,
    /// Run each pair's prompt through the model once and both completions against it (one
    /// packed row per pair, [`crate::logps::RowLayout`]), and the output head only at completion
    /// positions, for the policy, the reference, evaluation and the reference cache; `false`:
    /// two rows per pair as TRL's concatenated forward. Same log-probs and gradients either
    /// way (within float rounding). Unset: on without `gradient_checkpointing`, off with it
    /// (where the packed rows' attention over both completions costs more than the prompt
    /// saved once; [`TrainConfig::uses_shared_prompt`]).
    pub shared_prompt_forward: Option<bool>,
    /// Mixed precision as TRL's `bf16`: matrix products in bfloat16, everything else (norms,
    /// softmax, log-probs, SDPO selection, the loss, master weights, gradients and AdamW's
    /// state) in float32, as PyTorch's autocast. Where the backend has no bfloat16 arithmetic
    /// (flex, wgpu) the run warns and trains in float32 (see `docs/backends.md`).
    pub bf16: bool,
    /// Mixed precision as TRL's `fp16`: matrix products in float16, with dynamic loss scaling
    /// (a step whose gradients overflow is skipped and the scale halved). Where the backend has
    /// no float16 arithmetic the run warns and trains in float32.
    pub fp16: bool,
    /// The dtype the frozen reference model keeps its matrices in (sdpo-rs key; TRL loads its
    /// reference with `model_init_kwargs`' dtype): `"bfloat16"` or `"float16"` halve its
    /// memory; unset = float32. Its products run in the run's precision (`bf16`/`fp16`).
    pub ref_dtype: Option<RefDtype>,
    /// With `gradient_checkpointing`: MiB for one attention query block or one output-head
    /// chunk, including what the backward keeps of it (sdpo-rs extension).
    pub memory_budget_mib: u64,
    /// With `gradient_checkpointing`: the largest single tensor of a block or chunk, in MiB (a
    /// GPU adapter's storage-buffer limit; 128 MiB is what every WebGPU adapter supports).
    pub max_buffer_mib: u64,

    /// Train LoRA adapters instead of the full model (TRL's `ModelConfig.use_peft`): the base
    /// weights are frozen, only the adapters (and `lora_modules_to_save`) are trained, the
    /// reference is the base with the adapters disabled, and checkpoints hold the adapter in
    /// PEFT's layout.
    pub use_peft: bool,
    /// LoRA rank.
    pub lora_r: usize,
    /// LoRA scale numerator: the update is multiplied by `lora_alpha / lora_r`.
    pub lora_alpha: f64,
    /// Dropout on the input of the LoRA branch (training only).
    pub lora_dropout: f64,
    /// The layers that get adapters: a list of module names, `"all-linear"`, or a regular
    /// expression over full names; unset = PEFT's default for the architecture.
    pub lora_target_modules: Option<TargetModules>,
    /// Layers trained in full next to the adapters (PEFT's `modules_to_save`).
    pub lora_modules_to_save: Option<Vec<String>>,
    /// rsLoRA: scale `lora_alpha / sqrt(lora_r)`.
    pub use_rslora: bool,
    /// The dtype the model is loaded in (TRL's `ModelConfig.dtype`): with `use_peft` the frozen
    /// base is held in it (half the memory in bfloat16/float16), the adapters in float32;
    /// without, the trained weights stay float32 and a lower dtype is reported.
    pub dtype: ModelDtype,
    /// DoRA (PEFT's weight-decomposed LoRA): each adapted layer also trains a magnitude per
    /// output row; the adapter is saved with PEFT's `lora_magnitude_vector` tensors.
    pub use_dora: bool,
    /// Start from an existing PEFT adapter directory (its `adapter_config.json` defines the
    /// LoRA settings) on the base `model_name_or_path`.
    pub peft_adapter_path: Option<PathBuf>,
    /// With `use_peft`: also write the merged full model to `output_dir/merged` at the end
    /// (sdpo-rs extension; TRL leaves merging to `merge_and_unload`). With `load_in_4bit` the
    /// adapter is merged into the float base loaded again from `model_name_or_path`.
    pub merge_adapter_at_end: bool,
    /// QLoRA: hold the base's linear layers in 4 bits as bitsandbytes does (transformers'
    /// `load_in_4bit`); needs `use_peft`. The adapter-disabled base, the reference, is the same
    /// 4-bit model.
    pub load_in_4bit: bool,
    /// The 4-bit data type: `"nf4"` (TRL's default) or `"fp4"`.
    pub bnb_4bit_quant_type: String,
    /// Quantize the block scales too (transformers' name; TRL's `use_bnb_nested_quant`).
    pub bnb_4bit_use_double_quant: bool,
    /// The dtype of the base's products: `float32` (unset), `bfloat16` or `float16`.
    pub bnb_4bit_compute_dtype: Option<String>,
    /// The dtype bitsandbytes views the packed codes as (`uint8` when unset); changes no
    /// number here.
    pub bnb_4bit_quant_storage: Option<String>,
    /// transformers' 8-bit (LLM.int8) loading: refused, see docs/configuration.md.
    pub load_in_8bit: bool,

    // ---- TRL drop-in keys (issue 25): Hub revisions and datasets, the optimizer's name, the
    // schedule's options, the data seed, the evaluation strategy. ----
    /// The revision (branch, tag or commit id) of a Hub `model_name_or_path` (TRL's
    /// `ModelConfig.model_revision`); an id may also carry one as `owner/name@revision`.
    pub model_revision: String,
    /// Options of `lr_scheduler_type` (`num_cycles`, `min_lr`, `min_lr_rate`, `lr_end`,
    /// `power`, `timescale`, `num_decay_steps`, ...), as transformers' `lr_scheduler_kwargs`.
    pub lr_scheduler_kwargs: Option<Map<String, Value>>,
    /// The optimizer, by transformers' name: `adamw_torch` and `adamw_torch_fused` (its
    /// default) are both this crate's AdamW.
    pub optim: Optimizer,
    /// Seed of the data shuffling; unset: `seed` (transformers' `data_seed`).
    pub data_seed: Option<u64>,
    /// When to evaluate: `"no"`, `"steps"` (every `eval_steps`, default `logging_steps`),
    /// `"epoch"`; unset: every `eval_steps` if set, else every epoch, whenever there is eval
    /// data.
    pub eval_strategy: Option<IntervalStrategy>,
    /// When to write training records (transformers' `logging_strategy`): `"steps"` (every
    /// `logging_steps`), `"epoch"` (at the end of every epoch) or `"no"`.
    pub logging_strategy: IntervalStrategy,
    /// Also write a training record after the first step (transformers' `logging_first_step`).
    pub logging_first_step: bool,
    /// No evaluation before this many steps (`eval_strategy = "steps"`) or epochs (`"epoch"`;
    /// transformers' `eval_delay`).
    pub eval_delay: f64,
    /// Evaluate once before the first step, as a check of the evaluation set-up
    /// (transformers' `eval_on_start`).
    pub eval_on_start: bool,
    /// When to write `checkpoint-N` (transformers' `save_strategy`): `"steps"` (every
    /// `save_steps`), `"epoch"`, `"best"` (after every evaluation that improves
    /// `metric_for_best_model`) or `"no"`.
    pub save_strategy: SaveStrategy,
    /// At the end of training, load the checkpoint with the best `metric_for_best_model` and
    /// make it the final model (transformers' `load_best_model_at_end`); `save_total_limit`
    /// never deletes that checkpoint.
    pub load_best_model_at_end: bool,
    /// The evaluation metric that ranks checkpoints, with or without its `eval_` prefix; unset:
    /// `loss` when `load_best_model_at_end` or `save_strategy = "best"` needs one.
    pub metric_for_best_model: Option<String>,
    /// Whether a larger `metric_for_best_model` is better; unset: false for a metric whose name
    /// ends in `loss`, else true (as transformers).
    pub greater_is_better: Option<bool>,
    /// TR-DPO: every `ref_model_sync_steps` optimizer steps the reference becomes
    /// `ref_model_mixup_alpha` × policy + (1 − `ref_model_mixup_alpha`) × reference (TRL's
    /// `SyncRefModelCallback`).
    pub sync_ref_model: bool,
    /// TR-DPO's α: the policy's share of the reference after a synchronisation.
    pub ref_model_mixup_alpha: f64,
    /// TR-DPO's τ: optimizer steps between two synchronisations of the reference.
    pub ref_model_sync_steps: usize,

    /// The loss: `loss_type`, `beta`, `sdpo_threshold`, ... (top-level keys in a file).
    #[serde(skip)]
    pub loss: LossConfig,
    /// Data options: `max_length`, `truncation_mode`, ... (top-level keys in a file).
    #[serde(skip)]
    pub data: DataConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            output_dir: PathBuf::from("runs/sdpo"),
            model_name_or_path: PathBuf::new(),
            ref_model_name_or_path: None,
            sepo_oracle_model_name_or_path: None,
            sepo_oracle_ref_model_name_or_path: None,
            tisdpo_positive_model_name_or_path: None,
            tisdpo_negative_model_name_or_path: None,
            ct_positive_model_name_or_path: None,
            ct_negative_model_name_or_path: None,
            tgdpo_reward_model_name_or_path: None,
            tokenizer_name_or_path: None,
            init_from_config: false,
            train_file: PathBuf::new(),
            eval_file: None,
            learning_rate: 1e-6,
            lr_scheduler_type: LrSchedulerType::Linear,
            warmup_steps: Steps::Count(0),
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
            seed: 42,
            logging_steps: Steps::Count(10),
            eval_steps: None,
            save_steps: Steps::Count(500),
            report_to: ReportTo::None,
            run_name: None,
            logging_dir: None,
            save_total_limit: None,
            precompute_ref_log_probs: false,
            group_by_length: false,
            precompute_ref_batch_size: None,
            ref_layer_streaming: false,
            gradient_checkpointing: false,
            shared_prompt_forward: None,
            bf16: false,
            fp16: false,
            ref_dtype: None,
            memory_budget_mib: DEFAULT_MEMORY_BUDGET_MIB,
            max_buffer_mib: DEFAULT_MAX_BUFFER_MIB,
            use_peft: false,
            lora_r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            lora_target_modules: None,
            lora_modules_to_save: None,
            use_rslora: false,
            use_dora: false,
            dtype: ModelDtype::Float32,
            peft_adapter_path: None,
            merge_adapter_at_end: false,
            load_in_4bit: false,
            bnb_4bit_quant_type: "nf4".to_string(),
            bnb_4bit_use_double_quant: false,
            bnb_4bit_compute_dtype: None,
            bnb_4bit_quant_storage: None,
            load_in_8bit: false,
            model_revision: "main".to_string(),
            lr_scheduler_kwargs: None,
            optim: Optimizer::AdamwTorchFused,
            data_seed: None,
            eval_strategy: None,
            logging_strategy: IntervalStrategy::Steps,
            logging_first_step: false,
            eval_delay: 0.0,
            eval_on_start: false,
            save_strategy: SaveStrategy::Steps,
            load_best_model_at_end: false,
            metric_for_best_model: None,
            greater_is_better: None,
            sync_ref_model: false,
            ref_model_mixup_alpha: 0.6,
            ref_model_sync_steps: 512,
            loss: LossConfig::default(),
            data: DataConfig::default(),
        }
    }
}

impl TrainConfig {
    /// The tokenizer directory.
    pub fn tokenizer_dir(&self) -> &std::path::Path {
        self.tokenizer_name_or_path
            .as_deref()
            .unwrap_or(&self.model_name_or_path)
    }

    /// Whether this run packs each pair into one shared-prompt row: `shared_prompt_forward`,
    /// or when unset, `!gradient_checkpointing`. Measured (SmolLM2-135M, 2 pairs, this
    /// project's 2-core CPU, docs/speed.md): without checkpointing the shared prompt is 1.3-2x
    /// faster at every prompt:completion ratio; with it at `max_length` 1024 (completions of 768
    /// tokens) two rows are faster (flex 121 s against 140 s per step, LibTorch bf16 44 s
    /// against 68 s).
    pub fn uses_shared_prompt(&self) -> bool {
        self.shared_prompt_forward
            .unwrap_or(!self.gradient_checkpointing)
    }

    /// The keys that decide when the run logs, evaluates and saves.
    pub fn step_settings(&self) -> StepSettings {
        StepSettings {
            logging_strategy: self.logging_strategy,
            logging_steps: self.logging_steps,
            logging_first_step: self.logging_first_step,
            eval_strategy: self.eval_strategy,
            eval_steps: self.eval_steps,
            eval_delay: self.eval_delay,
            save_strategy: self.save_strategy,
            save_steps: self.save_steps,
        }
    }

    /// The 4-bit base settings with `load_in_4bit`; `None` without. Errors name the key whose
    /// value is not a known dtype or type.
    pub fn bnb_4bit_config(&self) -> Result<Option<Bnb4bitConfig>, sdpo_models::ModelError> {
        if !self.load_in_4bit {
            return Ok(None);
        }
        Ok(Some(Bnb4bitConfig {
            quant_type: self.bnb_4bit_quant_type.parse()?,
            double_quant: self.bnb_4bit_use_double_quant,
            compute_dtype: match &self.bnb_4bit_compute_dtype {
                Some(name) => compute_dtype_from_name(name)?,
                None => sdpo_models::MatmulPrecision::F32,
            },
            quant_storage: match &self.bnb_4bit_quant_storage {
                Some(name) => name.parse()?,
                None => QuantStorage::Uint8,
            },
        }))
    }

    /// The LoRA settings of new adapters (`use_peft` without `peft_adapter_path`), in PEFT's
    /// terms.
    pub fn lora_config(&self) -> LoraConfig {
        LoraConfig {
            target_modules: self.lora_target_modules.clone(),
            modules_to_save: self.lora_modules_to_save.clone(),
            use_rslora: self.use_rslora,
            use_dora: self.use_dora,
            lora_dropout: self.lora_dropout,
            ..LoraConfig::new(self.lora_r, self.lora_alpha)
        }
    }
}
