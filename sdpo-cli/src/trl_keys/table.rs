//! The TRL key table, [`TRL_KEYS`]: the reasons shared by many keys, and the keys of
//! `ScriptArguments`, of `DPOConfig` itself (from `model_init_kwargs` on), of `ModelConfig`, of
//! `DatasetMixtureConfig` and of TRL 0.x, assembled in TRL's order with the `TrainingArguments`
//! keys of [`training_args`](super::training_args).

use super::training_args::TRAINING_ARGUMENTS;
use super::{Kind, Source, Status, TrlKey, k};
use Kind::{Bool as B, Dict as D, Float as F, FloatList as FL, Int as I, Str as S, StrList as SL};
use Source::{Dpo, Legacy, Mixture, Model, Script};
use Status::{Honoured as H, Ignored, Mapped, Refused};

pub(super) const ONE_PROCESS: &str =
    "sdpo-rs trains in one process on one device; distributed training is not implemented";
pub(super) const NO_UPLOAD: &str =
    "sdpo-rs never uploads: push the output directory with `hf upload` (huggingface_hub's CLI)";
pub(super) const DATALOADER: &str = "data is tokenized up front on every core and batches are collated in memory: there is no DataLoader";
pub(super) const EVAL_AVERAGES: &str =
    "evaluation averages the DPO metrics batch by batch; there are no predictions to gather";
const BNB: &str = "8-bit (LLM.int8) bases are not implemented: their int8/float16 outlier decomposition is not reproduced here; load_in_4bit (QLoRA) is";

/// Every key of TRL 1.16's `trl dpo`, in TRL's order, plus TRL 0.x's `rpo_alpha`.
pub const TRL_KEYS: &[TrlKey] = &ALL;

/// The parts of [`TRL_KEYS`], in TRL's order.
const PARTS: &[&[TrlKey]] = &[
    SCRIPT_ARGUMENTS,
    TRAINING_ARGUMENTS,
    DPO_CONFIG,
    MODEL_CONFIG,
    DATASET_MIXTURE_CONFIG,
    LEGACY,
];

const ALL: [TrlKey; total_len(PARTS)] = concat(PARTS);

/// The number of keys in `parts`.
const fn total_len(parts: &[&[TrlKey]]) -> usize {
    let (mut n, mut p) = (0, 0);
    while p < parts.len() {
        n += parts[p].len();
        p += 1;
    }
    n
}

/// `parts` one after the other (`N` is their total length; checked at compile time).
const fn concat<const N: usize>(parts: &[&[TrlKey]]) -> [TrlKey; N] {
    let mut out = [k("", Source::Legacy, Kind::Any, "null", Status::Tracking); N];
    let (mut n, mut p) = (0, 0);
    while p < parts.len() {
        let mut i = 0;
        while i < parts[p].len() {
            out[n] = parts[p][i];
            n += 1;
            i += 1;
        }
        p += 1;
    }
    assert!(n == N, "N must be the total length of the parts");
    out
}

/// `ScriptArguments`.
const SCRIPT_ARGUMENTS: &[TrlKey] = &[
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
];

/// `DPOConfig`'s own keys, after those of `TrainingArguments`.
const DPO_CONFIG: &[TrlKey] = &[
    k(
        "model_init_kwargs",
        Dpo,
        D,
        "null",
        Mapped(
            "its dtype (torch_dtype) sets dtype, revision model_revision; attn_implementation and trust_remote_code as their own keys; other from_pretrained options are refused",
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
];

/// `ModelConfig`.
const MODEL_CONFIG: &[TrlKey] = &[
    k("model_name_or_path", Model, S, "null", H),
    k("model_revision", Model, S, "\"main\"", H),
    k("dtype", Model, S, "\"float32\"", H),
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
    k("use_dora", Model, B, "false", H),
    k("load_in_8bit", Model, B, "false", Refused(BNB)),
    k("load_in_4bit", Model, B, "false", H),
    k("bnb_4bit_quant_type", Model, S, "\"nf4\"", H),
    k(
        "use_bnb_nested_quant",
        Model,
        B,
        "false",
        Mapped("bnb_4bit_use_double_quant, transformers' name for it"),
    ),
    k("bnb_4bit_quant_storage", Model, S, "null", H),
];

/// `DatasetMixtureConfig`.
const DATASET_MIXTURE_CONFIG: &[TrlKey] = &[
    k("datasets", Mixture, Kind::Any, "[]", H),
    k(
        "streaming",
        Mixture,
        B,
        "false",
        Ignored("the dataset is read from its local snapshot; streaming changes nothing"),
    ),
    k("test_split_size", Mixture, F, "null", H),
];

/// TRL 0.x keys kept for old configurations.
const LEGACY: &[TrlKey] = &[k(
    "rpo_alpha",
    Legacy,
    F,
    "null",
    Mapped(
        "TRL 0.x's RPO weight: appended to loss_type as \"sft\" with this weight in loss_weights, as TRL 1.x writes RPO",
    ),
)];
