//! A serde mirror of Hugging Face `config.json`, with HF's own key names.
//!
//! One struct covers the three supported families (Llama/Mistral, Qwen2, GPT-2) in both the
//! transformers 4 layout (`rope_theta`, `rope_scaling`, `torch_dtype`) and the transformers 5
//! layout (`rope_parameters`, `dtype`). Every key is optional here; [`crate::ModelConfig`]
//! decides what is required. The parsed JSON object is kept, so that saving writes back every key
//! the file had, including ones this crate ignores.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ModelError;

/// RoPE settings: transformers 5's `rope_parameters` or transformers 4's `rope_scaling`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HfRopeParameters {
    /// `default`, `linear`, `llama3`, ... (transformers 4.4x and 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    /// Older name of `rope_type` (transformers 4, `rope_scaling.type`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub legacy_type: Option<String>,
    /// RoPE base frequency (transformers 5 keeps it here rather than at the top level).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Scaling factor (`linear`, `llama3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// `llama3`: wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    /// `llama3`: wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    /// `llama3`: the context length the model was pre-trained with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    /// Any other key (kept so that unsupported ones can be named in errors).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl HfRopeParameters {
    /// The rope type, from `rope_type` or the legacy `type`; `default` when neither is set.
    pub fn kind(&self) -> &str {
        self.rope_type
            .as_deref()
            .or(self.legacy_type.as_deref())
            .unwrap_or("default")
    }
}

/// `config.json` as written by transformers, for `llama`, `mistral`, `qwen2` and `gpt2`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HfConfig {
    /// Architecture family: `llama`, `mistral`, `qwen2` or `gpt2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// Model classes, e.g. `["LlamaForCausalLM"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// Vocabulary size (all families).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    /// Model width (Llama, Qwen2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    /// MLP width (Llama, Qwen2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<usize>,
    /// Number of decoder layers (Llama, Qwen2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_hidden_layers: Option<usize>,
    /// Number of query heads (Llama, Qwen2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_attention_heads: Option<usize>,
    /// Number of key/value heads, GQA (Llama, Qwen2); defaults to `num_attention_heads`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Longest supported sequence (Llama, Qwen2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
    /// RMSNorm epsilon (Llama, Qwen2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f64>,
    /// MLP activation (Llama, Qwen2); only `silu` is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    /// Llama: biases on q/k/v/o projections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// Llama: biases on the MLP projections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// transformers 4: RoPE base at the top level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// transformers 4: RoPE scaling (`null` = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<HfRopeParameters>,
    /// transformers 5: RoPE base and scaling in one object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<HfRopeParameters>,
    /// Fraction of each head that is rotated; only 1.0 is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_rotary_factor: Option<f64>,
    /// Qwen2: whether sliding-window attention is on (unsupported when true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    /// Mistral/Qwen2: window size (Mistral: unsupported unless `null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<Value>,
    /// transformers 5 (Qwen2): attention kind per layer; only `full_attention` is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// GPT-2: model width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_embd: Option<usize>,
    /// GPT-2: number of blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_layer: Option<usize>,
    /// GPT-2: number of heads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_head: Option<usize>,
    /// GPT-2: MLP width (`null` = 4 × `n_embd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_inner: Option<usize>,
    /// GPT-2: number of learned positions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_positions: Option<usize>,
    /// GPT-2: LayerNorm epsilon (default 1e-5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_norm_epsilon: Option<f64>,
    /// GPT-2: `gelu_new` (default), `gelu_pytorch_tanh` or `gelu`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_function: Option<String>,
    /// GPT-2: divide scores by √head_dim (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_attn_weights: Option<bool>,
    /// GPT-2: extra per-layer score scaling (unsupported when true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_attn_by_inverse_layer_idx: Option<bool>,
    /// GPT-2: encoder-decoder cross attention (unsupported when true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_cross_attention: Option<bool>,
    /// Whether the output head shares the token embedding matrix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    /// Standard deviation of the random initialisation (default 0.02).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initializer_range: Option<f64>,
    /// transformers 4: stored dtype (`float32`, `bfloat16`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// transformers 5: stored dtype.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Padding token id (an integer or `null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<Value>,
    /// Beginning-of-sequence token id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<Value>,
    /// End-of-sequence token id (an integer or a list of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<Value>,
    /// Every other key of the file, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
    /// The object as parsed, so that keys written as `null` survive a save.
    #[serde(skip)]
    raw: Map<String, Value>,
}

impl HfConfig {
    /// Parses the text of a `config.json`.
    ///
    /// The `path` is only used in the error message.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, ModelError> {
        let json_err = |source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        };
        let raw: Map<String, Value> = serde_json::from_str(text).map_err(json_err)?;
        // From the text, not the parsed map: the error then says the line and column.
        let mut config: HfConfig = serde_json::from_str(text).map_err(json_err)?;
        config.raw = raw;
        Ok(config)
    }

    /// Reads and parses `path` (usually `<checkpoint>/config.json`).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        Self::from_json_str(&crate::error::read_text(path)?, path)
    }

    /// The JSON object to write as `config.json`: the keys the file was read with, overlaid
    /// with the typed fields that are set. The stored dtype is rewritten to `float32` (the only
    /// dtype [`crate::CausalLm::save_pretrained`] writes), under the key(s) the source used.
    pub fn to_json_value(&self) -> Value {
        let mut out = self.raw.clone();
        if let Ok(Value::Object(typed)) = serde_json::to_value(self) {
            for (key, value) in typed {
                out.insert(key, value);
            }
        }
        let had_v5 = out.contains_key("dtype");
        let had_v4 = out.contains_key("torch_dtype");
        if had_v5 {
            out.insert("dtype".into(), Value::from("float32"));
        }
        if had_v4 || !had_v5 {
            out.insert("torch_dtype".into(), Value::from("float32"));
        }
        Value::Object(out)
    }
}
