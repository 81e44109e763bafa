//! `Gemma2ForCausalLM` and `Gemma3ForCausalLM` (`gemma3_text`).
//!
//! The Llama block with: RMSNorms that scale by `1 + w` (weights stored as offsets from 1),
//! a norm before and after each sublayer (`input_layernorm` / `post_attention_layernorm`
//! around the attention, `pre_feedforward_layernorm` / `post_feedforward_layernorm` around the
//! MLP, the post norms applied to the sublayer's output before the residual sum), embeddings
//! times `sqrt(hidden_size)`, a GELU (tanh) gated MLP, attention scaled by
//! `query_pre_attn_scalar^-1/2`, sliding-window and full layers from `layer_types`, and a tied
//! head. Gemma 2 soft-caps the attention scores and the logits (`cap · tanh(x / cap)`); Gemma 3
//! instead normalises each query and key head (`q_norm`, `k_norm`) and gives the sliding layers
//! their own RoPE base (`rope_parameters.sliding_attention`, transformers 4's
//! `rope_local_base_freq`).

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::prelude::*;

use super::decoder::{DecoderLm, new_decoder_lm};
use super::llama::{LlamaLike, with_windows};
use super::parts::{GatedMlp, SelfAttention, rms_norm};
use super::{DecoderLayer, Family, self_attn_and_gated_mlp_linear_layers};
use crate::causal_lm::CausalLm;
use crate::config::{
    Activation, Architecture, LayerRope, ModelConfig, QkNorm, resolve_rope_params, unsupported,
};
use crate::error::ModelError;
use crate::hf_config::{HfConfig, HfRopeParameters};
use crate::init::Init;
use crate::rope::RopeTables;
use crate::stack::AttentionInputs;

/// `Gemma2ForCausalLM`.
pub(crate) const GEMMA2: Family = Family {
    model_types: &["gemma2"],
    architecture: Architecture::Gemma2,
    resolve: |hf, model_type| resolve_gemma(hf, model_type, Generation::Two),
    build: |c, init| CausalLm::Gemma2(new_decoder_lm(c, init)),
    peft_targets: Some(&["q_proj", "v_proj"]),
};

/// `Gemma3ForCausalLM` (`model_type: gemma3_text`).
pub(crate) const GEMMA3: Family = Family {
    model_types: &["gemma3_text"],
    architecture: Architecture::Gemma3,
    resolve: |hf, model_type| resolve_gemma(hf, model_type, Generation::Three),
    build: |c, init| CausalLm::Gemma3(new_decoder_lm(c, init)),
    peft_targets: Some(&["q_proj", "v_proj"]),
};

/// `Gemma2ForCausalLM` / `Gemma3ForCausalLM`.
pub type GemmaForCausalLm = DecoderLm<GemmaDecoderLayer>;

/// One decoder block (`model.layers.N`).
#[derive(Module, Debug)]
pub struct GemmaDecoderLayer {
    /// Attention projections (Gemma 3: and per-head query/key norms).
    pub self_attn: SelfAttention,
    /// GELU (tanh) gated MLP.
    pub mlp: GatedMlp,
    /// Norm of the attention's input.
    pub input_layernorm: RmsNorm,
    /// Norm of the attention's output.
    pub post_attention_layernorm: RmsNorm,
    /// Norm of the MLP's input.
    pub pre_feedforward_layernorm: RmsNorm,
    /// Norm of the MLP's output.
    pub post_feedforward_layernorm: RmsNorm,
}

impl DecoderLayer for GemmaDecoderLayer {
    fn new(c: &ModelConfig, init: &mut Init) -> Self {
        let norm = |init: &mut Init| init.rms_norm(c.hidden_size, c.norm_eps, c.norm_weight_offset);
        Self {
            self_attn: SelfAttention::new(c, init),
            mlp: GatedMlp::new(c, init),
            input_layernorm: norm(init),
            post_attention_layernorm: norm(init),
            pre_feedforward_layernorm: norm(init),
            post_feedforward_layernorm: norm(init),
        }
    }

    fn attention_inputs(
        &self,
        x: Tensor<3>,
        rope: Option<&RopeTables>,
        c: &ModelConfig,
    ) -> AttentionInputs {
        let x = rms_norm(&self.input_layernorm, x, c.norm_weight_offset);
        let [q, k, v] = self.self_attn.heads(x, c);
        AttentionInputs::rotated(q, k, v, rope)
    }

    fn after_attention(&self, x: Tensor<3>, attention: Tensor<3>, c: &ModelConfig) -> Tensor<3> {
        let offset = c.norm_weight_offset;
        let attention = self.self_attn.output(attention, c);
        let x = x + rms_norm(&self.post_attention_layernorm, attention, offset);
        let mlp = self.mlp.forward(
            rms_norm(&self.pre_feedforward_layernorm, x.clone(), offset),
            c,
        );
        x + rms_norm(&self.post_feedforward_layernorm, mlp, offset)
    }

    self_attn_and_gated_mlp_linear_layers!();
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Generation {
    Two,
    Three,
}

fn resolve_gemma(
    hf: &HfConfig,
    model_type: &str,
    generation: Generation,
) -> Result<ModelConfig, ModelError> {
    // Gemma names its activation `hidden_activation`; `hidden_act` is a legacy alias.
    let mut plain = hf.clone();
    let activation = hf
        .extra_str("hidden_activation")
        .or(hf.hidden_act.as_deref())
        .unwrap_or("gelu_pytorch_tanh")
        .to_string();
    plain.hidden_act = None;
    let per_type_rope = hf
        .rope_parameters
        .as_ref()
        .filter(|p| p.extra.contains_key("full_attention"))
        .cloned();
    if per_type_rope.is_some() {
        plain.rope_parameters = None;
    }
    let like = LlamaLike::new(&plain, model_type);
    let mut c = like.resolve()?;
    c.hf = hf.clone();
    c.activation = match activation.as_str() {
        "gelu_pytorch_tanh" | "gelu_new" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        other => return Err(unsupported(model_type, "hidden_activation", other)),
    };
    if hf.extra.get("use_bidirectional_attention") == Some(&serde_json::Value::Bool(true)) {
        return Err(unsupported(model_type, "use_bidirectional_attention", true));
    }
    let scalar = hf.extra_f64("query_pre_attn_scalar").unwrap_or(256.0);
    if scalar <= 0.0 {
        return Err(ModelError::InvalidConfig {
            key: "query_pre_attn_scalar".into(),
            reason: format!("{scalar} is not positive"),
        });
    }
    c.attention_scale = scalar.powf(-0.5);
    c.embedding_scale = Some((c.hidden_size as f64).sqrt());
    c.norm_weight_offset = 1.0;
    c.tie_word_embeddings = hf.tie_word_embeddings.unwrap_or(true);
    let softcap = |key: &str| hf.extra_f64(key).filter(|cap| *cap > 0.0);
    match generation {
        Generation::Two => {
            c.architecture = Architecture::Gemma2;
            c.attn_logit_softcap = softcap("attn_logit_softcapping");
            c.final_logit_softcap = softcap("final_logit_softcapping");
        }
        Generation::Three => {
            c.architecture = Architecture::Gemma3;
            c.qk_norm = QkNorm::PerHead;
            for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
                if let Some(cap) = softcap(key) {
                    return Err(unsupported(model_type, key, cap));
                }
            }
        }
    }
    // Which layers slide: `layer_types`, else transformers' default pattern (Gemma 2: every
    // other layer from the first; Gemma 3: all but every `sliding_window_pattern`-th).
    let layers = c.num_hidden_layers;
    let windows = if hf.layer_types.is_some() {
        like.layer_windows(layers)?
    } else {
        let window = like.sliding_window()?;
        let pattern = match generation {
            Generation::Two => 2,
            Generation::Three => hf.extra_usize("sliding_window_pattern").unwrap_or(6),
        };
        (0..layers)
            .map(|i| ((i + 1) % pattern.max(1) != 0).then_some(window).flatten())
            .collect()
    };
    let mut c = with_windows(c, windows);
    if generation == Generation::Three {
        resolve_gemma3_ropes(&mut c, hf, per_type_rope.as_ref(), model_type)?;
    }
    Ok(c)
}

/// Gemma 3's two RoPEs: the full layers' (`rope_parameters.full_attention`, or transformers 4's
/// `rope_theta` / `rope_scaling`, default base 1e6) and the sliding layers'
/// (`rope_parameters.sliding_attention`, or `rope_local_base_freq`, default 1e4).
fn resolve_gemma3_ropes(
    c: &mut ModelConfig,
    hf: &HfConfig,
    per_type: Option<&HfRopeParameters>,
    model_type: &str,
) -> Result<(), ModelError> {
    let sub = |name: &str| -> Result<Option<HfRopeParameters>, ModelError> {
        per_type
            .and_then(|p| p.extra.get(name))
            .map(|v| {
                serde_json::from_value(v.clone()).map_err(|e| ModelError::InvalidConfig {
                    key: format!("rope_parameters.{name}"),
                    reason: e.to_string(),
                })
            })
            .transpose()
    };
    let (global, local) = match per_type {
        Some(_) => {
            let full = sub("full_attention")?;
            let sliding = sub("sliding_attention")?;
            (
                resolve_rope_params(
                    hf,
                    full.as_ref(),
                    "rope_parameters.full_attention",
                    1_000_000.0,
                    model_type,
                )?,
                resolve_rope_params(
                    hf,
                    sliding.as_ref(),
                    "rope_parameters.sliding_attention",
                    10_000.0,
                    model_type,
                )?,
            )
        }
        None => {
            // transformers 4: `rope_theta` (+ `rope_scaling`) for the full layers, default 1e6;
            // `rope_local_base_freq` for the sliding ones, default 1e4.
            let params = hf.rope_scaling.as_ref();
            let global = resolve_rope_params(hf, params, "rope_scaling", 1_000_000.0, model_type)?;
            let base = hf.extra_f64("rope_local_base_freq").unwrap_or(10_000.0);
            let mut local_only = HfConfig::default();
            local_only.rope_theta = Some(base);
            (
                global,
                resolve_rope_params(&local_only, None, "rope_local_base_freq", base, model_type)?,
            )
        }
    };
    c.rope = Some(global);
    c.local_rope = Some(local);
    for layer in &mut c.layers {
        if layer.window.is_some() {
            layer.rope = LayerRope::Local;
        }
    }
    Ok(())
}
