//! One file per architecture family, and the registry that finds it.
//!
//! A family file holds everything that is particular to it: how its `config.json` maps onto
//! [`ModelConfig`], its modules (whose field names are the Hugging Face state-dict names), its
//! decoder layer as parts ([`DecoderLayer`]: attention inputs, after the attention), the linear
//! layers LoRA can adapt, and PEFT's default LoRA targets. Everything else (the forward in
//! pieces, attention, masks, RoPE, loading, saving, LoRA, precision) is written once against
//! the [`Decoder`] trait.
//!
//! Adding a family is one file plus its registration: a variant of [`crate::CausalLm`] and an
//! entry in [`FAMILIES`] (docs/models.md, "Adding an architecture").

use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::CausalLm;
use crate::config::{Architecture, ModelConfig};
use crate::error::ModelError;
use crate::hf_config::HfConfig;
use crate::init::Init;
use crate::lora::AttachedAdapter;
use crate::lora::linear::Adaptable;
use crate::output::OutputHead;
use crate::rope::RopeTables;
use crate::stack::AttentionInputs;

pub(crate) mod decoder;
pub(crate) mod gemma;
pub(crate) mod gpt2;
pub(crate) mod llama;
pub(crate) mod olmo2;
pub(crate) mod parts;
pub(crate) mod phi3;
pub(crate) mod qwen3;
pub(crate) mod smollm3;

/// What the registry knows of a family.
pub(crate) struct Family {
    /// The `model_type` values of `config.json` it reads.
    pub(crate) model_types: &'static [&'static str],
    /// The architecture it resolves to.
    pub(crate) architecture: Architecture,
    /// `config.json` → [`ModelConfig`] (`model_type` is one of [`Family::model_types`]).
    pub(crate) resolve: fn(&HfConfig, &str) -> Result<ModelConfig, ModelError>,
    /// The module for a resolved config.
    pub(crate) build: fn(&ModelConfig, &mut Init) -> CausalLm,
    /// PEFT's `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` entry (`None`: PEFT has
    /// none and asks for `target_modules`).
    pub(crate) peft_targets: Option<&'static [&'static str]>,
}

/// Every family this crate implements.
pub(crate) const FAMILIES: &[&Family] = &[
    &llama::LLAMA,
    &llama::QWEN2,
    &gpt2::GPT2,
    &qwen3::QWEN3,
    &smollm3::SMOLLM3,
    &olmo2::OLMO2,
    &phi3::PHI3,
    &gemma::GEMMA2,
    &gemma::GEMMA3,
];

/// The family reading `model_type`.
pub(crate) fn by_model_type(model_type: &str) -> Option<&'static Family> {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.model_types.contains(&model_type))
}

/// The family of an architecture.
pub(crate) fn by_architecture(architecture: Architecture) -> &'static Family {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.architecture == architecture)
        .expect("every architecture has a registered family")
}

/// Every `model_type` this crate reads, for error messages and docs.
pub fn supported_model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect()
}

/// A whole model of one family, seen piece by piece. Object safe: [`crate::CausalLm`] hands out
/// `&dyn Decoder` and writes every path (whole graph, memory-bounded engine, shared-prompt
/// forward, LoRA, precision) against it.
pub(crate) trait Decoder {
    /// The resolved configuration.
    fn config(&self) -> &ModelConfig;
    /// The resolved configuration, to change its matmul precision.
    fn config_mut(&mut self) -> &mut ModelConfig;
    /// The attached LoRA adapter.
    fn adapter(&self) -> Option<&AttachedAdapter>;
    /// Attaches or drops the adapter record.
    fn set_adapter(&mut self, adapter: Option<AttachedAdapter>);
    /// Number of decoder layers.
    fn num_layers(&self) -> usize;
    /// Input embeddings; `positions` `[1 or rows, T]` for families with learned positions.
    fn embed(&self, input_ids: Tensor<2, Int>, positions: Tensor<2, Int>) -> Tensor<3>;
    /// Layer `layer` up to the attention: norm, projections, per-head norms, RoPE (`rope` is
    /// the layer's table, `None` for a layer without RoPE).
    fn attention_inputs(
        &self,
        layer: usize,
        x: Tensor<3>,
        rope: Option<&RopeTables>,
    ) -> AttentionInputs;
    /// Layer `layer` after the attention: output projection, norms, MLP, residuals.
    fn after_attention(&self, layer: usize, x: Tensor<3>, attention: Tensor<3>) -> Tensor<3>;
    /// The final norm.
    fn final_norm(&self, x: Tensor<3>) -> Tensor<3>;
    /// The output head (an untied head or the tied embedding, the product's precision, the
    /// logit soft-cap), whose logits and backward every path shares.
    fn output_head(&self) -> OutputHead<'_>;
    /// Every LoRA-capable linear layer with its full Hugging Face module name, in model order.
    fn linear_layers(&self) -> Vec<(String, &dyn Adaptable)>;
    /// [`Decoder::linear_layers`], mutable.
    fn linear_layers_mut(&mut self) -> Vec<(String, &mut dyn Adaptable)>;
    /// Keeps the decoder layers' and an untied head's matrices in `dtype`
    /// ([`crate::store_product_weights_as`]).
    fn store_product_weights_as(&mut self, dtype: FloatDType);
}

/// One decoder layer of a family built on [`decoder::DecoderLm`] (`model.layers.N`).
pub(crate) trait DecoderLayer: burn::module::Module {
    /// The layer for `c` with `init`'s parameters.
    fn new(c: &ModelConfig, init: &mut Init) -> Self;
    /// Norm, q/k/v projections split into heads, per-head norms, RoPE.
    fn attention_inputs(
        &self,
        x: Tensor<3>,
        rope: Option<&RopeTables>,
        c: &ModelConfig,
    ) -> AttentionInputs;
    /// Output projection, residual, norms, MLP, residual.
    fn after_attention(&self, x: Tensor<3>, attention: Tensor<3>, c: &ModelConfig) -> Tensor<3>;
    /// The layer's linear layers, named relative to the layer (`self_attn.q_proj`).
    fn linear_layers(&self) -> Vec<(&'static str, &dyn Adaptable)>;
    /// [`DecoderLayer::linear_layers`], mutable.
    fn linear_layers_mut(&mut self) -> Vec<(&'static str, &mut dyn Adaptable)>;
}

/// Implements [`DecoderLayer::linear_layers`] and its mutable twin from one list of
/// `"hf.name" => field.path` entries, so a layer names its linear layers once.
macro_rules! linear_layers {
    ($($name:literal => $($field:ident).+),* $(,)?) => {
        fn linear_layers(&self) -> Vec<(&'static str, &dyn crate::lora::linear::Adaptable)> {
            vec![$(($name, &self.$($field).+ as &dyn crate::lora::linear::Adaptable)),*]
        }
        fn linear_layers_mut(
            &mut self,
        ) -> Vec<(&'static str, &mut dyn crate::lora::linear::Adaptable)> {
            vec![$(($name, &mut self.$($field).+ as &mut dyn crate::lora::linear::Adaptable)),*]
        }
    };
}
pub(crate) use linear_layers;

/// [`linear_layers!`] for a layer whose fields are `self_attn: SelfAttention` and
/// `mlp: GatedMlp` (Llama, OLMo 2, Gemma).
macro_rules! self_attn_and_gated_mlp_linear_layers {
    () => {
        crate::families::linear_layers! {
            "self_attn.q_proj" => self_attn.q_proj,
            "self_attn.k_proj" => self_attn.k_proj,
            "self_attn.v_proj" => self_attn.v_proj,
            "self_attn.o_proj" => self_attn.o_proj,
            "mlp.gate_proj" => mlp.gate_proj,
            "mlp.up_proj" => mlp.up_proj,
            "mlp.down_proj" => mlp.down_proj,
        }
    };
}
pub(crate) use self_attn_and_gated_mlp_linear_layers;

/// Per-layer linear layers named relative to their layer, as full names: `prefix.i.name`.
/// Generic over shared and mutable borrows, so both walks share it.
pub(crate) fn prefixed<T>(
    prefix: &str,
    layers: impl IntoIterator<Item = Vec<(&'static str, T)>>,
) -> Vec<(String, T)> {
    layers
        .into_iter()
        .enumerate()
        .flat_map(|(i, named)| {
            named
                .into_iter()
                .map(move |(name, linear)| (format!("{prefix}.{i}.{name}"), linear))
        })
        .collect()
}
