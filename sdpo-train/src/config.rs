//! The training configuration, with Hugging Face TRL `DPOConfig` names wherever TRL has the
//! option. The complete reference with defaults is `docs/configuration.md`.
//!
//! One definition of each key: the loss keys are [`sdpo_core::LossConfig`]'s and the data keys
//! [`sdpo_data::DataConfig`]'s; [`TrainConfig`] holds both and adds the trainer's own. In a
//! configuration file all keys sit at the top level, as in TRL.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use sdpo_core::LossConfig;
use sdpo_data::DataConfig;
use sdpo_models::lora::{LoraConfig, TargetModules};
use sdpo_track::ReportTo;

use crate::error::TrainError;
pub use crate::optimizer::Optimizer;
pub use crate::schedule::LrSchedulerType;
use crate::schedule::ScheduleParams;
use crate::steps::{EvalStrategy, Steps};

/// The dtype a frozen reference model keeps its matrices in (`ref_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefDtype {
    /// float32, as loaded.
    Float32,
    /// bfloat16: half the memory, rounded weights.
    Bfloat16,
    /// float16: half the memory, rounded weights (range up to 65504).
    Float16,
}

impl RefDtype {
    /// The burn dtype.
    pub fn dtype(self) -> burn::tensor::FloatDType {
        use burn::tensor::FloatDType;
        match self {
            Self::Float32 => FloatDType::F32,
            Self::Bfloat16 => FloatDType::BF16,
            Self::Float16 => FloatDType::F16,
        }
    }

    /// The name in a configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float32 => "float32",
            Self::Bfloat16 => "bfloat16",
            Self::Float16 => "float16",
        }
    }
}

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
    /// Train through the memory-bounded engine: only each decoder layer's input is kept during
    /// the forward and the layers are recomputed one at a time in the backward, attention runs
    /// in query blocks and the output head only at completion positions, in chunks
    /// ([`crate::engine`]). The reference, evaluation and the reference cache use the same
    /// chunked forward. Same log-probs and gradients as without it (within float rounding).
    pub gradient_checkpointing: bool,
    /// Run each pair's prompt through the model once and both completions against it (one
    /// packed row per pair, [`crate::layout`]), and the output head only at completion
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
    /// Start from an existing PEFT adapter directory (its `adapter_config.json` defines the
    /// LoRA settings) on the base `model_name_or_path`.
    pub peft_adapter_path: Option<PathBuf>,
    /// With `use_peft`: also write the merged full model to `output_dir/merged` at the end
    /// (sdpo-rs extension; TRL leaves merging to `merge_and_unload`).
    pub merge_adapter_at_end: bool,

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
    pub eval_strategy: Option<EvalStrategy>,

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
            gradient_checkpointing: false,
            shared_prompt_forward: None,
            bf16: false,
            fp16: false,
            ref_dtype: None,
            memory_budget_mib: crate::engine::DEFAULT_MEMORY_BUDGET_BYTES >> 20,
            max_buffer_mib: crate::engine::DEFAULT_MAX_BUFFER_BYTES >> 20,
            use_peft: false,
            lora_r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            lora_target_modules: None,
            lora_modules_to_save: None,
            use_rslora: false,
            peft_adapter_path: None,
            merge_adapter_at_end: false,
            model_revision: "main".to_string(),
            lr_scheduler_kwargs: None,
            optim: Optimizer::AdamwTorchFused,
            data_seed: None,
            eval_strategy: None,
            loss: LossConfig::default(),
            data: DataConfig::default(),
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
        if self.eval_steps.is_some_and(Steps::is_zero) {
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
        self.validate_lora()
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

    /// How this run computes per-token log-probs (`gradient_checkpointing`, the memory
    /// budget, `shared_prompt_forward`).
    pub fn logps_path(&self) -> crate::engine::LogpsPath {
        crate::engine::LogpsPath::for_run(
            self.gradient_checkpointing,
            crate::engine::MemoryBudget {
                bytes: self.memory_budget_mib << 20,
                max_buffer_bytes: self.max_buffer_mib << 20,
            },
            self.uses_shared_prompt(),
        )
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
        ] {
            if changed {
                set.push(key);
            }
        }
        set
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

    /// The LoRA settings of new adapters (`use_peft` without `peft_adapter_path`), in PEFT's
    /// terms.
    pub fn lora_config(&self) -> LoraConfig {
        LoraConfig {
            target_modules: self.lora_target_modules.clone(),
            modules_to_save: self.lora_modules_to_save.clone(),
            use_rslora: self.use_rslora,
            lora_dropout: self.lora_dropout,
            ..LoraConfig::new(self.lora_r, self.lora_alpha)
        }
    }
}

/// The keys a part of the configuration knows: every field its `Deserialize` accepts, read from
/// the field list serde hands to `deserialize_struct` (optional fields that are skipped when
/// serialized, such as `truncation_mode`, are keys all the same).
pub(crate) fn keys_of<T: DeserializeOwned>() -> BTreeSet<String> {
    let mut fields = BTreeSet::new();
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that records the field names of the struct asked of it and then gives up.
struct FieldNames<'a>(&'a mut BTreeSet<String>);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only the field names are read"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend(fields.iter().map(|field| field.to_string()));
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Deserializes one part from its keys. serde's own message for a wrong type does not say which
/// key it was, so on an error each key is tried alone to name the culprit.
fn parse_part<T: DeserializeOwned>(
    map: Map<String, Value>,
    parse: impl Fn(Value) -> Result<T, serde_json::Error>,
) -> Result<T, String> {
    match parse(Value::Object(map.clone())) {
        Ok(value) => Ok(value),
        Err(err) => {
            for (key, value) in map {
                let single = Map::from_iter([(key.clone(), value)]);
                if let Err(e) = parse(Value::Object(single)) {
                    return Err(format!("key `{key}`: {e}"));
                }
            }
            Err(err.to_string())
        }
    }
}

/// The closest known key to a misspelt one, when it is close enough to be a likely typo.
fn closest_key<'a>(unknown: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, &cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    known
        .map(|k| (distance(unknown, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

impl TrainConfig {
    /// Every key a configuration file may hold.
    pub fn known_keys() -> BTreeSet<String> {
        let mut keys = keys_of::<LossConfig>();
        keys.extend(keys_of::<DataConfig>());
        if let Ok(Value::Object(own)) =
            TrainConfig::serialize(&TrainConfig::default(), serde_json::value::Serializer)
        {
            keys.extend(own.into_iter().map(|(k, _)| k));
        }
        keys
    }

    /// Builds a configuration from its top-level keys.
    fn from_map(map: Map<String, Value>) -> Result<Self, String> {
        let loss_keys = keys_of::<LossConfig>();
        let data_keys = keys_of::<DataConfig>();
        let known = Self::known_keys();
        let (mut loss, mut data, mut own) = (Map::new(), Map::new(), Map::new());
        for (key, value) in map {
            if loss_keys.contains(&key) {
                // `trl_semantics` picks both the loss and the data pipeline.
                if data_keys.contains(&key) {
                    data.insert(key.clone(), value.clone());
                }
                loss.insert(key, value);
            } else if data_keys.contains(&key) {
                data.insert(key, value);
            } else if known.contains(&key) {
                own.insert(key, value);
            } else {
                let hint = closest_key(&key, known.iter().map(String::as_str))
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "unknown key `{key}`{hint}; docs/configuration.md lists every key"
                ));
            }
        }
        // TOML has no null: 0 switches a length limit off.
        for key in ["max_length", "max_prompt_length"] {
            if data.get(key).and_then(Value::as_u64) == Some(0) {
                data.insert(key.into(), Value::Null);
            }
        }
        let mut config = parse_part(own, TrainConfig::deserialize)?;
        config.loss = parse_part(loss, serde_json::from_value)?;
        config.data = parse_part(data, serde_json::from_value)?;
        Ok(config)
    }

    /// All keys with their values, flat, as a configuration file holds them.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut map = match TrainConfig::serialize(self, serde_json::value::Serializer) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        for part in [
            serde_json::to_value(&self.loss),
            serde_json::to_value(&self.data),
        ] {
            if let Ok(Value::Object(part)) = part {
                map.extend(part);
            }
        }
        map
    }
}

impl<'de> Deserialize<'de> for TrainConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        TrainConfig::from_map(map).map_err(D::Error::custom)
    }
}

impl Serialize for TrainConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_documented_in_the_configuration_reference() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).expect("docs/configuration.md");
        let missing: Vec<String> = TrainConfig::known_keys()
            .into_iter()
            .filter(|key| !doc.contains(&format!("| `{key}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "keys without a row in {}: {missing:?}",
            path.display()
        );
    }

    #[test]
    fn trl_semantics_picks_the_loss_and_the_data_pipeline() {
        let config: TrainConfig = serde_json::from_str(r#"{"trl_semantics": "0.28"}"#).unwrap();
        assert_eq!(config.loss.trl_semantics, sdpo_core::TrlSemantics::V0_28);
        assert_eq!(config.data.trl_semantics, sdpo_data::TrlPipeline::V0_28);
        assert_eq!(config.data.max_prompt_length(), Some(512));
        let default = TrainConfig::default();
        assert_eq!(default.data.trl_semantics, sdpo_data::TrlPipeline::V1);
        let back: TrainConfig = serde_json::from_value(Value::Object(config.to_map())).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn every_key_sits_at_the_top_level_and_round_trips() {
        let mut config = TrainConfig::default();
        config.loss.beta = 0.25;
        config.data.max_length = Some(77);
        config.data.truncation_mode = Some(sdpo_data::TruncationMode::KeepEnd);
        config.learning_rate = 3e-6;
        let map = config.to_map();
        for key in [
            "beta",
            "sdpo_threshold",
            "max_length",
            "truncation_mode",
            "learning_rate",
        ] {
            assert!(map.contains_key(key), "{key} missing from {map:?}");
        }
        let back: TrainConfig = serde_json::from_value(Value::Object(map)).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn unknown_keys_get_a_suggestion_and_wrong_types_are_named() {
        let err = serde_json::from_str::<TrainConfig>(r#"{"sdpo_treshold": 0.5}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown key `sdpo_treshold`") && err.contains("`sdpo_threshold`"),
            "{err}"
        );
        for (json, key) in [
            (r#"{"beta": "high"}"#, "beta"),
            (r#"{"max_length": -3}"#, "max_length"),
            (
                r#"{"per_device_train_batch_size": 8.5}"#,
                "per_device_train_batch_size",
            ),
        ] {
            let err = serde_json::from_str::<TrainConfig>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("key `{key}`")), "{json}: {err}");
        }
        // TOML has no null: 0 switches a length limit off.
        let config: TrainConfig = serde_json::from_str(r#"{"max_length": 0}"#).unwrap();
        assert_eq!(config.data.max_length, None);
    }
}
