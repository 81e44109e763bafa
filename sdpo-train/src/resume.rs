//! What a resumed run may change: the configuration saved with a checkpoint against the current
//! one. Keys that change the data, the model or the loss would make the resumed run a different
//! run than the one the checkpoint belongs to, so they are refused; the others (optimizer
//! hyper-parameters, step counts, logging, evaluation, saving) are reported and allowed.

use serde_json::Value;

use sdpo_core::LossConfig;
use sdpo_data::DataConfig;

use crate::config::{TrainConfig, keys_of};

/// Keys of the trainer's own that decide which model is trained on which examples.
const RUN_DEFINING_KEYS: [&str; 19] = [
    "model_name_or_path",
    "ref_model_name_or_path",
    "tokenizer_name_or_path",
    "init_from_config",
    "train_file",
    "seed",
    // issue 25: the seed of the data order.
    "data_seed",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "group_by_length",
    // TR-DPO: whether the checkpoint holds a moving reference.
    "sync_ref_model",
    // LoRA: which parameters exist and are trained.
    "use_peft",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "lora_modules_to_save",
    "use_rslora",
    "peft_adapter_path",
];

/// Data keys that change no token the model sees.
const NEUTRAL_DATA_KEYS: [&str; 3] = [
    "pad_to_multiple_of",
    "max_reported_reasons",
    "dataset_streaming",
];

/// How the current configuration differs from a checkpoint's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// `key: saved -> current` for keys that change the data, the model or the loss.
    pub errors: Vec<String>,
    /// `key: saved -> current` for the other keys.
    pub warnings: Vec<String>,
}

/// Whether changing `key` on resume changes what the run trains on.
pub fn is_run_defining(key: &str) -> bool {
    RUN_DEFINING_KEYS.contains(&key)
        || keys_of::<LossConfig>().contains(key)
        || (keys_of::<DataConfig>().contains(key) && !NEUTRAL_DATA_KEYS.contains(&key))
}

fn show(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "unset".into(),
        Some(v) => v.to_string(),
    }
}

/// Compares every key of the two configurations.
pub fn compare_configs(saved: &TrainConfig, current: &TrainConfig) -> ConfigDiff {
    let (saved, current) = (saved.to_map(), current.to_map());
    let mut keys: Vec<&String> = saved.keys().chain(current.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut diff = ConfigDiff::default();
    for key in keys {
        let (a, b) = (saved.get(key), current.get(key));
        if a == b {
            continue;
        }
        let line = format!("`{key}`: {} -> {}", show(a), show(b));
        if is_run_defining(key) {
            diff.errors.push(line);
        } else {
            diff.warnings.push(line);
        }
    }
    diff
}
