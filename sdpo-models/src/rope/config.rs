//! RoPE settings: the scaling types and their resolution from `config.json`
//! (`rope_parameters` in transformers 5, `rope_theta` + `rope_scaling` in 4).

use serde_json::Value;

use crate::config::unsupported;
use crate::error::ModelError;
use crate::hf_config::{HfConfig, HfRopeParameters};

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: default`).
    None,
    /// `linear`: every inverse frequency divided by `factor`.
    Linear {
        /// Divisor of the inverse frequencies.
        factor: f64,
    },
    /// `llama3`: low frequencies divided by `factor`, high ones kept, smooth in between.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Lower edge of the smoothing band (in units of the original context).
        low_freq_factor: f64,
        /// Upper edge of the smoothing band.
        high_freq_factor: f64,
        /// Pre-training context length.
        original_max_position_embeddings: usize,
    },
    /// `yarn` (Qwen3 long context): frequencies between `beta_fast` and `beta_slow` rotations
    /// over the original context ramp from kept to divided by `factor`; cosines and sines
    /// scaled by `attention_factor`.
    Yarn {
        /// Divisor of the interpolated frequencies.
        factor: f64,
        /// Pre-training context length.
        original_max_position_embeddings: usize,
        /// Rotations above which a frequency is kept (32).
        beta_fast: f64,
        /// Rotations below which a frequency is interpolated (1).
        beta_slow: f64,
        /// Round the ramp's ends outwards (`truncate`, true).
        truncate: bool,
        /// Factor on the cosines and sines (`attention_factor`, else from `mscale`s and `factor`).
        attention_factor: f64,
    },
    /// `longrope` (Phi-3.5, Phi-4-mini): each frequency divided by its own factor, the
    /// `long_factor`s once a forward's positions pass the original context, else the
    /// `short_factor`s; cosines and sines scaled by `attention_factor`.
    LongRope {
        /// Per-frequency divisors within the original context.
        short_factor: Vec<f64>,
        /// Per-frequency divisors beyond it.
        long_factor: Vec<f64>,
        /// Pre-training context length.
        original_max_position_embeddings: usize,
        /// Factor on the cosines and sines.
        attention_factor: f64,
    },
}

/// Rotary position embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Base of the frequencies (`rope_theta`).
    pub theta: f64,
    /// Frequency rescaling.
    pub scaling: RopeScaling,
}

/// Resolves `rope_parameters` (v5) or `rope_theta` + `rope_scaling` (v4).
pub(crate) fn resolve_rope(hf: &HfConfig, model_type: &str) -> Result<RopeConfig, ModelError> {
    let params: Option<&HfRopeParameters> =
        hf.rope_parameters.as_ref().or(hf.rope_scaling.as_ref());
    let key = if hf.rope_parameters.is_some() {
        "rope_parameters"
    } else {
        "rope_scaling"
    };
    if let Some(kind) = params.and_then(|p| {
        ["full_attention", "sliding_attention"]
            .into_iter()
            .find(|k| p.extra.contains_key(*k))
    }) {
        // Per-layer-type RoPE (Gemma 3's layout) in a family that has one RoPE.
        return Err(unsupported(
            model_type,
            &format!("{key}.{kind}"),
            "per-layer-type RoPE",
        ));
    }
    resolve_rope_params(hf, params, key, 10_000.0, model_type)
}

/// One set of RoPE parameters (`params`, read from `key`), `rope_theta` falling back to the
/// top-level key and then to `default_theta`.
pub(crate) fn resolve_rope_params(
    hf: &HfConfig,
    params: Option<&HfRopeParameters>,
    key: &str,
    default_theta: f64,
    model_type: &str,
) -> Result<RopeConfig, ModelError> {
    let theta = params
        .and_then(|p| p.rope_theta)
        .or(hf.rope_theta)
        .unwrap_or(default_theta);
    let Some(params) = params else {
        return Ok(RopeConfig {
            theta,
            scaling: RopeScaling::None,
        });
    };
    let need = |v: Option<f64>, name: &str| {
        v.ok_or_else(|| ModelError::InvalidConfig {
            key: format!("{key}.{name}"),
            reason: format!("rope type `{}` needs it", params.kind()),
        })
    };
    // transformers: a top-level `original_max_position_embeddings` (Phi-3's layout) wins over
    // the one in the RoPE parameters, and `max_position_embeddings` stands in for both.
    let original = || {
        hf.extra_usize("original_max_position_embeddings")
            .or(params.original_max_position_embeddings)
            .or(hf.max_position_embeddings)
    };
    let missing = |kind: &str| ModelError::InvalidConfig {
        key: format!("{key}.original_max_position_embeddings"),
        reason: format!("rope type `{kind}` needs it"),
    };
    let scaling = match params.kind() {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need(params.factor, "factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need(params.factor, "factor")?,
            low_freq_factor: need(params.low_freq_factor, "low_freq_factor")?,
            high_freq_factor: need(params.high_freq_factor, "high_freq_factor")?,
            original_max_position_embeddings: original().ok_or_else(|| missing("llama3"))?,
        },
        "yarn" => {
            let factor = params
                .factor
                .or_else(|| Some(hf.max_position_embeddings? as f64 / original()? as f64))
                .ok_or_else(|| ModelError::InvalidConfig {
                    key: format!("{key}.factor"),
                    reason: "rope type `yarn` needs it".into(),
                })?;
            let extra = |name: &str| params.extra.get(name).and_then(Value::as_f64);
            let mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let attention_factor = match (
                extra("attention_factor"),
                extra("mscale"),
                extra("mscale_all_dim"),
            ) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                    mscale(factor, m) / mscale(factor, all)
                }
                _ => mscale(factor, 1.0),
            };
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original().ok_or_else(|| missing("yarn"))?,
                beta_fast: extra("beta_fast").filter(|b| *b != 0.0).unwrap_or(32.0),
                beta_slow: extra("beta_slow").filter(|b| *b != 0.0).unwrap_or(1.0),
                truncate: params
                    .extra
                    .get("truncate")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                attention_factor,
            }
        }
        "longrope" => {
            let original = original().ok_or_else(|| missing("longrope"))?;
            let factors = |name: &str| -> Result<Vec<f64>, ModelError> {
                params
                    .extra
                    .get(name)
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                    .ok_or_else(|| ModelError::InvalidConfig {
                        key: format!("{key}.{name}"),
                        reason: "rope type `longrope` needs a list of numbers".into(),
                    })
            };
            let factor = params.factor.or_else(|| {
                hf.max_position_embeddings
                    .map(|m| m as f64 / original as f64)
            });
            let attention_factor =
                match params.extra.get("attention_factor").and_then(Value::as_f64) {
                    Some(a) => a,
                    None => match factor {
                        Some(f) if f > 1.0 => (1.0 + f.ln() / (original as f64).ln()).sqrt(),
                        _ => 1.0,
                    },
                };
            RopeScaling::LongRope {
                short_factor: factors("short_factor")?,
                long_factor: factors("long_factor")?,
                original_max_position_embeddings: original,
                attention_factor,
            }
        }
        other => return Err(unsupported(model_type, &format!("{key}.rope_type"), other)),
    };
    Ok(RopeConfig { theta, scaling })
}
