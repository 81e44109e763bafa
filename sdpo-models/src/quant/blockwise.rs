//! bitsandbytes' blockwise quantization on the host, bit for bit as bitsandbytes 0.50 computes
//! it on the CPU: 4-bit codes (NF4, FP4) with one float32 `absmax` per block of 64 values, and
//! the 8-bit dynamic quantization of those `absmax` values ("double quantization", blocks of
//! 256). The exact operations and their order are in docs/quantization.md; the goldens are
//! `fixtures/qlora/quantize.safetensors`.

use super::QuantType;
pub use super::dynamic::{dynamic_code, quantize_blockwise};

/// Values per 4-bit block (bitsandbytes' default `blocksize` for `quantize_4bit`).
pub const BLOCK_4BIT: usize = 64;

/// `absmax` values per block of the double quantization (bitsandbytes' nested `blocksize`).
pub const BLOCK_NESTED: usize = 256;

/// NormalFloat4: the 16 quantiles of N(0, 1) normalised to [-1, 1] (QLoRA's data type), as
/// bitsandbytes' `get_4bit_type("nf4")`.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bits) normalised to [-1, 1], indexed by
/// the 4-bit code, as `get_4bit_type("fp4")`.
pub const FP4_CODE: [f32; 16] = [
    0.0,
    0.005_208_333_5,
    0.666_666_7,
    1.0,
    0.333_333_34,
    0.5,
    0.166_666_67,
    0.25,
    -0.0,
    -0.005_208_333_5,
    -0.666_666_7,
    -1.0,
    -0.333_333_34,
    -0.5,
    -0.166_666_67,
    -0.25,
];

impl QuantType {
    /// The 16 values the codes stand for (before the block's `absmax` scale).
    pub fn code(self) -> &'static [f32; 16] {
        match self {
            Self::Nf4 => &NF4_CODE,
            Self::Fp4 => &FP4_CODE,
        }
    }
}

/// A tensor quantized to 4 bits: one code (0..16) per value, one `absmax` per block.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocks4bit {
    /// One code per value (unpacked), `numel` of them.
    pub codes: Vec<u8>,
    /// `ceil(numel / 64)` block maxima of `|value|`.
    pub absmax: Vec<f32>,
}

/// `absmax` values quantized to 8 bits ([`double_quantize`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NestedAbsmax {
    /// One 8-bit code of `absmax - offset` per 4-bit block.
    pub codes: Vec<u8>,
    /// `ceil(blocks / 256)` maxima of `|absmax - offset|`.
    pub absmax: Vec<f32>,
    /// The mean of the `absmax` values, subtracted before and added back after.
    pub offset: f32,
}

/// The 4-bit code of each scaled value (in [-1, 1]): the number of the 15 float32 midpoints
/// between the sorted code values that lie strictly below it (`torch.bucketize`; a value on a
/// midpoint takes the lower code), mapped back from sorted order to the code's own order.
struct Bucketizer {
    midpoints: [f32; 15],
    code_of_sorted: [u8; 16],
}

impl Bucketizer {
    fn new(quant_type: QuantType) -> Self {
        let code_of_sorted: [u8; 16] = match quant_type {
            QuantType::Nf4 => std::array::from_fn(|i| i as u8),
            // `argsort` of the FP4 table (whose entry 8 is +0 when quantizing, after entry 0).
            QuantType::Fp4 => [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3],
        };
        let table = quant_type.code();
        // The quantization table's FP4 entry 8 is +0.0 (the dequantization table's is -0.0).
        let sorted: Vec<f32> = code_of_sorted
            .iter()
            .map(|&c| table[c as usize] + 0.0)
            .collect();
        let midpoints = std::array::from_fn(|j| (sorted[j] + sorted[j + 1]) / 2.0);
        Self {
            midpoints,
            code_of_sorted,
        }
    }

    fn code(&self, scaled: f32) -> u8 {
        let below = self.midpoints.iter().filter(|m| **m < scaled).count();
        self.code_of_sorted[below]
    }
}

/// bitsandbytes' `quantize_4bit(A, blocksize=64, quant_type)` of the values of `A` in
/// row-major order (its CPU path, the portable PyTorch kernel): per block `absmax = max |v|`;
/// a full block's values are multiplied by the float32 reciprocal of `max(absmax, 1e-38)`, a
/// partial last block's divided by its `absmax` clamped to 1e-38 (and stored clamped); the
/// result clamped to [-1, 1] and bucketed between the code's midpoints.
pub fn quantize_4bit(values: &[f32], quant_type: QuantType) -> Blocks4bit {
    const TINY: f32 = 1e-38;
    let bucketizer = Bucketizer::new(quant_type);
    let mut codes = Vec::with_capacity(values.len());
    let mut absmax = Vec::with_capacity(values.len().div_ceil(BLOCK_4BIT));
    for chunk in values.chunks(BLOCK_4BIT) {
        let max = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if chunk.len() == BLOCK_4BIT {
            let inverse = 1.0 / max.max(TINY);
            codes.extend(
                chunk
                    .iter()
                    .map(|v| bucketizer.code((v * inverse).clamp(-1.0, 1.0))),
            );
            absmax.push(max);
        } else {
            let max = max.max(TINY);
            codes.extend(
                chunk
                    .iter()
                    .map(|v| bucketizer.code((v / max).clamp(-1.0, 1.0))),
            );
            absmax.push(max);
        }
    }
    Blocks4bit { codes, absmax }
}

/// The double quantization of `absmax` (`compress_statistics=True`): the mean (`torch.mean`)
/// is subtracted and the rest quantized to 8 bits with [`dynamic_code`] in blocks of 256 by
/// bitsandbytes' CPU kernel ([`quantize_blockwise`]).
pub fn double_quantize(absmax: &[f32]) -> NestedAbsmax {
    let offset = if absmax.is_empty() {
        0.0
    } else {
        torch_sum(absmax) / absmax.len() as f32
    };
    let centred: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
    let (codes, nested) = quantize_blockwise(&centred, BLOCK_NESTED);
    NestedAbsmax {
        codes,
        absmax: nested,
        offset,
    }
}

/// `torch.sum` of a contiguous float32 vector as ATen's CPU cascade sum adds it on x86 with
/// one thread (below 32,768 values it never splits): 8-lane vectors, four interleaved rows,
/// accumulators in levels of `2^max(4, ⌈log2 m⌉ / 4)`; the tail, then the lanes in order.
/// This is what makes `offset` (the mean of the block maxima) bit for bit bitsandbytes'.
pub fn torch_sum(values: &[f32]) -> f32 {
    const LANES: usize = 8;
    if values.len() < LANES {
        return row_sum::<1>(values.len(), |i| [values[i]])[0];
    }
    let vectors = values.len() / LANES;
    let lanes = row_sum::<LANES>(vectors, |i| std::array::from_fn(|k| values[i * LANES + k]));
    let mut sum = 0.0f32;
    for v in &values[vectors * LANES..] {
        sum += v;
    }
    for lane in lanes {
        sum += lane;
    }
    sum
}

fn add<const W: usize>(a: &mut [f32; W], b: &[f32; W]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// ATen's `row_sum`: four interleaved rows through [`multi_row_sum`], the leftovers into the
/// first, then `((p0 + p1) + p2) + p3`.
fn row_sum<const W: usize>(size: usize, load: impl Fn(usize) -> [f32; W]) -> [f32; W] {
    const ILP: usize = 4;
    let rows = size / ILP;
    let mut partial = multi_row_sum::<W>(rows, |i, k| load(i * ILP + k));
    for i in rows * ILP..size {
        add(&mut partial[0], &load(i));
    }
    let mut sum = partial[0];
    for p in &partial[1..] {
        add(&mut sum, p);
    }
    sum
}

/// ATen's `multi_row_sum`: four accumulator levels, each flushed into the next every
/// `2^level_power` rows.
fn multi_row_sum<const W: usize>(
    size: usize,
    load: impl Fn(usize, usize) -> [f32; W],
) -> [[f32; W]; 4] {
    const LEVELS: usize = 4;
    const ROWS: usize = 4;
    let ceil_log2 = if size <= 1 {
        0
    } else {
        usize::BITS - (size - 1).leading_zeros()
    } as usize;
    let power = (ceil_log2 / LEVELS).max(4);
    let step = 1usize << power;
    let mask = step - 1;
    let mut acc = [[[0.0f32; W]; ROWS]; LEVELS];
    let mut i = 0;
    while i + step <= size {
        for _ in 0..step {
            for (k, row) in acc[0].iter_mut().enumerate() {
                add(row, &load(i, k));
            }
            i += 1;
        }
        for j in 1..LEVELS {
            let (lower, upper) = acc.split_at_mut(j);
            for (high, low) in upper[0].iter_mut().zip(lower[j - 1].iter_mut()) {
                add(high, low);
                *low = [0.0; W];
            }
            if i & (mask << (j * power)) != 0 {
                break;
            }
        }
    }
    while i < size {
        for (k, row) in acc[0].iter_mut().enumerate() {
            add(row, &load(i, k));
        }
        i += 1;
    }
    let [mut out, rest @ ..] = acc;
    for level in &rest {
        for (row, extra) in out.iter_mut().zip(level) {
            add(row, extra);
        }
    }
    out
}

/// Codes packed two per byte as bitsandbytes stores them: the even-indexed value in the high
/// nibble; an odd count is padded with the code of 0.0 (NF4 7, FP4 0), as bitsandbytes pads
/// the values.
pub fn pack_bnb_bytes(codes: &[u8], quant_type: QuantType) -> Vec<u8> {
    let pad = Bucketizer::new(quant_type).code(0.0);
    codes
        .chunks(2)
        .map(|pair| (pair[0] << 4) | pair.get(1).copied().unwrap_or(pad))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_a_midpoint_takes_the_lower_code() {
        let nf4 = Bucketizer::new(QuantType::Nf4);
        let mid = (NF4_CODE[7] + NF4_CODE[8]) / 2.0;
        assert_eq!(nf4.code(mid), 7);
        assert_eq!(nf4.code(f32::from_bits(mid.to_bits() + 1)), 8);
        assert_eq!(nf4.code(-1.0), 0);
        assert_eq!(nf4.code(1.0), 15);
        let fp4 = Bucketizer::new(QuantType::Fp4);
        assert_eq!(fp4.code(0.0), 0);
        assert_eq!(
            fp4.code(1e-4),
            8,
            "bitsandbytes' \"negative zero\" code for tiny positives"
        );
        assert_eq!(fp4.code(-1.0), 11);
    }

    #[test]
    fn the_sum_matches_plain_addition_on_exact_values() {
        let values: Vec<f32> = (0..1000).map(|i| (i % 7) as f32).collect();
        let plain: f32 = values.iter().sum();
        assert_eq!(torch_sum(&values), plain);
        assert_eq!(torch_sum(&values[..5]), 10.0);
    }

    #[test]
    fn dynamic_code_is_sorted_and_spans_minus_one_to_one() {
        let code = dynamic_code();
        assert!(code.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(code[255], 1.0);
        assert!(code[0] > -1.0 && code[0] < -0.99);
        assert_eq!(code.iter().filter(|c| **c == 0.0).count(), 1);
    }

    #[test]
    fn packing_puts_the_even_value_high_and_pads_with_the_code_of_zero() {
        let codes = [1u8, 15, 7, 0, 9];
        let bytes = pack_bnb_bytes(&codes, QuantType::Fp4);
        assert_eq!(bytes, vec![0x1f, 0x70, 0x90]);
        assert_eq!(pack_bnb_bytes(&codes, QuantType::Nf4)[2], 0x97);
    }
}
