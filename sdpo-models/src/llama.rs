//! `LlamaForCausalLM` (Llama 2/3.x, SmolLM/SmolLM2, TinyLlama, Mistral without sliding window)
//! and, through its bias switches, `Qwen2ForCausalLM`.
//!
//! Pre-norm decoder: RMSNorm → self-attention with rotate-half RoPE and grouped key/value heads
//! → residual → RMSNorm → SiLU-gated MLP → residual; final RMSNorm; output head (or the token
//! embedding when tied). Field names are the Hugging Face state-dict keys, so a checkpoint loads
//! without a remapping table.

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::activation::silu;

use crate::attention::{attend, split_heads};
use crate::config::ModelConfig;
use crate::init::Init;
use crate::lora::{AttachedAdapter, LoraLinear};
use crate::mask::attention_blocked;
use crate::output::{CausalLmOutput, embed, head_logits};
use crate::precision::MatmulPrecision;
use crate::rope::{apply_rope, rope_tables};

/// `self_attn`: q/k/v/o projections.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// `[hidden, heads * head_dim]`.
    pub q_proj: LoraLinear,
    /// `[hidden, kv_heads * head_dim]`.
    pub k_proj: LoraLinear,
    /// `[hidden, kv_heads * head_dim]`.
    pub v_proj: LoraLinear,
    /// `[heads * head_dim, hidden]`.
    pub o_proj: LoraLinear,
}

impl LlamaAttention {
    fn new(c: &ModelConfig, init: &mut Init) -> Self {
        let q_width = c.num_attention_heads * c.head_dim;
        let kv_width = c.num_key_value_heads * c.head_dim;
        Self {
            q_proj: init.lora_linear(c.hidden_size, q_width, c.qkv_bias),
            k_proj: init.lora_linear(c.hidden_size, kv_width, c.qkv_bias),
            v_proj: init.lora_linear(c.hidden_size, kv_width, c.qkv_bias),
            o_proj: init.lora_linear(q_width, c.hidden_size, c.o_bias),
        }
    }

    fn forward(
        &self,
        x: Tensor<3>,
        rope: &(Tensor<2>, Tensor<2>),
        blocked: Tensor<4, Bool>,
        c: &ModelConfig,
    ) -> Tensor<3> {
        let q = split_heads(
            self.q_proj.forward(x.clone(), c.matmul_precision),
            c.num_attention_heads,
            c.head_dim,
        );
        let k = split_heads(
            self.k_proj.forward(x.clone(), c.matmul_precision),
            c.num_key_value_heads,
            c.head_dim,
        );
        let v = split_heads(
            self.v_proj.forward(x, c.matmul_precision),
            c.num_key_value_heads,
            c.head_dim,
        );
        let (cos, sin) = rope;
        let q = apply_rope(q, cos.clone(), sin.clone());
        let k = apply_rope(k, cos.clone(), sin.clone());
        let out = attend(q, k, v, blocked, c.attention_scale, c.kv_groups());
        self.o_proj.forward(out, c.matmul_precision)
    }
}

/// `mlp`: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// `[hidden, intermediate]`.
    pub gate_proj: LoraLinear,
    /// `[hidden, intermediate]`.
    pub up_proj: LoraLinear,
    /// `[intermediate, hidden]`.
    pub down_proj: LoraLinear,
}

impl LlamaMlp {
    fn new(c: &ModelConfig, init: &mut Init) -> Self {
        Self {
            gate_proj: init.lora_linear(c.hidden_size, c.intermediate_size, c.mlp_bias),
            up_proj: init.lora_linear(c.hidden_size, c.intermediate_size, c.mlp_bias),
            down_proj: init.lora_linear(c.intermediate_size, c.hidden_size, c.mlp_bias),
        }
    }

    pub(crate) fn forward(&self, x: Tensor<3>, precision: MatmulPrecision) -> Tensor<3> {
        let gated =
            silu(self.gate_proj.forward(x.clone(), precision)) * self.up_proj.forward(x, precision);
        self.down_proj.forward(gated, precision)
    }
}

/// One decoder block (`model.layers.N`).
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    /// Attention.
    pub self_attn: LlamaAttention,
    /// Gated MLP.
    pub mlp: LlamaMlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

impl LlamaDecoderLayer {
    fn new(c: &ModelConfig, init: &mut Init) -> Self {
        Self {
            self_attn: LlamaAttention::new(c, init),
            mlp: LlamaMlp::new(c, init),
            input_layernorm: init.rms_norm(c.hidden_size, c.norm_eps),
            post_attention_layernorm: init.rms_norm(c.hidden_size, c.norm_eps),
        }
    }

    fn forward(
        &self,
        x: Tensor<3>,
        rope: &(Tensor<2>, Tensor<2>),
        blocked: Tensor<4, Bool>,
        c: &ModelConfig,
    ) -> Tensor<3> {
        let attn =
            self.self_attn
                .forward(self.input_layernorm.forward(x.clone()), rope, blocked, c);
        let x = x + attn;
        let mlp = self.mlp.forward(
            self.post_attention_layernorm.forward(x.clone()),
            c.matmul_precision,
        );
        x + mlp
    }
}

/// The decoder stack (`model.*`).
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// Token embedding `[vocab, hidden]`.
    pub embed_tokens: Embedding,
    /// Decoder blocks.
    pub layers: Vec<LlamaDecoderLayer>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
}

/// `LlamaForCausalLM` / `Qwen2ForCausalLM`.
#[derive(Module, Debug)]
pub struct LlamaForCausalLm {
    /// Decoder stack.
    pub model: LlamaModel,
    /// Output head `[hidden, vocab]`; `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    config: ModelConfig,
    /// The LoRA adapter attached to the linear layers, if any.
    #[module(skip)]
    pub(crate) adapter: Option<AttachedAdapter>,
}

impl LlamaForCausalLm {
    pub(crate) fn new(config: &ModelConfig, init: &mut Init) -> Self {
        let c = config;
        let model = LlamaModel {
            embed_tokens: init.embedding(c.vocab_size, c.hidden_size),
            layers: (0..c.num_hidden_layers)
                .map(|_| LlamaDecoderLayer::new(c, init))
                .collect(),
            norm: init.rms_norm(c.hidden_size, c.norm_eps),
        };
        let lm_head =
            (!c.tie_word_embeddings).then(|| init.linear(c.hidden_size, c.vocab_size, false));
        Self {
            model,
            lm_head,
            config: config.clone(),
            adapter: None,
        }
    }

    /// The resolved configuration this model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub(crate) fn set_matmul_precision(&mut self, precision: MatmulPrecision) {
        self.config.matmul_precision = precision;
    }

    /// Logits for every position plus the hidden states transformers reports
    /// (`output_hidden_states=True`): the embeddings, the output of each block but the last, and
    /// the last block's output after the final norm.
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, seq]` (mask: 1 = token, 0 = padding, right padded)
    /// - `logits`: `[batch, seq, vocab]`; `hidden_states`: `num_hidden_layers + 1` × `[batch, seq, hidden]`
    pub fn forward_with_hidden_states(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
    ) -> CausalLmOutput {
        let c = &self.config;
        let blocked = attention_blocked(attention_mask);
        let [_, seq] = input_ids.dims();
        let device = input_ids.device();
        let rope = c
            .rope
            .as_ref()
            .map(|r| rope_tables(r, c.head_dim, seq, &device))
            .unwrap_or_else(|| {
                // Unreachable for configs resolved by this crate; identity rotation otherwise.
                (
                    Tensor::ones([seq, c.head_dim], &device),
                    Tensor::zeros([seq, c.head_dim], &device),
                )
            });
        let mut x = embed(&self.model.embed_tokens, input_ids);
        let mut hidden_states = vec![x.clone()];
        let last = self.model.layers.len().saturating_sub(1);
        for (i, layer) in self.model.layers.iter().enumerate() {
            x = layer.forward(x, &rope, blocked.clone(), c);
            if i < last {
                hidden_states.push(x.clone());
            }
        }
        let x = self.model.norm.forward(x);
        hidden_states.push(x.clone());
        let logits = head_logits(
            x,
            self.lm_head.as_ref(),
            &self.model.embed_tokens,
            c.matmul_precision,
        );
        CausalLmOutput {
            logits,
            hidden_states,
        }
    }
}
