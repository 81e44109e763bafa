//! `Qwen3ForCausalLM` (Qwen3 dense models; TRL's DPO quick start trains `Qwen/Qwen3-0.6B`).
//!
//! The Llama layer with RMSNorms over each query and key head (`self_attn.q_norm`,
//! `self_attn.k_norm`, before RoPE), an explicit `head_dim` (128 in the released models, not
//! hidden / heads), no biases by default, and per-layer sliding windows from `layer_types` when
//! `use_sliding_window` is set.

use super::Family;
use super::decoder::new_decoder_lm;
use super::llama::{LlamaLike, with_windows};
use crate::causal_lm::CausalLm;
use crate::config::{Architecture, ModelConfig, QkNorm};
use crate::error::ModelError;
use crate::hf_config::HfConfig;

/// `Qwen3ForCausalLM`.
pub(crate) const QWEN3: Family = Family {
    model_types: &["qwen3"],
    architecture: Architecture::Qwen3,
    resolve: resolve_qwen3,
    build: |c, init| CausalLm::Qwen3(new_decoder_lm(c, init)),
    peft_targets: Some(&["q_proj", "v_proj"]),
};

fn resolve_qwen3(hf: &HfConfig, model_type: &str) -> Result<ModelConfig, ModelError> {
    let like = LlamaLike::new(hf, model_type);
    let mut c = like.resolve()?;
    c.architecture = Architecture::Qwen3;
    c.qk_norm = QkNorm::PerHead;
    let windows = like.layer_windows(c.num_hidden_layers)?;
    Ok(with_windows(c, windows))
}
