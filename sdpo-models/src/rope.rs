//! Rotary position embeddings in Hugging Face's rotate-half layout.
//!
//! burn's `RotaryEncoding` rotates interleaved pairs `(x0, x1), (x2, x3)…` (GPT-J style); HF Llama
//! pairs dimension `i` with `i + head_dim/2`. The tables are computed on the host in f32 the way
//! transformers computes them (`inv_freq` in f32, `pos * inv_freq` rounded to f32), so that the
//! angles agree bit for bit before the cosine.

use burn::prelude::*;

use crate::config::{RopeConfig, RopeScaling};

/// Inverse frequencies `[head_dim / 2]`, with the configured scaling applied.
pub fn inverse_frequencies(rope: &RopeConfig, head_dim: usize) -> Vec<f32> {
    let base = rope.theta as f32;
    let mut inv: Vec<f32> = (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            1.0 / base.powf(exponent)
        })
        .collect();
    match rope.scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            let factor = factor as f32;
            inv.iter_mut().for_each(|f| *f /= factor);
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            // transformers' `_compute_llama3_parameters`, scalar by scalar.
            let old_context = original_max_position_embeddings as f64;
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
    }
    inv
}

/// Cosine and sine tables `[seq_len, head_dim]` for positions `0..seq_len` (`head_dim`: the
/// rotated width).
pub fn rope_tables(
    rope: &RopeConfig,
    head_dim: usize,
    seq_len: usize,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let inv = inverse_frequencies(rope, head_dim);
    let half = inv.len();
    let mut cos = Vec::with_capacity(seq_len * head_dim);
    let mut sin = Vec::with_capacity(seq_len * head_dim);
    for pos in 0..seq_len {
        let angles: Vec<f32> = inv.iter().map(|f| pos as f32 * f).collect();
        // `emb = cat(freqs, freqs)`: both halves use the same angles.
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| f64::from(*a).cos() as f32));
            sin.extend(angles.iter().map(|a| f64::from(*a).sin() as f32));
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
        let (cos, sin) = rope_tables(rope, rotary_dim, seq, device);
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
