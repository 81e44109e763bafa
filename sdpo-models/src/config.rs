//! The resolved model configuration: every default applied, every unsupported option rejected.
//!
//! [`HfConfig`] mirrors the file; [`ModelConfig`] is what modules are built from. The
//! conversion (`TryFrom<HfConfig>`) is the one place that knows the defaults of each
//! transformers config class and which options this crate implements.

use serde_json::Value;

use crate::error::ModelError;
use crate::hf_config::{HfConfig, HfRopeParameters};
use crate::precision::MatmulPrecision;

/// Which module implementation a config selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM` (also `model_type: mistral` without sliding window).
    Llama,
    /// `Qwen2ForCausalLM`: Llama with q/k/v biases.
    Qwen2,
    /// `GPT2LMHeadModel`.
    Gpt2,
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: default`).
    None,
    /// `linear`: every inverse frequency divided by `factor`.
    Linear {
        /// Divisor of the inverse frequencies.
        factor: f64,
    },
    /// `llama3`: low frequencies divided by `factor`, high ones kept, smooth in between.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Lower edge of the smoothing band (in units of the original context).
        low_freq_factor: f64,
        /// Upper edge of the smoothing band.
        high_freq_factor: f64,
        /// Pre-training context length.
        original_max_position_embeddings: usize,
    },
}

/// Rotary position embedding settings (Llama, Qwen2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    /// Base of the frequencies (`rope_theta`).
    pub theta: f64,
    /// Frequency rescaling.
    pub scaling: RopeScaling,
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

fn require(value: Option<usize>, model_type: &str, key: &'static str) -> Result<usize, ModelError> {
    value.ok_or_else(|| ModelError::MissingConfigKey {
        model_type: model_type.to_string(),
        key,
    })
}

fn unsupported(model_type: &str, option: &str, value: impl ToString) -> ModelError {
    ModelError::UnsupportedOption {
        model_type: model_type.to_string(),
        option: option.to_string(),
        value: value.to_string(),
    }
}

fn positive(key: &str, value: usize) -> Result<usize, ModelError> {
    if value == 0 {
        return Err(ModelError::InvalidConfig {
            key: key.to_string(),
            reason: "must be positive".into(),
        });
    }
    Ok(value)
}

/// Resolves `rope_parameters` (v5) or `rope_theta` + `rope_scaling` (v4).
fn resolve_rope(hf: &HfConfig, model_type: &str) -> Result<RopeConfig, ModelError> {
    let params: Option<&HfRopeParameters> =
        hf.rope_parameters.as_ref().or(hf.rope_scaling.as_ref());
    let theta = params
        .and_then(|p| p.rope_theta)
        .or(hf.rope_theta)
        .unwrap_or(10_000.0);
    if let Some(f) = hf.partial_rotary_factor.filter(|f| *f != 1.0) {
        return Err(unsupported(model_type, "partial_rotary_factor", f));
    }
    let Some(params) = params else {
        return Ok(RopeConfig {
            theta,
            scaling: RopeScaling::None,
        });
    };
    let key = if hf.rope_parameters.is_some() {
        "rope_parameters"
    } else {
        "rope_scaling"
    };
    let need = |v: Option<f64>, name: &str| {
        v.ok_or_else(|| ModelError::InvalidConfig {
            key: format!("{key}.{name}"),
            reason: format!("rope type `{}` needs it", params.kind()),
        })
    };
    let scaling = match params.kind() {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need(params.factor, "factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need(params.factor, "factor")?,
            low_freq_factor: need(params.low_freq_factor, "low_freq_factor")?,
            high_freq_factor: need(params.high_freq_factor, "high_freq_factor")?,
            original_max_position_embeddings: params
                .original_max_position_embeddings
                .or(hf.max_position_embeddings)
                .ok_or_else(|| ModelError::InvalidConfig {
                    key: format!("{key}.original_max_position_embeddings"),
                    reason: "rope type `llama3` needs it".into(),
                })?,
        },
        other => return Err(unsupported(model_type, &format!("{key}.rope_type"), other)),
    };
    Ok(RopeConfig { theta, scaling })
}

fn resolve_llama_family(hf: &HfConfig, model_type: &str) -> Result<ModelConfig, ModelError> {
    let hidden_size = positive(
        "hidden_size",
        require(hf.hidden_size, model_type, "hidden_size")?,
    )?;
    let num_attention_heads = positive(
        "num_attention_heads",
        require(hf.num_attention_heads, model_type, "num_attention_heads")?,
    )?;
    let num_key_value_heads = hf.num_key_value_heads.unwrap_or(num_attention_heads);
    if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
        return Err(ModelError::InvalidConfig {
            key: "num_key_value_heads".into(),
            reason: format!(
                "{num_key_value_heads} does not divide num_attention_heads = {num_attention_heads}"
            ),
        });
    }
    let head_dim = positive(
        "head_dim",
        hf.head_dim.unwrap_or(hidden_size / num_attention_heads),
    )?;
    if head_dim % 2 != 0 {
        return Err(ModelError::InvalidConfig {
            key: "head_dim".into(),
            reason: format!("{head_dim} is odd; RoPE rotates pairs"),
        });
    }
    if let Some(act) = hf.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(unsupported(model_type, "hidden_act", act));
    }
    if let Some(tp) = hf.pretraining_tp().filter(|tp| *tp != 1) {
        return Err(unsupported(model_type, "pretraining_tp", tp));
    }
    let is_qwen2 = model_type == "qwen2";
    if is_qwen2 {
        if hf.use_sliding_window == Some(true) {
            return Err(unsupported(model_type, "use_sliding_window", true));
        }
        if let Some(kind) = hf
            .layer_types
            .iter()
            .flatten()
            .find(|k| k.as_str() != "full_attention")
        {
            return Err(unsupported(model_type, "layer_types", kind));
        }
    } else if let Some(window) = hf.sliding_window.as_ref().filter(|w| !w.is_null()) {
        return Err(unsupported(model_type, "sliding_window", window));
    }
    let attention_bias = hf.attention_bias.unwrap_or(false);
    Ok(ModelConfig {
        architecture: if is_qwen2 {
            Architecture::Qwen2
        } else {
            Architecture::Llama
        },
        vocab_size: positive(
            "vocab_size",
            require(hf.vocab_size, model_type, "vocab_size")?,
        )?,
        hidden_size,
        intermediate_size: positive(
            "intermediate_size",
            require(hf.intermediate_size, model_type, "intermediate_size")?,
        )?,
        num_hidden_layers: require(hf.num_hidden_layers, model_type, "num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        max_position_embeddings: hf.max_position_embeddings.unwrap_or(2048),
        norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
        rope: Some(resolve_rope(hf, model_type)?),
        tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
        // Qwen2 hard-codes q/k/v biases and no o_proj bias; Llama's `attention_bias` covers all four.
        qkv_bias: is_qwen2 || attention_bias,
        o_bias: !is_qwen2 && attention_bias,
        mlp_bias: !is_qwen2 && hf.mlp_bias.unwrap_or(false),
        activation: Activation::Silu,
        attention_scale: (head_dim as f64).powf(-0.5),
        initializer_range: hf.initializer_range.unwrap_or(0.02),
        hf: hf.clone(),
        matmul_precision: MatmulPrecision::F32,
    })
}

fn resolve_gpt2(hf: &HfConfig) -> Result<ModelConfig, ModelError> {
    let model_type = "gpt2";
    let hidden_size = positive("n_embd", require(hf.n_embd, model_type, "n_embd")?)?;
    let heads = positive("n_head", require(hf.n_head, model_type, "n_head")?)?;
    if hidden_size % heads != 0 {
        return Err(ModelError::InvalidConfig {
            key: "n_head".into(),
            reason: format!("{heads} does not divide n_embd = {hidden_size}"),
        });
    }
    let activation = match hf.activation_function.as_deref().unwrap_or("gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        other => return Err(unsupported(model_type, "activation_function", other)),
    };
    if hf.scale_attn_by_inverse_layer_idx == Some(true) {
        return Err(unsupported(
            model_type,
            "scale_attn_by_inverse_layer_idx",
            true,
        ));
    }
    if hf.add_cross_attention == Some(true) {
        return Err(unsupported(model_type, "add_cross_attention", true));
    }
    let head_dim = hidden_size / heads;
    Ok(ModelConfig {
        architecture: Architecture::Gpt2,
        vocab_size: positive(
            "vocab_size",
            require(hf.vocab_size, model_type, "vocab_size")?,
        )?,
        hidden_size,
        intermediate_size: hf.n_inner.unwrap_or(4 * hidden_size),
        num_hidden_layers: require(hf.n_layer, model_type, "n_layer")?,
        num_attention_heads: heads,
        num_key_value_heads: heads,
        head_dim,
        max_position_embeddings: positive(
            "n_positions",
            require(hf.n_positions, model_type, "n_positions")?,
        )?,
        norm_eps: hf.layer_norm_epsilon.unwrap_or(1e-5),
        rope: None,
        tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(true),
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        activation,
        attention_scale: if hf.scale_attn_weights.unwrap_or(true) {
            (head_dim as f64).powf(-0.5)
        } else {
            1.0
        },
        initializer_range: hf.initializer_range.unwrap_or(0.02),
        hf: hf.clone(),
        matmul_precision: MatmulPrecision::F32,
    })
}

impl HfConfig {
    fn pretraining_tp(&self) -> Option<u64> {
        self.extra.get("pretraining_tp").and_then(Value::as_u64)
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
        match model_type.as_str() {
            "llama" | "mistral" | "qwen2" => resolve_llama_family(&hf, &model_type),
            "gpt2" => resolve_gpt2(&hf),
            _ => Err(ModelError::UnsupportedModelType { model_type }),
        }
    }
}

impl ModelConfig {
    /// Reads `<dir>/config.json` and resolves it.
    pub fn from_pretrained_dir(dir: &std::path::Path) -> Result<Self, ModelError> {
        Self::try_from(HfConfig::from_file(&dir.join("config.json"))?)
    }

    /// Number of query heads sharing one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}
