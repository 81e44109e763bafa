//! Rotary position embeddings in Hugging Face's rotate-half layout.
//!
//! burn's `RotaryEncoding` rotates interleaved pairs `(x0, x1), (x2, x3)…` (GPT-J style); HF Llama
//! pairs dimension `i` with `i + head_dim/2`. The tables are computed on the host in f32 the way
//! transformers computes them (`inv_freq` in f32, `pos * inv_freq` rounded to f32), so that the
//! angles agree bit for bit before the cosine.

use burn::prelude::*;

mod config;

pub use config::{RopeConfig, RopeScaling};
pub(crate) use config::{resolve_rope, resolve_rope_params};

/// Inverse frequencies `[head_dim / 2]`, with the configured scaling applied, for a forward
/// within the original context (`longrope`: the short factors).
pub fn inverse_frequencies(rope: &RopeConfig, head_dim: usize) -> Vec<f32> {
    rope_frequencies(rope, head_dim, 0).0
}

/// Inverse frequencies `[head_dim / 2]` and the factor on the cosines and sines (1 but for
/// `yarn` and `longrope`), for a forward whose largest position is `seq_len - 1` (`longrope`
/// switches to its long factors past the original context, as transformers does per forward).
/// Computed in f32 in transformers' order of operations.
pub fn rope_frequencies(rope: &RopeConfig, head_dim: usize, seq_len: usize) -> (Vec<f32>, f32) {
    let base = rope.theta as f32;
    let mut inv: Vec<f32> = (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            1.0 / base.powf(exponent)
        })
        .collect();
    let mut attention_factor = 1.0f32;
    match &rope.scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            let factor = *factor as f32;
            inv.iter_mut().for_each(|f| *f /= factor);
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            // transformers' `_compute_llama3_parameters`, scalar by scalar.
            let (factor, low_freq_factor, high_freq_factor) =
                (*factor, *low_freq_factor, *high_freq_factor);
            let old_context = *original_max_position_embeddings as f64;
            let low_freq_wavelen = old_context / low_freq_factor;
            let high_freq_wavelen = old_context / high_freq_factor;
            for f in inv.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / f64::from(*f);
                let scaled = if wavelen > low_freq_wavelen {
                    f64::from(*f) / factor
                } else {
                    f64::from(*f)
                };
                // Neither high (`wavelen < high_freq_wavelen`) nor low frequency; wavelengths are finite.
                let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                *f = if medium {
                    let smooth = (old_context / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    ((1.0 - smooth) * scaled / factor + smooth * scaled) as f32
                } else {
                    scaled as f32
                };
            }
        }
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            truncate,
            attention_factor: scale,
        } => {
            // transformers' `_compute_yarn_parameters`.
            let dim = head_dim as f64;
            let base_f64 = rope.theta;
            let correction_dim = |rotations: f64| {
                dim * (*original_max_position_embeddings as f64
                    / (rotations * 2.0 * std::f64::consts::PI))
                    .ln()
                    / (2.0 * base_f64.ln())
            };
            let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
            if low == high {
                high += 0.001;
            }
            let factor = *factor as f32;
            for (i, f) in inv.iter_mut().enumerate() {
                let pos_freq = base_power(rope, i, head_dim);
                let extrapolation = 1.0 / pos_freq;
                let interpolation = 1.0 / (factor * pos_freq);
                let ramp = ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                let keep = 1.0 - ramp;
                *f = interpolation * (1.0 - keep) + extrapolation * keep;
            }
            attention_factor = *scale as f32;
        }
        RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings,
            attention_factor: scale,
        } => {
            // transformers' `_compute_longrope_parameters` with the forward's length.
            let factors = if seq_len > *original_max_position_embeddings {
                long_factor
            } else {
                short_factor
            };
            for (i, (f, ext)) in inv.iter_mut().zip(factors).enumerate() {
                *f = 1.0 / (*ext as f32 * base_power(rope, i, head_dim));
            }
            attention_factor = *scale as f32;
        }
    }
    (inv, attention_factor)
}

/// `theta^(2i / dim)`, in f32 as transformers computes it.
fn base_power(rope: &RopeConfig, i: usize, dim: usize) -> f32 {
    (rope.theta as f32).powf((2 * i) as f32 / dim as f32)
}

/// Cosine and sine tables `[seq_len, head_dim]` for positions `0..seq_len` (`head_dim`: the
/// rotated width), for a forward whose largest position is `forward_len - 1` (what `longrope`
/// chooses its factors by).
fn rope_tables(
    rope: &RopeConfig,
    head_dim: usize,
    seq_len: usize,
    forward_len: usize,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let (inv, attention_factor) = rope_frequencies(rope, head_dim, forward_len);
    let half = inv.len();
    let mut cos = Vec::with_capacity(seq_len * head_dim);
    let mut sin = Vec::with_capacity(seq_len * head_dim);
    for pos in 0..seq_len {
        let angles: Vec<f32> = inv.iter().map(|f| pos as f32 * f).collect();
        // `emb = cat(freqs, freqs)`: both halves use the same angles.
        for _ in 0..2 {
            cos.extend(
                angles
                    .iter()
                    .map(|a| f64::from(*a).cos() as f32 * attention_factor),
            );
            sin.extend(
                angles
                    .iter()
                    .map(|a| f64::from(*a).sin() as f32 * attention_factor),
            );
        }
    }
    debug_assert_eq!(cos.len(), seq_len * 2 * half);
    let shape = [seq_len, head_dim];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

/// Cosine and sine tables `[1 or rows, 1, T, rotary_dim]` for the positions of one forward pass.
#[derive(Debug, Clone)]
pub struct RopeTables {
    /// Cosines.
    pub cos: Tensor<4>,
    /// Sines.
    pub sin: Tensor<4>,
}

impl RopeTables {
    /// The tables of `rope` over `rotary_dim` dimensions for `positions`: `None` for plain rows
    /// (positions `0..seq`), else `[rows, seq]` positions each below `seq`.
    pub(crate) fn new(
        rope: &RopeConfig,
        rotary_dim: usize,
        seq: usize,
        positions: Option<&Tensor<2, Int>>,
        device: &Device,
    ) -> Self {
        // `longrope` picks its factors by the forward's largest position (transformers:
        // `max(position_ids) + 1`), read back only for it.
        let forward_len = match (&rope.scaling, positions) {
            (RopeScaling::LongRope { .. }, Some(p)) if seq > 0 => {
                (p.clone().max().into_scalar::<i64>().max(0) as usize + 1).min(seq)
            }
            _ => seq,
        };
        let (cos, sin) = rope_tables(rope, rotary_dim, seq, forward_len, device);
        match positions {
            None => Self {
                cos: cos.unsqueeze::<4>(),
                sin: sin.unsqueeze::<4>(),
            },
            Some(p) => {
                let [rows, _] = p.dims();
                let at = |table: Tensor<2>| {
                    table
                        .select(0, p.clone().reshape([rows * seq]))
                        .reshape([rows, 1, seq, rotary_dim])
                };
                Self {
                    cos: at(cos),
                    sin: at(sin),
                }
            }
        }
    }
}

/// Applies RoPE to `x` `[batch, heads, seq, head_dim]`: `x * cos + rotate_half(x) * sin`, where
/// `rotate_half([a, b]) = [-b, a]` on the two halves, over the tables' leading `rotary_dim`
/// dimensions; the rest pass unchanged (`partial_rotary_factor`).
pub fn apply_rope_tables(x: Tensor<4>, tables: &RopeTables) -> Tensor<4> {
    let [_, _, _, head_dim] = x.dims();
    let rotary_dim = tables.cos.dims()[3];
    if rotary_dim < head_dim {
        let rotated = rotate(x.clone().narrow(3, 0, rotary_dim), tables);
        let passed = x.narrow(3, rotary_dim, head_dim - rotary_dim);
        return Tensor::cat(vec![rotated, passed], 3);
    }
    rotate(x, tables)
}

fn rotate(x: Tensor<4>, tables: &RopeTables) -> Tensor<4> {
    let [_, _, _, dim] = x.dims();
    let half = dim / 2;
    let first = x.clone().narrow(3, 0, half);
    let second = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * tables.cos.clone() + rotated * tables.sin.clone()
}
