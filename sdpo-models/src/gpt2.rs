//! `GPT2LMHeadModel`: learned positions, pre-LayerNorm blocks, `gelu_new` MLP, tied head.
//!
//! GPT-2's projections are HF `Conv1D` layers whose weights are stored `[in, out]` (`y = x·W + b`),
//! unlike `nn.Linear`'s `[out, in]`; [`Conv1D`] keeps that layout so that the PyTorch adapter of
//! burn-store, which transposes only modules named `Linear`, leaves them alone.

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate};

use crate::attention::{attend, split_heads};
use crate::config::{Activation, ModelConfig};
use crate::init::Init;
use crate::lora::linear::{Adaptable, adapted_forward};
use crate::lora::{AttachedAdapter, LoraBranch, TrainedCopy};
use crate::mask::attention_blocked;
use crate::output::{CausalLmOutput, embed, head_logits};
use crate::precision::MatmulPrecision;

/// Hugging Face's `Conv1D`: a linear layer with the weight stored `[in, out]`, with an optional
/// LoRA branch (PEFT's `fan_in_fan_out` case).
#[derive(Module, Debug)]
pub struct Conv1D {
    /// `[in, out]`, the same layout in the checkpoint and in memory.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
    /// The adapter, when one is attached.
    pub lora: Option<LoraBranch>,
    /// The trainable copy when this layer is in `modules_to_save`.
    pub trained: Option<TrainedCopy>,
}

impl Conv1D {
    fn new(d_in: usize, d_out: usize, init: &mut Init) -> Self {
        Self {
            weight: init.normal([d_in, d_out]),
            bias: init.zeros(d_out),
            lora: None,
            trained: None,
        }
    }

    /// `x W + b`, plus the adapter's update when one is attached; the products in `precision`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, in]`; output `[batch, seq, out]`
    pub fn forward(&self, x: Tensor<3>, precision: MatmulPrecision) -> Tensor<3> {
        adapted_forward(self, x, precision)
    }
}

impl Adaptable for Conv1D {
    fn weight(&self) -> &Param<Tensor<2>> {
        &self.weight
    }
    fn bias(&self) -> Option<&Param<Tensor<1>>> {
        Some(&self.bias)
    }
    fn lora(&self) -> Option<&LoraBranch> {
        self.lora.as_ref()
    }
    fn trained(&self) -> Option<&TrainedCopy> {
        self.trained.as_ref()
    }
    fn set_lora(&mut self, lora: Option<LoraBranch>) {
        self.lora = lora;
    }
    fn set_trained(&mut self, trained: Option<TrainedCopy>) {
        self.trained = trained;
    }
    fn set_base(&mut self, weight: Param<Tensor<2>>, bias: Option<Param<Tensor<1>>>) {
        self.weight = weight;
        if let Some(bias) = bias {
            self.bias = bias;
        }
    }
    fn fan_in_fan_out(&self) -> bool {
        true
    }
}

/// `attn`: fused q‖k‖v projection and output projection.
#[derive(Module, Debug)]
pub struct Gpt2Attention {
    /// `[hidden, 3 * hidden]`.
    pub c_attn: Conv1D,
    /// `[hidden, hidden]`.
    pub c_proj: Conv1D,
}

/// `mlp`: `c_proj(act(c_fc(x)))`.
#[derive(Module, Debug)]
pub struct Gpt2Mlp {
    /// `[hidden, inner]`.
    pub c_fc: Conv1D,
    /// `[inner, hidden]`.
    pub c_proj: Conv1D,
}

/// One block (`transformer.h.N`).
#[derive(Module, Debug)]
pub struct Gpt2Block {
    /// Norm before attention.
    pub ln_1: LayerNorm,
    /// Attention.
    pub attn: Gpt2Attention,
    /// Norm before the MLP.
    pub ln_2: LayerNorm,
    /// MLP.
    pub mlp: Gpt2Mlp,
}

impl Gpt2Block {
    fn new(c: &ModelConfig, init: &mut Init) -> Self {
        let h = c.hidden_size;
        Self {
            ln_1: init.layer_norm(h, c.norm_eps),
            attn: Gpt2Attention {
                c_attn: Conv1D::new(h, 3 * h, init),
                c_proj: Conv1D::new(h, h, init),
            },
            ln_2: init.layer_norm(h, c.norm_eps),
            mlp: Gpt2Mlp {
                c_fc: Conv1D::new(h, c.intermediate_size, init),
                c_proj: Conv1D::new(c.intermediate_size, h, init),
            },
        }
    }

    fn forward(&self, x: Tensor<3>, blocked: Tensor<4, Bool>, c: &ModelConfig) -> Tensor<3> {
        let h = c.hidden_size;
        let qkv = self.attn.c_attn.forward(
            layer_norm(&self.ln_1, x.clone(), c.norm_eps),
            c.matmul_precision,
        );
        let heads = |i: usize| {
            split_heads(
                qkv.clone().narrow(2, i * h, h),
                c.num_attention_heads,
                c.head_dim,
            )
        };
        let out = attend(heads(0), heads(1), heads(2), blocked, c.attention_scale, 1);
        let x = x + self.attn.c_proj.forward(out, c.matmul_precision);
        let inner = self.mlp.c_fc.forward(
            layer_norm(&self.ln_2, x.clone(), c.norm_eps),
            c.matmul_precision,
        );
        let inner = match c.activation {
            Activation::Gelu => gelu(inner),
            Activation::GeluTanh | Activation::Silu => gelu_approximate(inner),
        };
        x + self.mlp.c_proj.forward(inner, c.matmul_precision)
    }
}

/// The transformer stack (`transformer.*`).
#[derive(Module, Debug)]
pub struct Gpt2Model {
    /// Token embedding `[vocab, hidden]`.
    pub wte: Embedding,
    /// Learned position embedding `[n_positions, hidden]`.
    pub wpe: Embedding,
    /// Blocks.
    pub h: Vec<Gpt2Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
}

/// `GPT2LMHeadModel`.
#[derive(Module, Debug)]
pub struct Gpt2LmHeadModel {
    /// Transformer stack.
    pub transformer: Gpt2Model,
    /// Output head; `None` when tied to `transformer.wte` (the GPT-2 default).
    pub lm_head: Option<Linear>,
    #[module(skip)]
    config: ModelConfig,
    /// The LoRA adapter attached to the `Conv1D` layers, if any.
    #[module(skip)]
    pub(crate) adapter: Option<AttachedAdapter>,
}

impl Gpt2LmHeadModel {
    pub(crate) fn new(config: &ModelConfig, init: &mut Init) -> Self {
        let c = config;
        let transformer = Gpt2Model {
            wte: init.embedding(c.vocab_size, c.hidden_size),
            wpe: init.embedding(c.max_position_embeddings, c.hidden_size),
            h: (0..c.num_hidden_layers)
                .map(|_| Gpt2Block::new(c, init))
                .collect(),
            ln_f: init.layer_norm(c.hidden_size, c.norm_eps),
        };
        let lm_head =
            (!c.tie_word_embeddings).then(|| init.linear(c.hidden_size, c.vocab_size, false));
        Self {
            transformer,
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

    /// Logits for every position plus transformers' hidden states (see
    /// [`CausalLmOutput::hidden_states`]). `seq` must not exceed `n_positions`.
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, seq]` (mask: 1 = token, 0 = padding, right padded)
    /// - `logits`: `[batch, seq, vocab]`; `hidden_states`: `n_layer + 1` × `[batch, seq, hidden]`
    pub fn forward_with_hidden_states(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
    ) -> CausalLmOutput {
        let c = &self.config;
        let [_, seq] = input_ids.dims();
        let device = input_ids.device();
        let blocked = attention_blocked(attention_mask);
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>();
        let t = &self.transformer;
        let mut x = embed(&t.wte, input_ids) + embed(&t.wpe, positions);
        let mut hidden_states = vec![x.clone()];
        let last = t.h.len().saturating_sub(1);
        for (i, block) in t.h.iter().enumerate() {
            x = block.forward(x, blocked.clone(), c);
            if i < last {
                hidden_states.push(x.clone());
            }
        }
        let x = layer_norm(&t.ln_f, x, c.norm_eps);
        hidden_states.push(x.clone());
        let logits = head_logits(x, self.lm_head.as_ref(), &t.wte, c.matmul_precision);
        CausalLmOutput {
            logits,
            hidden_states,
        }
    }
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
