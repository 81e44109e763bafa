//! The `model.embed_tokens` / `model.layers.N` / `model.norm` / `lm_head` layout every family
//! but GPT-2 shares: a family supplies only its layer ([`DecoderLayer`]).

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::FloatDType;

use super::parts::rms_norm;
use super::{Decoder, DecoderLayer, prefixed};
use crate::config::ModelConfig;
use crate::init::Init;
use crate::lora::AttachedAdapter;
use crate::lora::linear::Adaptable;
use crate::output::{OutputHead, embed};
use crate::precision::store_matrices_as;
use crate::rope::RopeTables;
use crate::stack::AttentionInputs;

/// The decoder stack (`model.*`).
#[derive(Module, Debug)]
pub struct DecoderModel<L: Module> {
    /// Token embedding `[vocab, hidden]`.
    pub embed_tokens: Embedding,
    /// Decoder blocks.
    pub layers: Vec<L>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
}

/// A causal LM of the shared layout (`LlamaForCausalLM`, `Qwen2ForCausalLM`, ...) with the
/// family's layer `L`.
#[derive(Module, Debug)]
pub struct DecoderLm<L: Module> {
    /// Decoder stack.
    pub model: DecoderModel<L>,
    /// Output head `[hidden, vocab]`; `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    config: ModelConfig,
    /// The LoRA adapter attached to the linear layers, if any.
    #[module(skip)]
    adapter: Option<AttachedAdapter>,
}

impl<L: Module> DecoderLm<L> {
    /// The resolved configuration this model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
}

/// A model of the shared layout with layer `L`, built for `c` with `init`'s parameters.
pub(crate) fn new_decoder_lm<L: DecoderLayer>(c: &ModelConfig, init: &mut Init) -> DecoderLm<L> {
    let model = DecoderModel {
        embed_tokens: init.embedding(c.vocab_size, c.hidden_size),
        layers: (0..c.num_hidden_layers).map(|_| L::new(c, init)).collect(),
        norm: init.rms_norm(c.hidden_size, c.norm_eps, c.norm_weight_offset),
    };
    let lm_head = (!c.tie_word_embeddings).then(|| init.linear(c.hidden_size, c.vocab_size, false));
    DecoderLm {
        model,
        lm_head,
        config: c.clone(),
        adapter: None,
    }
}

impl<L: DecoderLayer> Decoder for DecoderLm<L> {
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
        self.model.layers.len()
    }

    fn embed(&self, input_ids: Tensor<2, Int>, _positions: Tensor<2, Int>) -> Tensor<3> {
        let x = embed(&self.model.embed_tokens, input_ids);
        match self.config.embedding_scale {
            // transformers multiplies by the scale rounded to the model dtype.
            Some(scale) => x * (scale as f32),
            None => x,
        }
    }

    fn attention_inputs(
        &self,
        layer: usize,
        x: Tensor<3>,
        rope: Option<&RopeTables>,
    ) -> AttentionInputs {
        self.model.layers[layer].attention_inputs(x, rope, &self.config)
    }

    fn after_attention(&self, layer: usize, x: Tensor<3>, attention: Tensor<3>) -> Tensor<3> {
        self.model.layers[layer].after_attention(x, attention, &self.config)
    }

    fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        rms_norm(&self.model.norm, x, self.config.norm_weight_offset)
    }

    fn output_head(&self) -> OutputHead<'_> {
        OutputHead {
            head: self.lm_head.as_ref(),
            embedding: &self.model.embed_tokens,
            precision: self.config.matmul_precision,
            soft_cap: self.config.final_logit_softcap,
        }
    }

    fn linear_layers(&self) -> Vec<(String, &dyn Adaptable)> {
        prefixed(
            "model.layers",
            self.model.layers.iter().map(|l| l.linear_layers()),
        )
    }

    fn linear_layers_mut(&mut self) -> Vec<(String, &mut dyn Adaptable)> {
        prefixed(
            "model.layers",
            self.model.layers.iter_mut().map(|l| l.linear_layers_mut()),
        )
    }

    fn store_product_weights_as(&mut self, dtype: FloatDType) {
        let layers = std::mem::take(&mut self.model.layers);
        self.model.layers = layers
            .into_iter()
            .map(|layer| store_matrices_as(layer, dtype))
            .collect();
        self.lm_head = self
            .lm_head
            .take()
            .map(|head| store_matrices_as(head, dtype));
    }
}
