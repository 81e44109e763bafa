//! Parts several families share: norms, the gated MLP, activations, head projections.

use burn::module::Module;
use burn::nn::{LayerNorm, RmsNorm};
use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate, silu};

use crate::attention::split_heads;
use crate::config::{Activation, ModelConfig, QkNorm};
use crate::gated_silu;
use crate::init::Init;
use crate::lora::LoraLinear;
use crate::rope::{RopeTables, apply_rope_tables};
use crate::stack::AttentionInputs;

/// RMSNorm over the last dimension, the weight plus `offset` as the scale (transformers'
/// Llama norm for `offset` 0, Gemma's `x · (1 + w)` for 1).
pub(crate) fn rms_norm<const D: usize>(norm: &RmsNorm, x: Tensor<D>, offset: f64) -> Tensor<D> {
    if offset == 0.0 {
        return norm.forward(x);
    }
    let rms = (x.clone().square().mean_dim(D - 1) + norm.epsilon).sqrt();
    (x / rms) * (norm.gamma.val() + offset).unsqueeze()
}

/// LayerNorm (biased variance, as torch) from primitive operations: burn's `LayerNorm::forward`
/// is a fused kernel on flex without autodiff but a composition under autodiff, which would make
/// an untracked reference differ from the tracked policy by an ulp (see
/// `attention::softmax_same_on_every_path`). The parameters stay burn's `LayerNorm` so loading
/// and saving keep HF's names.
pub(crate) fn layer_norm(norm: &LayerNorm, x: Tensor<3>, eps: f64) -> Tensor<3> {
    let centered = x.clone() - x.mean_dim(2);
    let variance = centered.clone().square().mean_dim(2);
    let normed = centered / (variance + eps).sqrt();
    let scaled = normed * norm.gamma.val().unsqueeze::<3>();
    match &norm.beta {
        Some(beta) => scaled + beta.val().unsqueeze::<3>(),
        None => scaled,
    }
}

/// The MLP activation.
pub(crate) fn activate(activation: Activation, x: Tensor<3>) -> Tensor<3> {
    match activation {
        Activation::Silu => silu(x),
        Activation::GeluTanh => gelu_approximate(x),
        Activation::Gelu => gelu(x),
    }
}

/// `mlp`: `down(act(gate(x)) * up(x))` (Llama, Qwen, Mistral, Gemma, OLMo 2, SmolLM3).
#[derive(Module, Debug)]
pub struct GatedMlp {
    /// `[hidden, intermediate]`.
    pub gate_proj: LoraLinear,
    /// `[hidden, intermediate]`.
    pub up_proj: LoraLinear,
    /// `[intermediate, hidden]`.
    pub down_proj: LoraLinear,
}

impl GatedMlp {
    pub(crate) fn new(c: &ModelConfig, init: &mut Init) -> Self {
        Self {
            gate_proj: init.lora_linear(c.hidden_size, c.intermediate_size, c.mlp_bias),
            up_proj: init.lora_linear(c.hidden_size, c.intermediate_size, c.mlp_bias),
            down_proj: init.lora_linear(c.intermediate_size, c.hidden_size, c.mlp_bias),
        }
    }

    pub(crate) fn forward(&self, x: Tensor<3>, c: &ModelConfig) -> Tensor<3> {
        let p = c.matmul_precision;
        let gate = self.gate_proj.forward(x.clone(), p);
        let up = self.up_proj.forward(x, p);
        let gated = match c.activation {
            // One fused pass on flex (crate::gated_silu), burn's operations elsewhere.
            Activation::Silu => gated_silu::silu_gate(gate, up),
            other => activate(other, gate) * up,
        };
        self.down_proj.forward(gated, p)
    }
}

/// `self_attn`: separate q/k/v/o projections, and the query/key norms of the families that
/// have them ([`QkNorm`]).
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// `[hidden, heads * head_dim]`.
    pub q_proj: LoraLinear,
    /// `[hidden, kv_heads * head_dim]`.
    pub k_proj: LoraLinear,
    /// `[hidden, kv_heads * head_dim]`.
    pub v_proj: LoraLinear,
    /// `[heads * head_dim, hidden]`.
    pub o_proj: LoraLinear,
    /// Query norm (`head_dim` or `heads * head_dim` wide).
    pub q_norm: Option<RmsNorm>,
    /// Key norm (`head_dim` or `kv_heads * head_dim` wide).
    pub k_norm: Option<RmsNorm>,
}

impl SelfAttention {
    pub(crate) fn new(c: &ModelConfig, init: &mut Init) -> Self {
        let q_width = c.num_attention_heads * c.head_dim;
        let kv_width = c.num_key_value_heads * c.head_dim;
        let (q_norm, k_norm) = match c.qk_norm {
            QkNorm::None => (None, None),
            QkNorm::PerHead => (Some(c.head_dim), Some(c.head_dim)),
            QkNorm::Whole => (Some(q_width), Some(kv_width)),
        };
        let norm = |width: Option<usize>| {
            width.map(|w| init.rms_norm(w, c.norm_eps, c.norm_weight_offset))
        };
        let (q_norm, k_norm) = (norm(q_norm), norm(k_norm));
        Self {
            q_norm,
            k_norm,
            q_proj: init.lora_linear(c.hidden_size, q_width, c.qkv_bias),
            k_proj: init.lora_linear(c.hidden_size, kv_width, c.qkv_bias),
            v_proj: init.lora_linear(c.hidden_size, kv_width, c.qkv_bias),
            o_proj: init.lora_linear(q_width, c.hidden_size, c.o_bias),
        }
    }

    /// Queries, keys and values of `x` (the normed layer input) split into heads, the query
    /// and key norms applied; RoPE is next ([`AttentionInputs::rotated`]).
    pub(crate) fn heads(&self, x: Tensor<3>, c: &ModelConfig) -> [Tensor<4>; 3] {
        let p = c.matmul_precision;
        let offset = c.norm_weight_offset;
        let mut q = self.q_proj.forward(x.clone(), p);
        let mut k = self.k_proj.forward(x.clone(), p);
        let v = self.v_proj.forward(x, p);
        if let (QkNorm::Whole, Some(qn), Some(kn)) = (c.qk_norm, &self.q_norm, &self.k_norm) {
            q = rms_norm(qn, q, offset);
            k = rms_norm(kn, k, offset);
        }
        let [q, k, v] = split_qkv([q, k, v], c);
        match (c.qk_norm, &self.q_norm, &self.k_norm) {
            (QkNorm::PerHead, Some(qn), Some(kn)) => {
                [rms_norm(qn, q, offset), rms_norm(kn, k, offset), v]
            }
            _ => [q, k, v],
        }
    }

    /// The output projection of the merged heads.
    pub(crate) fn output(&self, attention: Tensor<3>, c: &ModelConfig) -> Tensor<3> {
        self.o_proj.forward(attention, c.matmul_precision)
    }
}

/// Query, key and value projections `[rows, T, width]` split into heads.
pub(crate) fn split_qkv([q, k, v]: [Tensor<3>; 3], c: &ModelConfig) -> [Tensor<4>; 3] {
    [
        split_heads(q, c.num_attention_heads, c.head_dim),
        split_heads(k, c.num_key_value_heads, c.head_dim),
        split_heads(v, c.num_key_value_heads, c.head_dim),
    ]
}

impl AttentionInputs {
    /// Queries and keys rotated by `rope` (unchanged for a layer without RoPE).
    pub(crate) fn rotated(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        rope: Option<&RopeTables>,
    ) -> Self {
        match rope {
            Some(tables) => Self {
                q: apply_rope_tables(q, tables),
                k: apply_rope_tables(k, tables),
                v,
            },
            None => Self { q, k, v },
        }
    }
}
