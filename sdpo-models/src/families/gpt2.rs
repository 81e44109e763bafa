//! `GPT2LMHeadModel`: learned positions, pre-LayerNorm blocks, `gelu_new` MLP, tied head.
//!
//! GPT-2's projections are HF `Conv1D` layers whose weights are stored `[in, out]` (`y = x·W + b`),
//! unlike `nn.Linear`'s `[out, in]`; [`Conv1D`] keeps that layout so that the PyTorch adapter of
//! burn-store, which transposes only modules named `Linear`, leaves them alone.

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::FloatDType;

use super::parts::{activate, layer_norm};
use super::{Decoder, Family, linear_layers, prefixed};
use crate::attention::split_heads;
use crate::causal_lm::CausalLm;
use crate::config::{
    Activation, Architecture, LayerAttention, LayerRope, ModelConfig, QkNorm, positive, require,
    unsupported,
};
use crate::error::ModelError;
use crate::hf_config::HfConfig;
use crate::init::Init;
use crate::lora::linear::{Adaptable, adapted_forward, empty_weight};
use crate::lora::{AttachedAdapter, LoraBranch, TrainedCopy};
use crate::output::{OutputHead, embed};
use crate::precision::{MatmulPrecision, store_matrices_as};
use crate::quant::Quantized4bit;
use crate::rope::RopeTables;
use crate::stack::AttentionInputs;

/// `GPT2LMHeadModel`.
pub(crate) const GPT2: Family = Family {
    model_types: &["gpt2"],
    architecture: Architecture::Gpt2,
    resolve: |hf, _| resolve_gpt2(hf),
    build: |c, init| CausalLm::Gpt2(Gpt2LmHeadModel::new(c, init)),
    peft_targets: Some(&["c_attn"]),
};

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
    /// The base weight in 4 bits (QLoRA; quantized `[out, in]` as transformers transposes a
    /// `Conv1D` for bitsandbytes); `weight` is then empty.
    pub quantized: Option<Quantized4bit>,
}

impl Conv1D {
    fn new(d_in: usize, d_out: usize, init: &mut Init) -> Self {
        Self {
            weight: init.normal([d_in, d_out]),
            bias: init.zeros(d_out),
            lora: None,
            trained: None,
            quantized: None,
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
        self.quantized = None;
    }
    fn fan_in_fan_out(&self) -> bool {
        true
    }
    fn quantized(&self) -> Option<&Quantized4bit> {
        self.quantized.as_ref()
    }
    fn set_quantized(&mut self, quantized: Quantized4bit) {
        self.weight = empty_weight(&self.weight.device());
        self.quantized = Some(quantized);
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
    linear_layers! {
        "attn.c_attn" => attn.c_attn,
        "attn.c_proj" => attn.c_proj,
        "mlp.c_fc" => mlp.c_fc,
        "mlp.c_proj" => mlp.c_proj,
    }

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
}

impl Decoder for Gpt2LmHeadModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ModelConfig {
        &mut self.config
    }

    fn adapter(&self) -> Option<&AttachedAdapter> {
        self.adapter.as_ref()
    }

    fn set_adapter(&mut self, adapter: Option<AttachedAdapter>) {
        self.adapter = adapter;
    }

    fn num_layers(&self) -> usize {
        self.transformer.h.len()
    }

    fn embed(&self, input_ids: Tensor<2, Int>, positions: Tensor<2, Int>) -> Tensor<3> {
        let t = &self.transformer;
        embed(&t.wte, input_ids) + embed(&t.wpe, positions)
    }

    fn attention_inputs(
        &self,
        layer: usize,
        x: Tensor<3>,
        _rope: Option<&RopeTables>,
    ) -> AttentionInputs {
        let c = &self.config;
        let b = &self.transformer.h[layer];
        let h = c.hidden_size;
        let qkv = b
            .attn
            .c_attn
            .forward(layer_norm(&b.ln_1, x, c.norm_eps), c.matmul_precision);
        let heads = |i: usize| {
            split_heads(
                qkv.clone().narrow(2, i * h, h),
                c.num_attention_heads,
                c.head_dim,
            )
        };
        AttentionInputs {
            q: heads(0),
            k: heads(1),
            v: heads(2),
        }
    }

    fn after_attention(&self, layer: usize, x: Tensor<3>, attention: Tensor<3>) -> Tensor<3> {
        let c = &self.config;
        let b = &self.transformer.h[layer];
        let x = x + b.attn.c_proj.forward(attention, c.matmul_precision);
        let inner = b.mlp.c_fc.forward(
            layer_norm(&b.ln_2, x.clone(), c.norm_eps),
            c.matmul_precision,
        );
        x + b
            .mlp
            .c_proj
            .forward(activate(c.activation, inner), c.matmul_precision)
    }

    fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        layer_norm(&self.transformer.ln_f, x, self.config.norm_eps)
    }

    fn output_head(&self) -> OutputHead<'_> {
        OutputHead {
            head: self.lm_head.as_ref(),
            embedding: &self.transformer.wte,
            precision: self.config.matmul_precision,
            soft_cap: None,
        }
    }

    fn linear_layers(&self) -> Vec<(String, &dyn Adaptable)> {
        prefixed(
            "transformer.h",
            self.transformer.h.iter().map(|b| b.linear_layers()),
        )
    }

    fn linear_layers_mut(&mut self) -> Vec<(String, &mut dyn Adaptable)> {
        prefixed(
            "transformer.h",
            self.transformer.h.iter_mut().map(|b| b.linear_layers_mut()),
        )
    }

    fn store_product_weights_as(&mut self, dtype: FloatDType) {
        let blocks = std::mem::take(&mut self.transformer.h);
        self.transformer.h = blocks
            .into_iter()
            .map(|block| store_matrices_as(block, dtype))
            .collect();
        self.lm_head = self
            .lm_head
            .take()
            .map(|head| store_matrices_as(head, dtype));
    }
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
    let num_hidden_layers = require(hf.n_layer, model_type, "n_layer")?;
    Ok(ModelConfig {
        architecture: Architecture::Gpt2,
        vocab_size: positive(
            "vocab_size",
            require(hf.vocab_size, model_type, "vocab_size")?,
        )?,
        hidden_size,
        intermediate_size: hf.n_inner.unwrap_or(4 * hidden_size),
        num_hidden_layers,
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
        qk_norm: QkNorm::None,
        attention_scale: if hf.scale_attn_weights.unwrap_or(true) {
            (head_dim as f64).powf(-0.5)
        } else {
            1.0
        },
        layers: vec![
            LayerAttention {
                window: None,
                rope: LayerRope::None,
            };
            num_hidden_layers
        ],
        local_rope: None,
        rotary_dim: 0,
        attn_logit_softcap: None,
        final_logit_softcap: None,
        embedding_scale: None,
        norm_weight_offset: 0.0,
        initializer_range: hf.initializer_range.unwrap_or(0.02),
        hf: hf.clone(),
        matmul_precision: MatmulPrecision::F32,
    })
}
