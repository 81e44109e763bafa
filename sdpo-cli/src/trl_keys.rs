//! Every key `trl dpo` accepts (TRL 1.16's `ScriptArguments`, `DPOConfig` with transformers
//! 5.24's `TrainingArguments`, `ModelConfig`, `DatasetMixtureConfig`) and what `sdpo` does with
//! it: honoured, mapped onto sdpo-rs keys, accepted with a warning because it changes nothing
//! here, or refused with the reason (unless it holds TRL's default, so a configuration dumped
//! from TRL loads). `sdpo-cli/tests/trl_keys.rs` checks this table against the keys, defaults
//! and types of TRL itself (`fixtures/trl/keys.json`), and docs/configuration.md shows it.

/// How a value is read from a flag or a YAML scalar (as `HfArgumentParser` types them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true`/`false` (also `yes`, `no`, `1`, `0`, ...); a bare `--flag` is `true`.
    Bool,
    /// An integer.
    Int,
    /// A float (`5e-7` too, which YAML 1.1 reads as a string).
    Float,
    /// An integer, or a float in `[0, 1)` for a fraction of the run.
    Steps,
    /// A string (a number-looking value stays text, e.g. a revision).
    Str,
    /// A list of strings (`--lora_target_modules q_proj v_proj`), or one string.
    StrList,
    /// A list of floats.
    FloatList,
    /// A mapping, or a JSON object in a string (`--lr_scheduler_kwargs '{"min_lr": 1e-7}'`).
    Dict,
    /// Anything (kept as written).
    Any,
}

/// What `sdpo` does with a TRL key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The same key, with the same meaning, in `TrainConfig`.
    Honoured,
    /// Turned into sdpo-rs keys (the text says how).
    Mapped(&'static str),
    /// Changes nothing here: accepted, with this one-line warning when it is not TRL's default.
    Ignored(&'static str),
    /// Refused with this reason unless it holds TRL's default.
    Refused(&'static str),
    /// Options of a tracking integration sdpo-rs does not have (trackio, ...): accepted with a
    /// warning (`report_to` itself refuses such an integration by name).
    Tracking,
}

/// Which TRL dataclass a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `trl.ScriptArguments`.
    Script,
    /// `trl.DPOConfig`, including transformers' `TrainingArguments`.
    Dpo,
    /// `trl.ModelConfig`.
    Model,
    /// `trl.DatasetMixtureConfig`.
    Mixture,
    /// A TRL 0.x key kept for old configurations.
    Legacy,
}

/// One TRL key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrlKey {
    /// The key.
    pub name: &'static str,
    /// Where TRL defines it.
    pub source: Source,
    /// How its value is read.
    pub kind: Kind,
    /// TRL's default, as JSON.
    pub default: &'static str,
    /// What sdpo does with it.
    pub status: Status,
}

const fn k(
    name: &'static str,
    source: Source,
    kind: Kind,
    default: &'static str,
    status: Status,
) -> TrlKey {
    TrlKey {
        name,
        source,
        kind,
        default,
        status,
    }
}

use Kind::{
    Bool as B, Dict as D, Float as F, FloatList as FL, Int as I, Steps as ST, Str as S,
    StrList as SL,
};
use Source::{Dpo, Legacy, Mixture, Model, Script};
use Status::{Honoured as H, Ignored, Mapped, Refused, Tracking};

const ONE_PROCESS: &str =
    "sdpo-rs trains in one process on one device; distributed training is not implemented";
const NO_UPLOAD: &str =
    "sdpo-rs never uploads: push the output directory with `hf upload` (huggingface_hub's CLI)";
const DATALOADER: &str = "data is tokenized up front on every core and batches are collated in memory: there is no DataLoader";
const EVAL_AVERAGES: &str =
    "evaluation averages the DPO metrics batch by batch; there are no predictions to gather";
const BNB: &str = "quantized (bitsandbytes) bases are not implemented here (QLoRA is issue 28)";

/// Every key of TRL 1.16's `trl dpo`, in TRL's order, plus TRL 0.x's `rpo_alpha`.
pub const TRL_KEYS: &[TrlKey] = &[
    // ScriptArguments
    k("dataset_name", Script, S, "null", H),
    k("dataset_config", Script, S, "null", H),
    k("dataset_train_split", Script, S, "\"train\"", H),
    k("dataset_test_split", Script, S, "\"test\"", H),
    k(
        "dataset_streaming",
        Script,
        B,
        "false",
        Ignored("the dataset is read from its local snapshot; streaming changes nothing"),
    ),
    k(
        "ignore_bias_buffers",
        Script,
        B,
        "false",
        Ignored("a DistributedDataParallel workaround; sdpo-rs has no DDP"),
    ),
    // DPOConfig / TrainingArguments
    k("output_dir", Dpo, S, "null", H),
    k("per_device_train_batch_size", Dpo, I, "8", H),
    k("num_train_epochs", Dpo, F, "3.0", H),
    k("max_steps", Dpo, I, "-1", H),
    k("learning_rate", Dpo, F, "1e-06", H),
    k("lr_scheduler_type", Dpo, S, "\"linear\"", H),
    k("lr_scheduler_kwargs", Dpo, D, "null", H),
    k("warmup_steps", Dpo, ST, "0", H),
    k("optim", Dpo, S, "\"adamw_torch_fused\"", H),
    k(
        "optim_args",
        Dpo,
        S,
        "null",
        Refused("AdamW's options are adam_beta1, adam_beta2, adam_epsilon and weight_decay"),
    ),
    k("weight_decay", Dpo, F, "0.0", H),
    k("adam_beta1", Dpo, F, "0.9", H),
    k("adam_beta2", Dpo, F, "0.999", H),
    k("adam_epsilon", Dpo, F, "1e-08", H),
    k(
        "optim_target_modules",
        Dpo,
        Kind::Any,
        "null",
        Refused("only GaLore/APOLLO optimizers use it, and sdpo-rs has AdamW only"),
    ),
    k("gradient_accumulation_steps", Dpo, I, "1", H),
    k(
        "average_tokens_across_devices",
        Dpo,
        B,
        "true",
        Ignored("one device: there is nothing to average across"),
    ),
    k("max_grad_norm", Dpo, F, "1.0", H),
    k(
        "label_smoothing_factor",
        Dpo,
        F,
        "0.0",
        Refused("Trainer's label smoothing of a classification loss; DPO's is label_smoothing"),
    ),
    k(
        "bf16",
        Dpo,
        B,
        "null",
        Mapped("null (TRL: true unless fp16) keeps sdpo-rs' default, false; true/false as given"),
    ),
    k("fp16", Dpo, B, "false", H),
    k(
        "bf16_full_eval",
        Dpo,
        B,
        "false",
        Refused(
            "evaluation runs in the training precision (bf16/fp16 autocast); whole-model half-precision evaluation is not implemented",
        ),
    ),
    k(
        "fp16_full_eval",
        Dpo,
        B,
        "false",
        Refused(
            "evaluation runs in the training precision (bf16/fp16 autocast); whole-model half-precision evaluation is not implemented",
        ),
    ),
    k(
        "tf32",
        Dpo,
        B,
        "null",
        Ignored("TensorFloat-32 is a CUDA matmul mode; LibTorch keeps PyTorch's default"),
    ),
    k(
        "activation_checkpointing",
        Dpo,
        B,
        "null",
        Mapped("transformers 5's name of gradient_checkpointing: sets it"),
    ),
    k(
        "activation_checkpointing_kwargs",
        Dpo,
        D,
        "null",
        Ignored(
            "the memory-bounded engine recomputes layer by layer; PyTorch's checkpoint options do not apply",
        ),
    ),
    k("gradient_checkpointing", Dpo, B, "true", H),
    k(
        "gradient_checkpointing_kwargs",
        Dpo,
        D,
        "null",
        Ignored(
            "the memory-bounded engine recomputes layer by layer; PyTorch's checkpoint options do not apply",
        ),
    ),
    k(
        "torch_compile",
        Dpo,
        B,
        "false",
        Ignored("there is no torch.compile; burn's backends fuse kernels themselves"),
    ),
    k(
        "torch_compile_backend",
        Dpo,
        S,
        "null",
        Ignored("there is no torch.compile; burn's backends fuse kernels themselves"),
    ),
    k(
        "torch_compile_mode",
        Dpo,
        S,
        "null",
        Ignored("there is no torch.compile; burn's backends fuse kernels themselves"),
    ),
    k(
        "use_liger_kernel",
        Dpo,
        B,
        "false",
        Ignored("the engine already runs the output head in chunks, without the full logits"),
    ),
    k(
        "liger_kernel_config",
        Dpo,
        D,
        "null",
        Ignored("the engine already runs the output head in chunks, without the full logits"),
    ),
    k(
        "use_cache",
        Dpo,
        B,
        "false",
        Ignored("training keeps no key/value cache"),
    ),
    k(
        "neftune_noise_alpha",
        Dpo,
        F,
        "null",
        Refused("NEFTune's embedding noise is not implemented"),
    ),
    k(
        "torch_empty_cache_steps",
        Dpo,
        I,
        "null",
        Ignored("there is no CUDA caching allocator to empty"),
    ),
    k(
        "auto_find_batch_size",
        Dpo,
        B,
        "false",
        Refused(
            "the batch size is not searched; set per_device_train_batch_size (gradient_checkpointing bounds the memory)",
        ),
    ),
    k("logging_strategy", Dpo, S, "\"steps\"", H),
    k("logging_steps", Dpo, ST, "10", H),
    k("logging_first_step", Dpo, B, "false", H),
    k("log_on_each_node", Dpo, B, "true", Ignored(ONE_PROCESS)),
    k(
        "logging_nan_inf_filter",
        Dpo,
        B,
        "true",
        Ignored("a step with a non-finite loss is refused here, not filtered from the logs"),
    ),
    k(
        "include_num_input_tokens_seen",
        Dpo,
        Kind::Any,
        "\"no\"",
        Tracking,
    ),
    k(
        "log_level",
        Dpo,
        S,
        "\"passive\"",
        Ignored("Python logging levels; sdpo prints its own progress lines"),
    ),
    k(
        "log_level_replica",
        Dpo,
        S,
        "\"warning\"",
        Ignored(ONE_PROCESS),
    ),
    k(
        "disable_tqdm",
        Dpo,
        B,
        "null",
        Ignored("the progress bar is drawn only when stderr is a terminal"),
    ),
    k("report_to", Dpo, Kind::Any, "\"none\"", H),
    k("run_name", Dpo, S, "null", H),
    k("project", Dpo, S, "\"huggingface\"", Tracking),
    k("trackio_space_id", Dpo, S, "null", Tracking),
    k("trackio_bucket_id", Dpo, S, "null", Tracking),
    k("trackio_static_space_id", Dpo, Kind::Any, "null", Tracking),
    k("eval_strategy", Dpo, S, "\"no\"", H),
    k("eval_steps", Dpo, ST, "null", H),
    k("eval_delay", Dpo, F, "0", H),
    k("per_device_eval_batch_size", Dpo, I, "8", H),
    k(
        "prediction_loss_only",
        Dpo,
        B,
        "false",
        Ignored(EVAL_AVERAGES),
    ),
    k("eval_on_start", Dpo, B, "false", H),
    k(
        "eval_do_concat_batches",
        Dpo,
        B,
        "true",
        Ignored(EVAL_AVERAGES),
    ),
    k(
        "eval_use_gather_object",
        Dpo,
        B,
        "false",
        Ignored(EVAL_AVERAGES),
    ),
    k(
        "eval_accumulation_steps",
        Dpo,
        I,
        "null",
        Ignored(EVAL_AVERAGES),
    ),
    k("include_for_metrics", Dpo, SL, "[]", Ignored(EVAL_AVERAGES)),
    k(
        "batch_eval_metrics",
        Dpo,
        B,
        "false",
        Ignored(EVAL_AVERAGES),
    ),
    k(
        "save_only_model",
        Dpo,
        B,
        "false",
        Refused("checkpoints always hold the optimizer state, so that a run can resume exactly"),
    ),
    k("save_strategy", Dpo, S, "\"steps\"", H),
    k("save_steps", Dpo, ST, "500", H),
    k("save_on_each_node", Dpo, B, "false", Ignored(ONE_PROCESS)),
    k("save_total_limit", Dpo, I, "null", H),
    k(
        "enable_jit_checkpoint",
        Dpo,
        B,
        "false",
        Refused(
            "no checkpoint is written on SIGTERM; a killed run resumes from its last checkpoint-N",
        ),
    ),
    k("push_to_hub", Dpo, B, "false", Refused(NO_UPLOAD)),
    k("hub_token", Dpo, S, "null", Refused(NO_UPLOAD)),
    k("hub_private_repo", Dpo, B, "null", Refused(NO_UPLOAD)),
    k("hub_model_id", Dpo, S, "null", Refused(NO_UPLOAD)),
    k("hub_strategy", Dpo, S, "\"every_save\"", Refused(NO_UPLOAD)),
    k("hub_always_push", Dpo, B, "false", Refused(NO_UPLOAD)),
    k("hub_revision", Dpo, S, "null", Refused(NO_UPLOAD)),
    k("load_best_model_at_end", Dpo, B, "false", H),
    k("metric_for_best_model", Dpo, S, "null", H),
    k("greater_is_better", Dpo, B, "null", H),
    k(
        "ignore_data_skip",
        Dpo,
        B,
        "false",
        Refused(
            "a resumed run always skips the batches already trained on, so it continues the same data order",
        ),
    ),
    k(
        "restore_callback_states_from_checkpoint",
        Dpo,
        B,
        "false",
        Ignored("there are no Trainer callbacks"),
    ),
    k(
        "full_determinism",
        Dpo,
        B,
        "false",
        Ignored("the CPU backends are deterministic for a given seed; there is no switch"),
    ),
    k("seed", Dpo, I, "42", H),
    k("data_seed", Dpo, I, "null", H),
    k(
        "use_cpu",
        Dpo,
        B,
        "false",
        Ignored("the backend is chosen with --device or BURN_DEVICE"),
    ),
    k("accelerator_config", Dpo, D, "null", Refused(ONE_PROCESS)),
    k(
        "parallelism_config",
        Dpo,
        Kind::Any,
        "null",
        Refused(ONE_PROCESS),
    ),
    k(
        "dataloader_drop_last",
        Dpo,
        B,
        "false",
        Refused("the last, smaller batch of an epoch is always trained on"),
    ),
    k("dataloader_num_workers", Dpo, I, "0", Ignored(DATALOADER)),
    k("dataloader_pin_memory", Dpo, B, "true", Ignored(DATALOADER)),
    k(
        "dataloader_persistent_workers",
        Dpo,
        B,
        "false",
        Ignored(DATALOADER),
    ),
    k(
        "dataloader_prefetch_factor",
        Dpo,
        I,
        "null",
        Ignored(DATALOADER),
    ),
    k(
        "dataloader_multiprocessing_context",
        Dpo,
        S,
        "null",
        Ignored(DATALOADER),
    ),
    k("dataloader_in_order", Dpo, B, "true", Ignored(DATALOADER)),
    k(
        "remove_unused_columns",
        Dpo,
        B,
        "true",
        Ignored("only the prompt, chosen and rejected columns are read"),
    ),
    k(
        "label_names",
        Dpo,
        SL,
        "null",
        Ignored("there are no label columns: the loss is DPO's"),
    ),
    k(
        "train_sampling_strategy",
        Dpo,
        S,
        "\"random\"",
        Mapped(
            "`random` is the default order, `group_by_length` sets group_by_length; `sequential` and `batch_rebalance` are refused",
        ),
    ),
    k(
        "length_column_name",
        Dpo,
        S,
        "\"length\"",
        Ignored("lengths are measured from the tokenized pairs"),
    ),
    k(
        "ddp_find_unused_parameters",
        Dpo,
        B,
        "null",
        Refused(ONE_PROCESS),
    ),
    k("ddp_bucket_cap_mb", Dpo, I, "null", Refused(ONE_PROCESS)),
    k(
        "ddp_broadcast_buffers",
        Dpo,
        B,
        "null",
        Refused(ONE_PROCESS),
    ),
    k("ddp_static_graph", Dpo, B, "null", Refused(ONE_PROCESS)),
    k("ddp_backend", Dpo, S, "null", Refused(ONE_PROCESS)),
    k("ddp_timeout", Dpo, I, "1800", Ignored(ONE_PROCESS)),
    k("fsdp", Dpo, Kind::Any, "null", Refused(ONE_PROCESS)),
    k("fsdp_config", Dpo, D, "null", Refused(ONE_PROCESS)),
    k("deepspeed", Dpo, Kind::Any, "null", Refused(ONE_PROCESS)),
    k(
        "debug",
        Dpo,
        Kind::Any,
        "\"\"",
        Ignored("PyTorch/TPU debug switches"),
    ),
    k(
        "skip_memory_metrics",
        Dpo,
        B,
        "true",
        Ignored("memory is measured by the benchmarks under bench/, not logged"),
    ),
    k(
        "do_train",
        Dpo,
        B,
        "false",
        Ignored("the subcommand (`sdpo train`, `sdpo eval`) says what to do"),
    ),
    k(
        "do_eval",
        Dpo,
        B,
        "false",
        Ignored("the subcommand (`sdpo train`, `sdpo eval`) says what to do"),
    ),
    k(
        "do_predict",
        Dpo,
        B,
        "false",
        Ignored("the subcommand (`sdpo train`, `sdpo eval`) says what to do"),
    ),
    k(
        "resume_from_checkpoint",
        Dpo,
        S,
        "null",
        Mapped("`sdpo train` resumes from it, as --resume-from-checkpoint"),
    ),
    k("local_rank", Dpo, I, "-1", Refused(ONE_PROCESS)),
    k(
        "model_init_kwargs",
        Dpo,
        D,
        "null",
        Refused(
            "from_pretrained options do not apply; the reference's dtype is ref_dtype, mixed precision bf16/fp16",
        ),
    ),
    k(
        "trust_remote_code",
        Dpo,
        B,
        "false",
        Ignored(
            "no Python code is run: the architecture must be one sdpo-models implements (docs/models.md)",
        ),
    ),
    k(
        "router_aux_loss_coef",
        Dpo,
        F,
        "null",
        Refused("mixture-of-experts models and their router loss are not implemented"),
    ),
    k(
        "disable_dropout",
        Dpo,
        B,
        "true",
        Ignored(
            "sdpo-models' layers apply no dropout; LoRA's follows lora_dropout (TRL's disable_dropout also zeroes PEFT's LoRA dropout: set lora_dropout = 0 for TRL's numbers)",
        ),
    ),
    k(
        "dataset_num_proc",
        Dpo,
        I,
        "null",
        Ignored("tokenization already runs on every core"),
    ),
    k("max_length", Dpo, I, "1024", H),
    k("truncation_mode", Dpo, S, "\"keep_start\"", H),
    k(
        "padding_free",
        Dpo,
        B,
        "false",
        Refused(
            "batches are padded; shared_prompt_forward (on by default) removes the repeated prompt instead",
        ),
    ),
    k(
        "pad_to_multiple_of",
        Dpo,
        Kind::Any,
        "\"auto\"",
        Mapped(
            "`auto`, `none`, `null` leave it unset (TRL: unset except on Neuron); a number is kept",
        ),
    ),
    k("precompute_ref_log_probs", Dpo, B, "false", H),
    k("precompute_ref_batch_size", Dpo, I, "null", H),
    k("loss_type", Dpo, SL, "[\"sigmoid\"]", H),
    k("loss_weights", Dpo, FL, "null", H),
    k("ld_alpha", Dpo, F, "null", H),
    k("f_divergence_type", Dpo, S, "\"reverse_kl\"", H),
    k("f_alpha_divergence_coef", Dpo, F, "0.5", H),
    k("label_smoothing", Dpo, F, "0.0", H),
    k("beta", Dpo, F, "0.1", H),
    k("use_weighting", Dpo, B, "false", H),
    k("discopop_tau", Dpo, F, "0.05", H),
    k(
        "activation_offloading",
        Dpo,
        B,
        "false",
        Refused(
            "the memory-bounded engine keeps only layer inputs; offloading them to the host is not implemented",
        ),
    ),
    k("sync_ref_model", Dpo, B, "false", H),
    k("ref_model_mixup_alpha", Dpo, F, "0.6", H),
    k("ref_model_sync_steps", Dpo, I, "512", H),
    k(
        "pad_token",
        Dpo,
        S,
        "null",
        Ignored(
            "padding positions are masked out, so the pad id changes no number; it comes from tokenizer_config.json",
        ),
    ),
    // ModelConfig
    k("model_name_or_path", Model, S, "null", H),
    k("model_revision", Model, S, "\"main\"", H),
    k(
        "dtype",
        Model,
        S,
        "\"float32\"",
        Ignored(
            "weights are kept in float32 (master weights); bf16 = true runs the products in bfloat16, ref_dtype stores the reference in half precision",
        ),
    ),
    k(
        "attn_implementation",
        Model,
        S,
        "null",
        Ignored(
            "sdpo-models has its own attention (blocked, or LibTorch's fused kernel), the same numbers as eager/sdpa",
        ),
    ),
    k("use_peft", Model, B, "false", H),
    k("lora_r", Model, I, "16", H),
    k("lora_alpha", Model, I, "32", H),
    k("lora_dropout", Model, F, "0.05", H),
    k("lora_target_modules", Model, SL, "null", H),
    k(
        "lora_target_parameters",
        Model,
        SL,
        "null",
        Refused("LoRA on bare parameters (mixture-of-experts weights) is not implemented"),
    ),
    k("lora_modules_to_save", Model, SL, "null", H),
    k(
        "lora_task_type",
        Model,
        S,
        "\"CAUSAL_LM\"",
        Refused("only causal language models (CAUSAL_LM) are trained"),
    ),
    k("use_rslora", Model, B, "false", H),
    k(
        "use_dora",
        Model,
        B,
        "false",
        Refused("DoRA is not implemented here (issue 28)"),
    ),
    k("load_in_8bit", Model, B, "false", Refused(BNB)),
    k("load_in_4bit", Model, B, "false", Refused(BNB)),
    k("bnb_4bit_quant_type", Model, S, "\"nf4\"", Refused(BNB)),
    k("use_bnb_nested_quant", Model, B, "false", Refused(BNB)),
    k("bnb_4bit_quant_storage", Model, S, "null", Refused(BNB)),
    // DatasetMixtureConfig
    k("datasets", Mixture, Kind::Any, "[]", H),
    k(
        "streaming",
        Mixture,
        B,
        "false",
        Ignored("the dataset is read from its local snapshot; streaming changes nothing"),
    ),
    k("test_split_size", Mixture, F, "null", H),
    // TRL 0.x
    k(
        "rpo_alpha",
        Legacy,
        F,
        "null",
        Mapped(
            "TRL 0.x's RPO weight: appended to loss_type as \"sft\" with this weight in loss_weights, as TRL 1.x writes RPO",
        ),
    ),
];

/// The TRL key `name`, if there is one.
pub fn lookup(name: &str) -> Option<&'static TrlKey> {
    TRL_KEYS.iter().find(|key| key.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn trl_fixture_keys() -> Vec<Value> {
        let text = sdpo_testkit::read_fixture("trl/keys.json");
        let json: Value = serde_json::from_str(&text).expect("keys.json is JSON");
        json["keys"].as_array().expect("keys").clone()
    }

    fn kind_fits(kind: Kind, python_type: &str) -> bool {
        let has = |s: &str| python_type.contains(s);
        match kind {
            Kind::Bool => has("bool"),
            Kind::Int => has("int"),
            Kind::Float | Kind::Steps => has("float"),
            Kind::Str => has("str") || has("Strategy") || has("Names") || has("SchedulerType"),
            Kind::StrList => has("list[str]"),
            Kind::FloatList => has("list[float]"),
            Kind::Dict => has("dict"),
            Kind::Any => true,
        }
    }

    #[test]
    fn the_catalogue_has_every_trl_key_with_trls_default_and_type() {
        let keys = trl_fixture_keys();
        assert!(!keys.is_empty());
        for key in &keys {
            let name = key["name"].as_str().unwrap();
            let entry =
                lookup(name).unwrap_or_else(|| panic!("TRL key `{name}` is not classified"));
            let default: Value = serde_json::from_str(entry.default).unwrap();
            let same = match (&default, &key["default"]) {
                (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                (a, b) => a == b,
            };
            assert!(
                same,
                "`{name}`: catalogue default {default}, TRL's {}",
                key["default"]
            );
            let python_type = key["type"].as_str().unwrap();
            assert!(
                kind_fits(entry.kind, python_type),
                "`{name}`: {:?} for `{python_type}`",
                entry.kind
            );
        }
        let in_fixture: Vec<&str> = keys.iter().filter_map(|k| k["name"].as_str()).collect();
        for entry in TRL_KEYS {
            assert!(
                entry.source == Source::Legacy || in_fixture.contains(&entry.name),
                "`{}` is in the catalogue but not a TRL key",
                entry.name
            );
        }
        println!("{} TRL keys classified", keys.len());
    }

    #[test]
    fn honoured_keys_exist_and_a_configuration_dumped_from_trl_loads() {
        let known = sdpo_train::TrainConfig::known_keys();
        for entry in TRL_KEYS.iter().filter(|e| e.status == Status::Honoured) {
            assert!(
                known.contains(entry.name),
                "`{}` is honoured but not a TrainConfig key",
                entry.name
            );
        }
        // Every TRL key at TRL's default: loads, with no warning.
        let mut all = serde_json::Map::new();
        for key in trl_fixture_keys() {
            all.insert(
                key["name"].as_str().unwrap().to_string(),
                key["default"].clone(),
            );
        }
        let prepared = crate::trl_config::prepare(all).expect("TRL's defaults load");
        assert!(prepared.warnings.is_empty(), "{:?}", prepared.warnings);
        let config: sdpo_train::TrainConfig =
            serde_json::from_value(Value::Object(prepared.map)).expect("a TrainConfig");
        assert_eq!(config.loss.loss_types().len(), 1);
        assert!(
            config.gradient_checkpointing,
            "TRL's gradient_checkpointing = true is kept"
        );
    }

    #[test]
    fn every_trl_key_has_a_row_in_the_configuration_reference() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).expect("docs/configuration.md");
        let section = doc
            .split("## Every TRL key")
            .nth(1)
            .expect("docs/configuration.md has a section `## Every TRL key`");
        let missing: Vec<&str> = TRL_KEYS
            .iter()
            .map(|e| e.name)
            .filter(|name| !section.contains(&format!("| `{name}` |")))
            .collect();
        assert!(missing.is_empty(), "TRL keys without a row: {missing:?}");
    }
}
