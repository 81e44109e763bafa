//! PEFT's `adapter_config.json`: reading it into a [`LoraConfig`] and writing one, and finding
//! the base model an adapter names.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::config::{ADAPTER_CONFIG_FILE, LoraConfig, TargetModules};
use crate::error::ModelError;

impl LoraConfig {
    /// Reads `dir/adapter_config.json` (PEFT's format), with PEFT's defaults for absent keys.
    ///
    /// Only LoRA adapters are accepted, and options that would change the computation in ways
    /// this crate does not implement (`bias` other than `"none"`, `layers_to_transform`,
    /// `layer_replication`, LoRA biases, aLoRA, trainable tokens, ...) are refused with
    /// [`ModelError::UnsupportedLora`] naming the key. Unknown keys are accepted only when they
    /// hold a null, `false` or empty value.
    pub fn from_adapter_config(dir: &Path) -> Result<(Self, AdapterInfo), ModelError> {
        let path = dir.join(ADAPTER_CONFIG_FILE);
        let text = crate::error::read_text(&path)?;
        let json: Map<String, Value> =
            serde_json::from_str(&text).map_err(|source| ModelError::Json {
                path: path.clone(),
                source,
            })?;
        Self::from_adapter_json(&json, &path).map_err(|e| crate::error::in_file(&path, e))
    }

    /// [`LoraConfig::from_adapter_config`] on an already parsed object; `path` is only used in
    /// error messages.
    pub fn from_adapter_json(
        json: &Map<String, Value>,
        path: &Path,
    ) -> Result<(Self, AdapterInfo), ModelError> {
        let unsupported = |key: &str, value: &Value, reason: &str| ModelError::UnsupportedLora {
            option: format!("{key} in {}", path.display()),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let peft_type = json.get("peft_type").and_then(Value::as_str);
        if peft_type != Some("LORA") {
            return Err(unsupported(
                "peft_type",
                json.get("peft_type").unwrap_or(&Value::Null),
                "only LoRA adapters (`\"peft_type\": \"LORA\"`) are supported",
            ));
        }
        // Keys with meaning: parsed below. Keys that are metadata: ignored.
        const PARSED: &[&str] = &[
            "r",
            "lora_alpha",
            "lora_dropout",
            "target_modules",
            "modules_to_save",
            "use_rslora",
            "fan_in_fan_out",
            "use_dora",
            "init_lora_weights",
            "rank_pattern",
            "alpha_pattern",
        ];
        const METADATA: &[&str] = &[
            "peft_type",
            "task_type",
            "base_model_name_or_path",
            "revision",
            "inference_mode",
            "peft_version",
            "auto_mapping",
            "megatron_core",
            "qalora_group_size",
            "loftq_config",
        ];
        for (key, value) in json {
            if PARSED.contains(&key.as_str()) || METADATA.contains(&key.as_str()) {
                continue;
            }
            if key == "bias" {
                if value.as_str() != Some("none") {
                    return Err(unsupported(
                        key,
                        value,
                        "only `\"bias\": \"none\"` is supported (base biases stay frozen)",
                    ));
                }
                continue;
            }
            let is_default = match value {
                Value::Null => true,
                Value::Bool(b) => !b,
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            if !is_default {
                return Err(unsupported(
                    key,
                    value,
                    "this PEFT option is not implemented; only its default is accepted",
                ));
            }
        }
        if let Some(loftq) = json.get("loftq_config").filter(|v| !v.is_null())
            && loftq.as_object().is_none_or(|o| !o.is_empty())
        {
            return Err(unsupported(
                "loftq_config",
                loftq,
                "LoftQ changes the base weights",
            ));
        }
        let mut object = json.clone();
        // PEFT's defaults (not TRL's) for keys a PEFT file leaves out.
        object.entry("r").or_insert(json!(8));
        object.entry("lora_alpha").or_insert(json!(8));
        object.entry("lora_dropout").or_insert(json!(0.0));
        for key in ["rank_pattern", "alpha_pattern"] {
            if object.get(key).is_some_and(Value::is_null) {
                object.insert(key.into(), json!({}));
            }
        }
        if object.get("init_lora_weights").is_some_and(Value::is_null) {
            object.remove("init_lora_weights");
        }
        let keep: Map<String, Value> = object
            .into_iter()
            .filter(|(k, _)| PARSED.contains(&k.as_str()))
            .collect();
        let config: LoraConfig = match serde_json::from_value(Value::Object(keep.clone())) {
            Ok(config) => config,
            Err(source) => {
                // serde's message says the type, not the key: find the key whose value alone
                // fails (every field has a default), as the training config's reader does.
                let culprit = keep.iter().find_map(|(key, value)| {
                    let single = Map::from_iter([(key.clone(), value.clone())]);
                    serde_json::from_value::<LoraConfig>(Value::Object(single))
                        .err()
                        .map(|e| (key.clone(), e.to_string()))
                });
                return Err(match culprit {
                    Some((key, reason)) => ModelError::InvalidLoraConfig { key, reason },
                    None => ModelError::Json {
                        path: path.to_path_buf(),
                        source,
                    },
                });
            }
        };
        config.validate()?;
        let info = AdapterInfo {
            base_model_name_or_path: json
                .get("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        Ok((config, info))
    }

    /// `adapter_config.json` as PEFT 0.21 writes it, with this config's values, the resolved
    /// `target_modules` (names actually adapted, or the regex) and `base_model_name_or_path`.
    pub fn to_adapter_json(
        &self,
        target_modules: &TargetModules,
        fan_in_fan_out: bool,
        base_model_name_or_path: Option<&str>,
    ) -> Value {
        json!({
            "alpha_pattern": self.alpha_pattern,
            "auto_mapping": null,
            "base_model_name_or_path": base_model_name_or_path,
            "bias": "none",
            "exclude_modules": null,
            "fan_in_fan_out": fan_in_fan_out,
            "inference_mode": true,
            "init_lora_weights": self.init_lora_weights,
            "layer_replication": null,
            "layers_pattern": null,
            "layers_to_transform": null,
            "loftq_config": {},
            "lora_alpha": self.lora_alpha,
            "lora_bias": false,
            "lora_dropout": self.lora_dropout,
            "megatron_config": null,
            "megatron_core": "megatron.core",
            "modules_to_save": self.modules_to_save,
            "peft_type": "LORA",
            "r": self.r,
            "rank_pattern": self.rank_pattern,
            "revision": null,
            "target_modules": target_modules,
            "task_type": "CAUSAL_LM",
            "use_dora": self.use_dora,
            "use_rslora": self.use_rslora,
        })
    }
}

/// What `adapter_config.json` says besides the LoRA settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdapterInfo {
    /// The base model the adapter was trained on (a local path or a Hub id), if recorded.
    pub base_model_name_or_path: Option<String>,
}

/// The base model directory for the adapter in `adapter_dir`: `base` when given, else the
/// adapter's `base_model_name_or_path` when that names a local directory (absolute, or relative
/// to the current directory, as transformers resolves it). A Hub id, or a path that does not
/// exist, is [`ModelError::AdapterBaseNotLocal`], which asks for the base explicitly.
pub fn resolve_adapter_base(
    adapter_dir: &Path,
    base: Option<&Path>,
) -> Result<PathBuf, ModelError> {
    if let Some(base) = base {
        return Ok(base.to_path_buf());
    }
    let (_, info) = LoraConfig::from_adapter_config(adapter_dir)?;
    match info.base_model_name_or_path {
        Some(name) if Path::new(&name).is_dir() => Ok(PathBuf::from(name)),
        other => Err(ModelError::AdapterBaseNotLocal {
            adapter_dir: adapter_dir.to_path_buf(),
            base_model_name_or_path: other,
        }),
    }
}
