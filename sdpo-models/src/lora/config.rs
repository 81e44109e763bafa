//! [`LoraConfig`]: LoRA settings under PEFT's `LoraConfig` names (and TRL's `ModelConfig`
//! aliases), and reading / writing PEFT's `adapter_config.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::config::Architecture;
use crate::error::ModelError;

/// File name of a PEFT adapter's configuration.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// File name of a PEFT adapter's tensors.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// Which linear layers receive an adapter (PEFT's `target_modules`, TRL's
/// `lora_target_modules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetModules {
    /// Module names matched as PEFT matches a list: a layer is adapted when its full name equals
    /// an entry or ends with `.` + the entry (`q_proj` adapts `model.layers.3.self_attn.q_proj`).
    /// Every entry must match at least one linear layer.
    Names(Vec<String>),
    /// A regular expression that must match a layer's full name (PEFT's string form).
    Regex(String),
    /// `"all-linear"` (PEFT and TRL): every linear layer of the decoder blocks, not the output
    /// head.
    AllLinear,
}

const ALL_LINEAR: &str = "all-linear";

impl Serialize for TargetModules {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Names(names) => names.serialize(serializer),
            Self::Regex(regex) => regex.serialize(serializer),
            Self::AllLinear => ALL_LINEAR.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for TargetModules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::One(s) if s == ALL_LINEAR => Self::AllLinear,
            Raw::One(s) => Self::Regex(s),
            // TRL turns a one-element list into its string, which is how `["all-linear"]`
            // reaches PEFT as the shorthand; other single names stay names here (PEFT would
            // treat them as a regex over the full name and match nothing).
            Raw::Many(v) if v.len() == 1 && v[0] == ALL_LINEAR => Self::AllLinear,
            Raw::Many(v) => Self::Names(v),
        })
    }
}

/// How new adapters are initialised (PEFT's `init_lora_weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitLoraWeights {
    /// `true`: A Kaiming-uniform (`kaiming_uniform_(a=sqrt(5))`, i.e. U(±1/√in)), B zero, so a
    /// new adapter leaves the model unchanged.
    #[default]
    Default,
    /// `"gaussian"`: A ~ N(0, 1/r²), B zero.
    Gaussian,
    /// `false`: A and B both Kaiming-uniform (B U(±1/√r)): the adapter changes the model from
    /// the start (PEFT uses it for tests).
    Random,
}

impl Serialize for InitLoraWeights {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Default => serializer.serialize_bool(true),
            Self::Gaussian => serializer.serialize_str("gaussian"),
            Self::Random => serializer.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for InitLoraWeights {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Bool(true) => Ok(Self::Default),
            Value::Bool(false) => Ok(Self::Random),
            Value::String(s) if s == "gaussian" => Ok(Self::Gaussian),
            other => Err(serde::de::Error::custom(format!(
                "init_lora_weights = {other} is not supported (supported: true, false, \"gaussian\"; \
                 PiSSA, OLoRA, EVA, CorDA and LoftQ change the base weights)"
            ))),
        }
    }
}

fn default_r() -> usize {
    16
}
fn default_alpha() -> f64 {
    32.0
}
fn default_dropout() -> f64 {
    0.05
}

/// LoRA settings. Field names are PEFT's `LoraConfig`; the TRL `ModelConfig` names
/// (`lora_r`, `lora_target_modules`, `lora_modules_to_save`) are accepted as aliases when
/// deserialising. Defaults are TRL's (`r` 16, `lora_alpha` 32, `lora_dropout` 0.05); an
/// `adapter_config.json` missing a key gets PEFT's default instead (see
/// [`LoraConfig::from_adapter_config`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank of the update `B A` (`r` / `lora_r`).
    #[serde(alias = "lora_r", default = "default_r")]
    pub r: usize,
    /// Scale numerator: the update is multiplied by `lora_alpha / r` (or `/ √r` with rsLoRA).
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    /// Dropout probability on the input of the LoRA branch, in training only.
    #[serde(default = "default_dropout")]
    pub lora_dropout: f64,
    /// Layers to adapt; `None` takes PEFT's default for the architecture (`q_proj`, `v_proj`
    /// for Llama/Qwen2/Mistral, `c_attn` for GPT-2).
    #[serde(alias = "lora_target_modules", default)]
    pub target_modules: Option<TargetModules>,
    /// Layers trained in full next to the adapters (PEFT's `modules_to_save`): a trainable
    /// copy replaces the layer while adapters are enabled, the frozen original serves the
    /// adapter-disabled forward. Names are matched as in [`TargetModules::Names`].
    #[serde(alias = "lora_modules_to_save", default)]
    pub modules_to_save: Option<Vec<String>>,
    /// rsLoRA: scale `lora_alpha / √r` instead of `lora_alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// PEFT's flag for layers whose weight is stored `[in, out]` (GPT-2's `Conv1D`). The
    /// layout is known from the architecture, so this is only recorded: it is written as
    /// `true` for GPT-2 and `false` otherwise, as PEFT corrects it.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// DoRA (PEFT's weight-decomposed LoRA): each adapted layer also trains a magnitude per
    /// output, `x ↦ (m / ‖W + scale · B A‖) ⊙ (x (W + scale · B A)ᵀ) + b`.
    #[serde(default)]
    pub use_dora: bool,
    /// TRL's `load_in_4bit` (QLoRA). The base is quantized by
    /// [`CausalLm::quantize_4bit`](crate::CausalLm::quantize_4bit), not by the adapter's
    /// settings: `true` is refused with [`ModelError::UnsupportedLora`] saying so.
    #[serde(default)]
    pub load_in_4bit: bool,
    /// TRL's `load_in_8bit`. 8-bit bases are not implemented: `true` is refused.
    #[serde(default)]
    pub load_in_8bit: bool,
    /// Initialisation of new adapters.
    #[serde(default)]
    pub init_lora_weights: InitLoraWeights,
    /// Per-layer rank overrides: a key matches a layer whose name ends with it (a regular
    /// expression, as PEFT's `rank_pattern`).
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-layer `lora_alpha` overrides, matched as `rank_pattern`.
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: default_r(),
            lora_alpha: default_alpha(),
            lora_dropout: default_dropout(),
            target_modules: None,
            modules_to_save: None,
            use_rslora: false,
            fan_in_fan_out: false,
            use_dora: false,
            load_in_4bit: false,
            load_in_8bit: false,
            init_lora_weights: InitLoraWeights::Default,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
        }
    }
}

/// PEFT's `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` entry for the architecture; an
/// error, as in PEFT, for a family PEFT has no default for (Phi-3, OLMo 2, SmolLM3): their
/// adapters must name `target_modules`.
pub fn default_target_modules(architecture: Architecture) -> Result<Vec<String>, ModelError> {
    let family = crate::families::by_architecture(architecture);
    match family.peft_targets {
        Some(names) => Ok(names.iter().map(|s| s.to_string()).collect()),
        None => Err(ModelError::InvalidConfig {
            key: "target_modules".into(),
            reason: format!(
                "PEFT has no default LoRA target modules for model_type `{}`; name them \
                 (e.g. lora_target_modules = \"all-linear\")",
                family.model_types[0]
            ),
        }),
    }
}

/// The adapter scale `alpha / r`, or `alpha / √r` with rsLoRA (PEFT's `scaling`).
pub fn lora_scale(alpha: f64, r: usize, use_rslora: bool) -> f64 {
    if use_rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}

/// Whether `name` ends with the pattern `key` at a module boundary (PEFT's `get_pattern_key`).
fn pattern_matches(key: &str, name: &str) -> Result<bool, ModelError> {
    let regex = regex::Regex::new(&format!(r"^(?:.*\.)?(?:{key})$")).map_err(|e| {
        ModelError::InvalidLoraConfig {
            key: "rank_pattern / alpha_pattern".into(),
            reason: format!("`{key}` is not a regular expression: {e}"),
        }
    })?;
    Ok(regex.is_match(name))
}

/// Rank, alpha and scale of one adapted layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerLora {
    /// Rank.
    pub r: usize,
    /// `lora_alpha` for this layer.
    pub alpha: f64,
    /// The factor applied to `B (A x)`.
    pub scale: f64,
}

impl LoraConfig {
    /// A config with rank `r` and `lora_alpha`, everything else default (dropout 0.05, the
    /// architecture's default targets).
    pub fn new(r: usize, lora_alpha: f64) -> Self {
        Self {
            r,
            lora_alpha,
            ..Self::default()
        }
    }

    /// Checks the values (rank ≥ 1, finite alpha, dropout in `[0, 1)`) and refuses what is not
    /// implemented here (quantization requested through the adapter's settings).
    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid = |key: &str, reason: String| ModelError::InvalidLoraConfig {
            key: key.into(),
            reason,
        };
        if self.load_in_4bit {
            return Err(ModelError::UnsupportedLora {
                option: "load_in_4bit".into(),
                value: "true".into(),
                reason: "an adapter's settings cannot quantize the base: call \
                         CausalLm::quantize_4bit on the base before attaching the adapter \
                         (sdpo-train's load_in_4bit does)"
                    .into(),
            });
        }
        if self.load_in_8bit {
            return Err(ModelError::UnsupportedLora {
                option: "load_in_8bit".into(),
                value: "true".into(),
                reason: "8-bit (LLM.int8) bases are not implemented; 4-bit ones are \
                         (CausalLm::quantize_4bit)"
                    .into(),
            });
        }
        if self.r == 0 {
            return Err(invalid("r", "the rank must be at least 1".into()));
        }
        if let Some((key, _)) = self.rank_pattern.iter().find(|(_, r)| **r == 0) {
            return Err(invalid("rank_pattern", format!("`{key}` has rank 0")));
        }
        if !self.lora_alpha.is_finite() || self.alpha_pattern.values().any(|a| !a.is_finite()) {
            return Err(invalid("lora_alpha", "must be a finite number".into()));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(invalid(
                "lora_dropout",
                format!("{} is not in [0, 1)", self.lora_dropout),
            ));
        }
        Ok(())
    }

    /// Rank, alpha and scale for the layer named `name` (full module name), applying
    /// `rank_pattern` and `alpha_pattern`.
    pub fn layer(&self, name: &str) -> Result<LayerLora, ModelError> {
        let mut r = self.r;
        for (key, value) in &self.rank_pattern {
            if pattern_matches(key, name)? {
                r = *value;
                break;
            }
        }
        let mut alpha = self.lora_alpha;
        for (key, value) in &self.alpha_pattern {
            if pattern_matches(key, name)? {
                alpha = *value;
                break;
            }
        }
        Ok(LayerLora {
            r,
            alpha,
            scale: lora_scale(alpha, r, self.use_rslora),
        })
    }
}
