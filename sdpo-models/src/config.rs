//! The resolved model configuration: every default applied, every unsupported option rejected.
//!
//! [`HfConfig`] mirrors the file; [`ModelConfig`] is what modules are built from. The
//! conversion (`TryFrom<HfConfig>`) is the one place that knows the defaults of each
//! transformers config class and which options this crate implements.

use serde_json::Value;

use crate::error::ModelError;
use crate::hf_config::HfConfig;
use crate::precision::MatmulPrecision;
pub use crate::rope::{RopeConfig, RopeScaling};
pub(crate) use crate::rope::{resolve_rope, resolve_rope_params};

/// Which module implementation a config selects (one per file in `src/families/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM` (also `MistralForCausalLM`, sliding window included).
    Llama,
    /// `Qwen2ForCausalLM`: Llama with q/k/v biases.
    Qwen2,
    /// `GPT2LMHeadModel`.
    Gpt2,
    /// `Qwen3ForCausalLM`: Llama with per-head query/key norms.
    Qwen3,
    /// `SmolLM3ForCausalLM`: Llama with RoPE-free (NoPE) layers.
    SmolLm3,
    /// `Olmo2ForCausalLM`: norms after the sublayers, whole-width query/key norms.
    Olmo2,
    /// `Phi3ForCausalLM`: fused projections, partial RoPE.
    Phi3,
    /// `Gemma2ForCausalLM`: sandwich norms, soft-capping, alternating sliding windows.
    Gemma2,
    /// `Gemma3ForCausalLM` (`gemma3_text`): Gemma 2 with query/key norms and a local RoPE.
    Gemma3,
}

/// Which rotary table a layer's attention uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerRope {
    /// The model's RoPE ([`ModelConfig::rope`]).
    Global,
    /// The local RoPE of sliding-window layers ([`ModelConfig::local_rope`], Gemma 3).
    Local,
    /// No rotary embedding (SmolLM3's NoPE layers; GPT-2, which has learned positions).
    None,
}

/// RMSNorm of the queries and keys before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// None (Llama, Qwen2, Mistral, Phi-3, Gemma 2, SmolLM3).
    None,
    /// Over each head's `head_dim` values (`q_norm`/`k_norm` of width `head_dim`: Qwen3, Gemma 3).
    PerHead,
    /// Over the whole projection (`heads * head_dim` wide: OLMo 2).
    Whole,
}

/// How one decoder layer attends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerAttention {
    /// Sliding window: a query sees itself and the `window - 1` positions before it; `None`
    /// for full causal attention.
    pub window: Option<usize>,
    /// The rotary table applied to its queries and keys.
    pub rope: LayerRope,
}

/// Activation of the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU in a gated MLP (Llama, Qwen2).
    Silu,
    /// GELU, tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// GELU, exact (erf).
    Gelu,
}

/// A fully resolved model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The module implementation to build.
    pub architecture: Architecture,
    /// Vocabulary size (rows of the embedding, columns of the logits).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (divides `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Longest sequence the model accepts (GPT-2: number of learned positions).
    pub max_position_embeddings: usize,
    /// Epsilon of the normalisation layers.
    pub norm_eps: f64,
    /// RoPE settings (`None` for GPT-2, which has learned positions).
    pub rope: Option<RopeConfig>,
    /// Output head shares the token embedding matrix (no `lm_head.weight` in the file).
    pub tie_word_embeddings: bool,
    /// Biases on the q/k/v projections (GPT-2: on every Conv1D).
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// MLP activation.
    pub activation: Activation,
    /// Factor applied to `q·kᵀ` before the softmax.
    pub attention_scale: f64,
    /// RMSNorm of queries and keys (`self_attn.q_norm`, `self_attn.k_norm`).
    pub qk_norm: QkNorm,
    /// Per layer: sliding window and rotary table (`num_hidden_layers` entries).
    pub layers: Vec<LayerAttention>,
    /// RoPE of the sliding-window layers when it differs from [`ModelConfig::rope`] (Gemma 3).
    pub local_rope: Option<RopeConfig>,
    /// Leading dimensions of each head that RoPE rotates (`head_dim` unless
    /// `partial_rotary_factor` < 1).
    pub rotary_dim: usize,
    /// `cap · tanh(scores / cap)` on the attention scores before the mask (Gemma 2).
    pub attn_logit_softcap: Option<f64>,
    /// `cap · tanh(logits / cap)` on the output logits (Gemma 2).
    pub final_logit_softcap: Option<f64>,
    /// Factor on the token embeddings (Gemma: `sqrt(hidden_size)`).
    pub embedding_scale: Option<f64>,
    /// Added to every RMSNorm weight before it scales (Gemma's `x · (1 + w)`: 1; else 0).
    pub norm_weight_offset: f64,
    /// Standard deviation used by [`crate::CausalLm::from_config`].
    pub initializer_range: f64,
    /// The mirror this was resolved from (written back by `save_pretrained`).
    pub hf: HfConfig,
    /// The dtype matrix products run in (float32 unless set with
    /// [`crate::CausalLm::with_matmul_precision`]); not part of `config.json`.
    pub matmul_precision: MatmulPrecision,
}

impl ModelConfig {
    /// Checks that the model can run sequences of `len` tokens: GPT-2's learned positions end at
    /// `max_position_embeddings` (RoPE models extrapolate, so only GPT-2 is limited).
    pub fn check_sequence_length(&self, len: usize) -> Result<(), ModelError> {
        if matches!(self.architecture, Architecture::Gpt2) && len > self.max_position_embeddings {
            return Err(ModelError::InvalidInput(format!(
                "sequences of {len} tokens exceed the model's {} learned positions (n_positions)",
                self.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// The layer-independent checks every family's resolution ends with: one attention
    /// description per layer, windows of at least one token, a rotary table for every layer
    /// that asks for one, and an even rotary width.
    pub(crate) fn check_layers(&self) -> Result<(), ModelError> {
        let invalid = |key: &str, reason: String| ModelError::InvalidConfig {
            key: key.to_string(),
            reason,
        };
        if self.layers.len() != self.num_hidden_layers {
            return Err(invalid(
                "layer_types",
                format!(
                    "{} entries for num_hidden_layers = {}",
                    self.layers.len(),
                    self.num_hidden_layers
                ),
            ));
        }
        if self.layers.iter().any(|l| l.window == Some(0)) {
            return Err(invalid("sliding_window", "must be positive".into()));
        }
        let needs = |kind: LayerRope| self.layers.iter().any(|l| l.rope == kind);
        if (needs(LayerRope::Global) && self.rope.is_none())
            || (needs(LayerRope::Local) && self.local_rope.is_none())
        {
            return Err(invalid(
                "rope_parameters",
                "a layer uses RoPE but none is configured".into(),
            ));
        }
        if !self.rotary_dim.is_multiple_of(2) || self.rotary_dim > self.head_dim {
            return Err(invalid(
                "partial_rotary_factor",
                format!(
                    "rotates {} of {} dimensions; RoPE rotates pairs within a head",
                    self.rotary_dim, self.head_dim
                ),
            ));
        }
        for rope in self.rope.iter().chain(&self.local_rope) {
            if let RopeScaling::LongRope {
                short_factor,
                long_factor,
                ..
            } = &rope.scaling
            {
                for (name, factors) in
                    [("short_factor", short_factor), ("long_factor", long_factor)]
                {
                    if factors.len() != self.rotary_dim / 2 {
                        return Err(invalid(
                            &format!("rope_parameters.{name}"),
                            format!(
                                "{} factors for {} rotated frequency pairs",
                                factors.len(),
                                self.rotary_dim / 2
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The attention of layer `layer`.
    ///
    /// # Panics
    /// If `layer >= num_hidden_layers`.
    pub fn layer_attention(&self, layer: usize) -> LayerAttention {
        self.layers[layer]
    }

    /// Checks that every id of a tokenizer with `tokens` entries is a row of the embedding.
    pub fn check_vocab_covers(&self, tokens: usize) -> Result<(), ModelError> {
        if self.vocab_size < tokens {
            return Err(ModelError::InvalidInput(format!(
                "vocab_size {} is smaller than the tokenizer's {tokens} tokens",
                self.vocab_size
            )));
        }
        Ok(())
    }
}

pub(crate) fn require(
    value: Option<usize>,
    model_type: &str,
    key: &'static str,
) -> Result<usize, ModelError> {
    value.ok_or_else(|| ModelError::MissingConfigKey {
        model_type: model_type.to_string(),
        key,
    })
}

pub(crate) fn unsupported(model_type: &str, option: &str, value: impl ToString) -> ModelError {
    ModelError::UnsupportedOption {
        model_type: model_type.to_string(),
        option: option.to_string(),
        value: value.to_string(),
    }
}

pub(crate) fn positive(key: &str, value: usize) -> Result<usize, ModelError> {
    if value == 0 {
        return Err(ModelError::InvalidConfig {
            key: key.to_string(),
            reason: "must be positive".into(),
        });
    }
    Ok(value)
}

impl HfConfig {
    /// A key this mirror has no field for, as a number (`None` when absent or null).
    pub(crate) fn extra_f64(&self, key: &str) -> Option<f64> {
        self.extra.get(key).and_then(Value::as_f64)
    }

    /// A key this mirror has no field for, as a string.
    pub(crate) fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Value::as_str)
    }

    /// A key this mirror has no field for, as an unsigned integer.
    pub(crate) fn extra_usize(&self, key: &str) -> Option<usize> {
        self.extra
            .get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
    }
}

impl TryFrom<HfConfig> for ModelConfig {
    type Error = ModelError;

    fn try_from(hf: HfConfig) -> Result<Self, Self::Error> {
        let model_type = hf
            .model_type
            .clone()
            .ok_or_else(|| ModelError::MissingConfigKey {
                model_type: "any".into(),
                key: "model_type",
            })?;
        let family = crate::families::by_model_type(&model_type).ok_or(
            ModelError::UnsupportedModelType {
                model_type: model_type.clone(),
            },
        )?;
        check_declared_sizes(&hf)?;
        let config = (family.resolve)(&hf, &model_type)?;
        config.check_layers()?;
        if !(config.norm_eps.is_finite() && config.norm_eps > 0.0) {
            return Err(ModelError::InvalidConfig {
                key: "rms_norm_eps".into(),
                reason: format!(
                    "the norm's epsilon {} is not a positive number",
                    config.norm_eps
                ),
            });
        }
        Ok(config)
    }
}

/// The most decoder layers a config may declare (the largest published models have ~130).
pub const MAX_LAYERS: usize = 4096;

/// The largest width a config may declare (hidden size, MLP width, vocabulary, heads, head
/// size; the largest published vocabularies are ~260K).
pub const MAX_WIDTH: usize = 1 << 24;

/// Refuses sizes no model has before anything is built from them: the layer list is allocated
/// from `num_hidden_layers`, and products of widths must not overflow.
fn check_declared_sizes(hf: &HfConfig) -> Result<(), ModelError> {
    let too_big = |key: &str, value: usize, bound: usize| ModelError::InvalidConfig {
        key: key.into(),
        reason: format!("{value} is larger than any model's ({bound} at most)"),
    };
    for (key, value) in [
        ("num_hidden_layers", hf.num_hidden_layers),
        ("n_layer", hf.n_layer),
    ] {
        if let Some(value) = value.filter(|&v| v > MAX_LAYERS) {
            return Err(too_big(key, value, MAX_LAYERS));
        }
    }
    let widths = [
        ("hidden_size", hf.hidden_size),
        ("intermediate_size", hf.intermediate_size),
        ("vocab_size", hf.vocab_size),
        ("num_attention_heads", hf.num_attention_heads),
        ("num_key_value_heads", hf.num_key_value_heads),
        ("head_dim", hf.head_dim),
        ("n_embd", hf.n_embd),
        ("n_inner", hf.n_inner),
        ("n_head", hf.n_head),
        ("n_positions", hf.n_positions),
        ("max_position_embeddings", hf.max_position_embeddings),
    ];
    for (key, value) in widths {
        if let Some(value) = value.filter(|&v| v > MAX_WIDTH) {
            return Err(too_big(key, value, MAX_WIDTH));
        }
    }
    Ok(())
}

impl ModelConfig {
    /// Reads `<dir>/config.json` and resolves it; an error in its values names the file.
    pub fn from_pretrained_dir(dir: &std::path::Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        Self::try_from(HfConfig::from_file(&path)?).map_err(|source| ModelError::InFile {
            path,
            source: Box::new(source),
        })
    }

    /// Number of query heads sharing one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}
