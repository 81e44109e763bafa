//! `Phi3ForCausalLM` (Phi-3, Phi-3.5, Phi-4-mini): the Llama block with fused projections,
//! `self_attn.qkv_proj` (queries ‖ keys ‖ values) and `mlp.gate_up_proj` (gate ‖ up), RoPE
//! on the leading `partial_rotary_factor · head_dim` dimensions of each head, and a sliding
//! window on every layer when `sliding_window` is set.

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::prelude::*;

use super::decoder::{DecoderLm, new_decoder_lm};
use super::llama::{LlamaLike, with_windows};
use super::parts::{activate, split_qkv};
use super::{DecoderLayer, Family, linear_layers};
use crate::causal_lm::CausalLm;
use crate::config::{Architecture, ModelConfig};
use crate::error::ModelError;
use crate::hf_config::HfConfig;
use crate::init::Init;
use crate::lora::LoraLinear;
use crate::rope::RopeTables;
use crate::stack::AttentionInputs;

/// `Phi3ForCausalLM`.
pub(crate) const PHI3: Family = Family {
    model_types: &["phi3"],
    architecture: Architecture::Phi3,
    resolve: resolve_phi3,
    build: |c, init| CausalLm::Phi3(new_decoder_lm(c, init)),
    // PEFT has no default for Phi-3: an adapter must name its targets (`qkv_proj`, ...).
    peft_targets: None,
};

/// `Phi3ForCausalLM`.
pub type Phi3ForCausalLm = DecoderLm<Phi3DecoderLayer>;

/// `self_attn`: the fused query/key/value projection and the output projection.
#[derive(Module, Debug)]
pub struct Phi3Attention {
    /// `[hidden, (heads + 2 · kv_heads) · head_dim]`: queries, then keys, then values.
    pub qkv_proj: LoraLinear,
    /// `[heads · head_dim, hidden]`.
    pub o_proj: LoraLinear,
}

/// `mlp`: `down(up · silu(gate))` with gate and up fused.
#[derive(Module, Debug)]
pub struct Phi3Mlp {
    /// `[hidden, 2 · intermediate]`: gate, then up.
    pub gate_up_proj: LoraLinear,
    /// `[intermediate, hidden]`.
    pub down_proj: LoraLinear,
}

/// One decoder block (`model.layers.N`).
#[derive(Module, Debug)]
pub struct Phi3DecoderLayer {
    /// Attention.
    pub self_attn: Phi3Attention,
    /// MLP.
    pub mlp: Phi3Mlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer for Phi3DecoderLayer {
    fn new(c: &ModelConfig, init: &mut Init) -> Self {
        let q_width = c.num_attention_heads * c.head_dim;
        let qkv_width = q_width + 2 * c.num_key_value_heads * c.head_dim;
        Self {
            self_attn: Phi3Attention {
                qkv_proj: init.lora_linear(c.hidden_size, qkv_width, c.qkv_bias),
                o_proj: init.lora_linear(q_width, c.hidden_size, c.o_bias),
            },
            mlp: Phi3Mlp {
                gate_up_proj: init.lora_linear(c.hidden_size, 2 * c.intermediate_size, c.mlp_bias),
                down_proj: init.lora_linear(c.intermediate_size, c.hidden_size, c.mlp_bias),
            },
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
        let qkv = self
            .self_attn
            .qkv_proj
            .forward(self.input_layernorm.forward(x), c.matmul_precision);
        let q_width = c.num_attention_heads * c.head_dim;
        let kv_width = c.num_key_value_heads * c.head_dim;
        let [q, k, v] = split_qkv(
            [
                qkv.clone().narrow(2, 0, q_width),
                qkv.clone().narrow(2, q_width, kv_width),
                qkv.narrow(2, q_width + kv_width, kv_width),
            ],
            c,
        );
        AttentionInputs::rotated(q, k, v, rope)
    }

    fn after_attention(&self, x: Tensor<3>, attention: Tensor<3>, c: &ModelConfig) -> Tensor<3> {
        let p = c.matmul_precision;
        let x = x + self.self_attn.o_proj.forward(attention, p);
        let gate_up = self
            .mlp
            .gate_up_proj
            .forward(self.post_attention_layernorm.forward(x.clone()), p);
        let n = c.intermediate_size;
        let gate = gate_up.clone().narrow(2, 0, n);
        let up = gate_up.narrow(2, n, n);
        x + self
            .mlp
            .down_proj
            .forward(up * activate(c.activation, gate), p)
    }

    linear_layers! {
        "self_attn.qkv_proj" => self_attn.qkv_proj,
        "self_attn.o_proj" => self_attn.o_proj,
        "mlp.gate_up_proj" => mlp.gate_up_proj,
        "mlp.down_proj" => mlp.down_proj,
    }
}

fn resolve_phi3(hf: &HfConfig, model_type: &str) -> Result<ModelConfig, ModelError> {
    let mut like = LlamaLike::new(hf, model_type);
    like.partial_rotary = true;
    let mut c = like.resolve()?;
    c.architecture = Architecture::Phi3;
    // Phi-3 has no bias switches: every projection is bias-free.
    c.qkv_bias = false;
    c.o_bias = false;
    c.mlp_bias = false;
    let windows = like.layer_windows(c.num_hidden_layers)?;
    Ok(with_windows(c, windows))
}
