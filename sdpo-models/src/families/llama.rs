//! `LlamaForCausalLM` (Llama 2/3.x, SmolLM/SmolLM2, TinyLlama), `MistralForCausalLM` (sliding
//! window included) and, through its bias switches, `Qwen2ForCausalLM`.
//!
//! Pre-norm decoder: RMSNorm → self-attention with rotate-half RoPE and grouped key/value heads
//! → residual → RMSNorm → SiLU-gated MLP → residual; final RMSNorm; output head (or the token
//! embedding when tied). Field names are the Hugging Face state-dict keys, so a checkpoint loads
//! without a remapping table.
//!
//! The resolution helpers here ([`LlamaLike`]) are shared by the families that extend Llama
//! (Qwen3, SmolLM3, OLMo 2, Phi-3, Gemma).

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::prelude::*;

use super::decoder::{DecoderLm, new_decoder_lm};
use super::parts::{GatedMlp, SelfAttention};
use super::{DecoderLayer, Family, self_attn_and_gated_mlp_linear_layers};
use crate::causal_lm::CausalLm;
use crate::config::{
    Activation, Architecture, LayerAttention, LayerRope, ModelConfig, QkNorm, positive, require,
    resolve_rope, unsupported,
};
use crate::error::ModelError;
use crate::hf_config::HfConfig;
use crate::init::Init;
use crate::precision::MatmulPrecision;
use crate::rope::RopeTables;
use crate::stack::AttentionInputs;

/// `LlamaForCausalLM` and `MistralForCausalLM`.
pub(crate) const LLAMA: Family = Family {
    model_types: &["llama", "mistral"],
    architecture: Architecture::Llama,
    resolve: resolve_llama,
    build: |c, init| CausalLm::Llama(new_decoder_lm(c, init)),
    peft_targets: Some(&["q_proj", "v_proj"]),
};

/// `Qwen2ForCausalLM`.
pub(crate) const QWEN2: Family = Family {
    model_types: &["qwen2"],
    architecture: Architecture::Qwen2,
    resolve: resolve_qwen2,
    build: |c, init| CausalLm::Qwen2(new_decoder_lm(c, init)),
    peft_targets: Some(&["q_proj", "v_proj"]),
};

/// `LlamaForCausalLM` / `Qwen2ForCausalLM`.
pub type LlamaForCausalLm = DecoderLm<LlamaDecoderLayer>;

/// One decoder block (`model.layers.N`).
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    /// Attention projections (and query/key norms: Qwen3).
    pub self_attn: SelfAttention,
    /// Gated MLP.
    pub mlp: GatedMlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer for LlamaDecoderLayer {
    fn new(c: &ModelConfig, init: &mut Init) -> Self {
        Self {
            self_attn: SelfAttention::new(c, init),
            mlp: GatedMlp::new(c, init),
            input_layernorm: init.rms_norm(c.hidden_size, c.norm_eps, 0.0),
            post_attention_layernorm: init.rms_norm(c.hidden_size, c.norm_eps, 0.0),
        }
    }

    fn attention_inputs(
        &self,
        x: Tensor<3>,
        rope: Option<&RopeTables>,
        c: &ModelConfig,
    ) -> AttentionInputs {
        let [q, k, v] = self.self_attn.heads(self.input_layernorm.forward(x), c);
        AttentionInputs::rotated(q, k, v, rope)
    }

    fn after_attention(&self, x: Tensor<3>, attention: Tensor<3>, c: &ModelConfig) -> Tensor<3> {
        let x = x + self.self_attn.output(attention, c);
        let mlp = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()), c);
        x + mlp
    }

    self_attn_and_gated_mlp_linear_layers!();
}

/// The `config.json` keys every Llama-shaped family reads the same way.
pub(crate) struct LlamaLike<'a> {
    pub(crate) hf: &'a HfConfig,
    pub(crate) model_type: &'a str,
    /// The family rotates only part of each head (`partial_rotary_factor`, Phi-3).
    pub(crate) partial_rotary: bool,
}

impl<'a> LlamaLike<'a> {
    /// The reader for `hf` of `model_type`.
    pub(crate) fn new(hf: &'a HfConfig, model_type: &'a str) -> Self {
        Self {
            hf,
            model_type,
            partial_rotary: false,
        }
    }
}

impl LlamaLike<'_> {
    /// The resolved config with Llama's defaults (SiLU, no biases, full attention with the
    /// global RoPE on every layer, plain RMSNorm); families adjust the fields they differ in.
    pub(crate) fn resolve(&self) -> Result<ModelConfig, ModelError> {
        let (hf, model_type) = (self.hf, self.model_type);
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
        let factor = self.partial_rotary_factor().unwrap_or(1.0);
        if factor != 1.0 && !self.partial_rotary {
            // Llama's RoPE rotates whole heads.
            return Err(unsupported(model_type, "partial_rotary_factor", factor));
        }
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(ModelError::InvalidConfig {
                key: "partial_rotary_factor".into(),
                reason: format!("{factor} is not in (0, 1]"),
            });
        }
        // transformers: `int(head_dim * partial_rotary_factor)`.
        let rotary_dim = (head_dim as f64 * factor) as usize;
        if let Some(tp) = hf.extra_usize("pretraining_tp").filter(|tp| *tp != 1) {
            return Err(unsupported(model_type, "pretraining_tp", tp));
        }
        let num_hidden_layers = require(hf.num_hidden_layers, model_type, "num_hidden_layers")?;
        let attention_bias = hf.attention_bias.unwrap_or(false);
        Ok(ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: positive(
                "vocab_size",
                require(hf.vocab_size, model_type, "vocab_size")?,
            )?,
            hidden_size,
            intermediate_size: positive(
                "intermediate_size",
                require(hf.intermediate_size, model_type, "intermediate_size")?,
            )?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(2048),
            norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
            rope: Some(resolve_rope(hf, model_type)?),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            qkv_bias: attention_bias,
            o_bias: attention_bias,
            mlp_bias: hf.mlp_bias.unwrap_or(false),
            activation: Activation::Silu,
            qk_norm: QkNorm::None,
            attention_scale: (head_dim as f64).powf(-0.5),
            layers: vec![
                LayerAttention {
                    window: None,
                    rope: LayerRope::Global,
                };
                num_hidden_layers
            ],
            local_rope: None,
            rotary_dim,
            attn_logit_softcap: None,
            final_logit_softcap: None,
            embedding_scale: None,
            norm_weight_offset: 0.0,
            initializer_range: hf.initializer_range.unwrap_or(0.02),
            hf: hf.clone(),
            matmul_precision: MatmulPrecision::F32,
        })
    }

    /// `partial_rotary_factor`, top level (transformers 4) or in `rope_parameters` (5).
    pub(crate) fn partial_rotary_factor(&self) -> Option<f64> {
        self.hf.partial_rotary_factor.or_else(|| {
            self.hf
                .rope_parameters
                .as_ref()
                .and_then(|p| p.extra.get("partial_rotary_factor"))
                .and_then(serde_json::Value::as_f64)
        })
    }

    /// `sliding_window` (null or absent: none), unless `use_sliding_window` is false.
    pub(crate) fn sliding_window(&self) -> Result<Option<usize>, ModelError> {
        if self.hf.use_sliding_window == Some(false) {
            return Ok(None);
        }
        match self.hf.sliding_window.as_ref().filter(|w| !w.is_null()) {
            None => Ok(None),
            Some(w) => w
                .as_u64()
                .filter(|w| *w > 0)
                .map(|w| Some(w as usize))
                .ok_or_else(|| ModelError::InvalidConfig {
                    key: "sliding_window".into(),
                    reason: format!("{w} is not a positive integer"),
                }),
        }
    }

    /// The window of each layer from `layer_types` (`sliding_attention` / `full_attention`);
    /// without `layer_types`, every layer slides when a window is set.
    pub(crate) fn layer_windows(&self, layers: usize) -> Result<Vec<Option<usize>>, ModelError> {
        let window = self.sliding_window()?;
        let Some(types) = &self.hf.layer_types else {
            return Ok(vec![window; layers]);
        };
        if types.len() != layers {
            return Err(ModelError::InvalidConfig {
                key: "layer_types".into(),
                reason: format!("{} entries for num_hidden_layers = {layers}", types.len()),
            });
        }
        types
            .iter()
            .map(|kind| match kind.as_str() {
                "full_attention" => Ok(None),
                "sliding_attention" => Ok(window),
                other => Err(unsupported(self.model_type, "layer_types", other)),
            })
            .collect()
    }
}

/// `c` with layer `i` sliding over `windows[i]` (`None`: full attention).
pub(crate) fn with_windows(mut c: ModelConfig, windows: Vec<Option<usize>>) -> ModelConfig {
    for (layer, window) in c.layers.iter_mut().zip(windows) {
        layer.window = window;
    }
    c
}

fn resolve_llama(hf: &HfConfig, model_type: &str) -> Result<ModelConfig, ModelError> {
    let like = LlamaLike::new(hf, model_type);
    let c = like.resolve()?;
    if model_type == "llama" {
        // transformers' Llama has no sliding window; a key asking for one is a mistake.
        if let Some(window) = hf.sliding_window.as_ref().filter(|w| !w.is_null()) {
            return Err(unsupported(model_type, "sliding_window", window));
        }
        return Ok(c);
    }
    // Mistral: every layer slides when `sliding_window` is set.
    let windows = like.layer_windows(c.num_hidden_layers)?;
    Ok(with_windows(c, windows))
}

fn resolve_qwen2(hf: &HfConfig, model_type: &str) -> Result<ModelConfig, ModelError> {
    let like = LlamaLike::new(hf, model_type);
    let mut c = like.resolve()?;
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
    // Qwen2 hard-codes q/k/v biases and no o_proj or MLP bias.
    c.architecture = Architecture::Qwen2;
    c.qkv_bias = true;
    c.o_bias = false;
    c.mlp_bias = false;
    Ok(c)
}
