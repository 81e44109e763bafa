//! `Olmo2ForCausalLM`: norms after the attention and after the MLP instead of before them
//! (`post_attention_layernorm`, `post_feedforward_layernorm`, each applied to the sublayer's
//! output before the residual sum; no `input_layernorm`), and RMSNorms over the whole query and
//! key projections (`self_attn.q_norm` of width `heads * head_dim`, `k_norm` of width
//! `kv_heads * head_dim`) before RoPE.

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::prelude::*;

use super::decoder::{DecoderLm, new_decoder_lm};
use super::llama::LlamaLike;
use super::parts::{GatedMlp, SelfAttention};
use super::{DecoderLayer, Family, self_attn_and_gated_mlp_linear_layers};
use crate::causal_lm::CausalLm;
use crate::config::{Architecture, ModelConfig, QkNorm};
use crate::error::ModelError;
use crate::hf_config::HfConfig;
use crate::init::Init;
use crate::rope::RopeTables;
use crate::stack::AttentionInputs;

/// `Olmo2ForCausalLM`.
pub(crate) const OLMO2: Family = Family {
    model_types: &["olmo2"],
    architecture: Architecture::Olmo2,
    resolve: resolve_olmo2,
    build: |c, init| CausalLm::Olmo2(new_decoder_lm(c, init)),
    // PEFT has no default for OLMo 2: an adapter must name its targets.
    peft_targets: None,
};

/// `Olmo2ForCausalLM`.
pub type Olmo2ForCausalLm = DecoderLm<Olmo2DecoderLayer>;

/// One decoder block (`model.layers.N`).
#[derive(Module, Debug)]
pub struct Olmo2DecoderLayer {
    /// Attention projections with whole-width query/key norms.
    pub self_attn: SelfAttention,
    /// Gated SiLU MLP.
    pub mlp: GatedMlp,
    /// Norm of the attention's output.
    pub post_attention_layernorm: RmsNorm,
    /// Norm of the MLP's output.
    pub post_feedforward_layernorm: RmsNorm,
}

impl DecoderLayer for Olmo2DecoderLayer {
    fn new(c: &ModelConfig, init: &mut Init) -> Self {
        Self {
            self_attn: SelfAttention::new(c, init),
            mlp: GatedMlp::new(c, init),
            post_attention_layernorm: init.rms_norm(c.hidden_size, c.norm_eps, 0.0),
            post_feedforward_layernorm: init.rms_norm(c.hidden_size, c.norm_eps, 0.0),
        }
    }

    fn attention_inputs(
        &self,
        x: Tensor<3>,
        rope: Option<&RopeTables>,
        c: &ModelConfig,
    ) -> AttentionInputs {
        let [q, k, v] = self.self_attn.heads(x, c);
        AttentionInputs::rotated(q, k, v, rope)
    }

    fn after_attention(&self, x: Tensor<3>, attention: Tensor<3>, c: &ModelConfig) -> Tensor<3> {
        let attention = self.self_attn.output(attention, c);
        let x = x + self.post_attention_layernorm.forward(attention);
        let mlp = self.mlp.forward(x.clone(), c);
        x + self.post_feedforward_layernorm.forward(mlp)
    }

    self_attn_and_gated_mlp_linear_layers!();
}

fn resolve_olmo2(hf: &HfConfig, model_type: &str) -> Result<ModelConfig, ModelError> {
    let like = LlamaLike::new(hf, model_type);
    let mut c = like.resolve()?;
    c.architecture = Architecture::Olmo2;
    c.qk_norm = QkNorm::Whole;
    Ok(c)
}
