//! `SmolLM3ForCausalLM`: the Llama layer where every `no_rope_layer_interval`-th layer has no
//! rotary embedding (NoPE). `no_rope_layers[i]` is 1 where layer `i` uses RoPE and 0 where it
//! does not (transformers' naming); sliding windows from `layer_types` when
//! `use_sliding_window` is set.

use super::Family;
use super::decoder::new_decoder_lm;
use super::llama::{LlamaLike, with_windows};
use crate::causal_lm::CausalLm;
use crate::config::{Architecture, LayerRope, ModelConfig};
use crate::error::ModelError;
use crate::hf_config::HfConfig;

/// `SmolLM3ForCausalLM`.
pub(crate) const SMOLLM3: Family = Family {
    model_types: &["smollm3"],
    architecture: Architecture::SmolLm3,
    resolve: resolve_smollm3,
    build: |c, init| CausalLm::SmolLm3(new_decoder_lm(c, init)),
    // PEFT has no default for SmolLM3: an adapter must name its targets.
    peft_targets: None,
};

fn resolve_smollm3(hf: &HfConfig, model_type: &str) -> Result<ModelConfig, ModelError> {
    let like = LlamaLike::new(hf, model_type);
    let mut c = like.resolve()?;
    c.architecture = Architecture::SmolLm3;
    let layers = c.num_hidden_layers;
    // transformers' default: every 4th layer (3, 7, ...) without RoPE.
    let interval = hf.extra_usize("no_rope_layer_interval").unwrap_or(4);
    let uses_rope: Vec<bool> = match hf.extra.get("no_rope_layers").filter(|v| !v.is_null()) {
        None => (0..layers)
            .map(|i| (i + 1) % interval.max(1) != 0)
            .collect(),
        Some(value) => {
            let flags = value
                .as_array()
                .filter(|a| a.len() == layers)
                .ok_or_else(|| ModelError::InvalidConfig {
                    key: "no_rope_layers".into(),
                    reason: format!("{value} is not a list of {layers} flags"),
                })?;
            flags
                .iter()
                .map(|f| match f.as_u64() {
                    Some(0) => Ok(false),
                    Some(1) => Ok(true),
                    _ => Err(ModelError::InvalidConfig {
                        key: "no_rope_layers".into(),
                        reason: format!("{f} is not 0 or 1"),
                    }),
                })
                .collect::<Result<_, _>>()?
        }
    };
    for (layer, rope) in c.layers.iter_mut().zip(uses_rope) {
        if !rope {
            layer.rope = LayerRope::None;
        }
    }
    let windows = like.layer_windows(layers)?;
    Ok(with_windows(c, windows))
}
