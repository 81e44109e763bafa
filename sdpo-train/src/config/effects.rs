//! What each configuration key does to a run beyond its own meaning, said once per key in
//! [`KEY_EFFECTS`]: whether a run resumed from a checkpoint may change it ([`OnResume`]), and
//! how it reaches the reference's log-probs and so the key of the precomputed reference cache
//! ([`ReferenceEffect`]). The resume check and the cache key read this table; a test fails for
//! a key that is not in it.

/// What a resumed run may do with a key whose value differs from the checkpoint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnResume {
    /// The key decides what the run trains on (the model, the data and its order, the loss, the
    /// trained parameters): the resumed run would be another run, so it is refused.
    Refused,
    /// Optimizer settings, step counts, logging, evaluation, saving, the compute path: the change
    /// is allowed and reported.
    Reported,
}

/// How a key reaches the reference's per-token log-probs (and the reference cache's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceEffect {
    /// Written into the cache key as a setting (truncation, the compute path, the precision).
    Setting,
    /// Decides the tokenized pairs, whose content the cache key hashes.
    Data,
    /// Decides the reference's weights, whose files the cache key fingerprints.
    Weights,
    /// Changes no reference log-prob.
    Unaffected,
}

/// One key's effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEffects {
    /// The key, as a configuration file spells it.
    pub key: &'static str,
    /// See [`OnResume`].
    pub on_resume: OnResume,
    /// See [`ReferenceEffect`].
    pub reference: ReferenceEffect,
}

const fn key(key: &'static str, on_resume: OnResume, reference: ReferenceEffect) -> KeyEffects {
    KeyEffects {
        key,
        on_resume,
        reference,
    }
}

use OnResume::{Refused, Reported};
use ReferenceEffect::{Data, Setting, Unaffected, Weights};

/// Every key of the configuration (the trainer's, `sdpo-core`'s loss keys and `sdpo-data`'s data
/// keys), with its effects.
pub const KEY_EFFECTS: &[KeyEffects] = &[
    // The models.
    key("model_name_or_path", Refused, Weights),
    key("ref_model_name_or_path", Refused, Weights),
    // The token-level methods' scoring models: their own caches, not the reference's.
    key("sepo_oracle_model_name_or_path", Refused, Unaffected),
    key("sepo_oracle_ref_model_name_or_path", Refused, Unaffected),
    key("tisdpo_positive_model_name_or_path", Refused, Unaffected),
    key("tisdpo_negative_model_name_or_path", Refused, Unaffected),
    key("ct_positive_model_name_or_path", Refused, Unaffected),
    key("ct_negative_model_name_or_path", Refused, Unaffected),
    key("tgdpo_reward_model_name_or_path", Refused, Unaffected),
    key("tokenizer_name_or_path", Refused, Data),
    key("init_from_config", Refused, Weights),
    // The checkpoint holds the weights; a cache fingerprints the files the revision resolved to.
    key("model_revision", Reported, Weights),
    // The data and its order.
    key("train_file", Refused, Data),
    key("eval_file", Reported, Data),
    // The seed of a random init (and of the data order unless data_seed is set).
    key("seed", Refused, Weights),
    key("data_seed", Refused, Unaffected),
    key("per_device_train_batch_size", Refused, Unaffected),
    key("gradient_accumulation_steps", Refused, Unaffected),
    key("group_by_length", Refused, Unaffected),
    // TR-DPO: whether the checkpoint holds a moving reference.
    key("sync_ref_model", Refused, Unaffected),
    key("ref_model_mixup_alpha", Reported, Unaffected),
    key("ref_model_sync_steps", Reported, Unaffected),
    // LoRA: which parameters exist and are trained (the reference is the base either way).
    key("use_peft", Refused, Unaffected),
    key("lora_r", Refused, Unaffected),
    key("lora_alpha", Refused, Unaffected),
    key("lora_dropout", Refused, Unaffected),
    key("lora_target_modules", Refused, Unaffected),
    key("lora_modules_to_save", Refused, Unaffected),
    key("use_rslora", Refused, Unaffected),
    key("use_dora", Refused, Unaffected),
    // With use_peft, the frozen base's (and so the reference's) storage dtype.
    key("dtype", Refused, Weights),
    key("peft_adapter_path", Refused, Unaffected),
    key("merge_adapter_at_end", Reported, Unaffected),
    // A 4-bit base: the trained model's base and the adapter-disabled reference's weights
    // (written into the cache key's `reference` part when the reference is that base).
    key("load_in_4bit", Refused, Weights),
    key("bnb_4bit_quant_type", Refused, Weights),
    key("bnb_4bit_use_double_quant", Refused, Weights),
    key("bnb_4bit_compute_dtype", Reported, Weights),
    key("bnb_4bit_quant_storage", Reported, Unaffected),
    key("load_in_8bit", Refused, Unaffected),
    // The optimizer and its schedule.
    key("optim", Reported, Unaffected),
    key("learning_rate", Reported, Unaffected),
    key("lr_scheduler_type", Reported, Unaffected),
    key("lr_scheduler_kwargs", Reported, Unaffected),
    key("warmup_steps", Reported, Unaffected),
    key("warmup_ratio", Reported, Unaffected),
    key("weight_decay", Reported, Unaffected),
    key("adam_beta1", Reported, Unaffected),
    key("adam_beta2", Reported, Unaffected),
    key("adam_epsilon", Reported, Unaffected),
    key("max_grad_norm", Reported, Unaffected),
    key("num_train_epochs", Reported, Unaffected),
    key("max_steps", Reported, Unaffected),
    // Logging, evaluation, saving.
    key("output_dir", Reported, Unaffected),
    key("per_device_eval_batch_size", Reported, Unaffected),
    key("logging_strategy", Reported, Unaffected),
    key("logging_steps", Reported, Unaffected),
    key("logging_first_step", Reported, Unaffected),
    key("logging_dir", Reported, Unaffected),
    key("report_to", Reported, Unaffected),
    key("run_name", Reported, Unaffected),
    key("eval_strategy", Reported, Unaffected),
    key("eval_steps", Reported, Unaffected),
    key("eval_delay", Reported, Unaffected),
    key("eval_on_start", Reported, Unaffected),
    key("save_strategy", Reported, Unaffected),
    key("save_steps", Reported, Unaffected),
    key("save_total_limit", Reported, Unaffected),
    key("load_best_model_at_end", Reported, Unaffected),
    key("metric_for_best_model", Reported, Unaffected),
    key("greater_is_better", Reported, Unaffected),
    // The reference's cache.
    key("precompute_ref_log_probs", Reported, Unaffected),
    key("precompute_ref_batch_size", Reported, Unaffected),
    key("ref_layer_streaming", Reported, Setting),
    key("ref_dtype", Reported, Setting),
    // The compute path and precision: the same numbers to rounding, so a cache records them.
    key("gradient_checkpointing", Reported, Setting),
    key("memory_budget_mib", Reported, Setting),
    key("max_buffer_mib", Reported, Setting),
    key("shared_prompt_forward", Reported, Setting),
    key("bf16", Reported, Setting),
    key("fp16", Reported, Setting),
    // The loss (sdpo-core); `trl_semantics` also picks the data pipeline.
    key("trl_semantics", Refused, Setting),
    key("loss_type", Refused, Unaffected),
    key("loss_weights", Refused, Unaffected),
    key("beta", Refused, Unaffected),
    key("label_smoothing", Refused, Unaffected),
    key("reference_free", Refused, Unaffected),
    key("f_divergence_type", Refused, Unaffected),
    key("f_alpha_divergence_coef", Refused, Unaffected),
    key("ld_alpha", Refused, Unaffected),
    key("use_weighting", Refused, Unaffected),
    key("discopop_tau", Refused, Unaffected),
    key("sdpo_threshold", Refused, Unaffected),
    key("simpo_gamma", Refused, Unaffected),
    key("sepo_ratio", Refused, Unaffected),
    key("sepo_rejected_ratio", Refused, Unaffected),
    key("sepo_scale", Refused, Unaffected),
    key("tisdpo_transform", Refused, Unaffected),
    key("tisdpo_top_percent", Refused, Unaffected),
    key("tisdpo_upper", Refused, Unaffected),
    key("tisdpo_lower", Refused, Unaffected),
    key("tisdpo_min_val", Refused, Unaffected),
    key("tisdpo_max_val", Refused, Unaffected),
    key("tisdpo_min_scale", Refused, Unaffected),
    key("tisdpo_max_scale", Refused, Unaffected),
    key("tisdpo_round_decimals", Refused, Unaffected),
    key("ct_only_neg", Refused, Unaffected),
    key("ct_dpo_reduction", Refused, Unaffected),
    key("ct_position_denominator", Refused, Unaffected),
    key("ct_ce_gamma", Refused, Unaffected),
    key("tgdpo_alpha", Refused, Unaffected),
    // The data (sdpo-data).
    key("max_length", Refused, Setting),
    key("max_prompt_length", Refused, Setting),
    key("truncation_mode", Refused, Setting),
    key("skip_invalid_records", Refused, Data),
    key("max_text_bytes", Refused, Data),
    key("prompt_column", Refused, Data),
    key("chosen_column", Refused, Data),
    key("rejected_column", Refused, Data),
    key("dataset_name", Refused, Data),
    key("dataset_config", Refused, Data),
    key("dataset_train_split", Refused, Data),
    key("dataset_test_split", Refused, Data),
    key("datasets", Refused, Data),
    key("test_split_size", Refused, Data),
    // Padding, reporting and reading change no token the model sees.
    key("pad_to_multiple_of", Reported, Unaffected),
    key("max_reported_reasons", Reported, Unaffected),
    key("dataset_streaming", Reported, Data),
];

/// The effects of `key`; `None` for a key the configuration does not have.
pub fn key_effects(key: &str) -> Option<&'static KeyEffects> {
    KEY_EFFECTS.iter().find(|effects| effects.key == key)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::TrainConfig;

    #[test]
    fn every_key_declares_its_effects_once() {
        let known = TrainConfig::known_keys();
        let declared: Vec<&str> = KEY_EFFECTS.iter().map(|effects| effects.key).collect();
        let unique: BTreeSet<&str> = declared.iter().copied().collect();
        assert_eq!(unique.len(), declared.len(), "a key is declared twice");
        let missing: Vec<&String> = known
            .iter()
            .filter(|key| !unique.contains(key.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "keys without an entry in KEY_EFFECTS (say whether a resume may change them and how \
             they reach the reference): {missing:?}"
        );
        let unknown: Vec<&&str> = unique.iter().filter(|key| !known.contains(**key)).collect();
        assert!(
            unknown.is_empty(),
            "KEY_EFFECTS names unknown keys: {unknown:?}"
        );
    }
}
