//! bitsandbytes' blockwise quantization on the host, bit for bit as bitsandbytes 0.50 computes
//! it on the CPU: 4-bit codes (NF4, FP4) with one float32 `absmax` per block of 64 values, and
//! the 8-bit dynamic quantization of those `absmax` values ("double quantization", blocks of
//! 256). The exact operations and their order are in docs/quantization.md; the goldens are
//! `fixtures/qlora/quantize.safetensors`.

use super::QuantType;

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

/// bitsandbytes' CPU `quantize_blockwise` with the dynamic code (a C++ kernel): per block the
/// maximum `am` of `|v|` (a block of zeros gets codes 0), `s = clamp(v · (1/am), -1, 1)`,
/// `t = (s + 1) / 2`, and the code `lut[trunc(fma(t, 65535, 0.5))]` from a 65,536-entry table
/// of the number of code midpoints below each bin: not always the nearest code.
pub fn quantize_blockwise(values: &[f32], block: usize) -> (Vec<u8>, Vec<f32>) {
    let lut = blockwise_lut();
    let mut codes = Vec::with_capacity(values.len());
    let mut absmax = Vec::with_capacity(values.len().div_ceil(block));
    for chunk in values.chunks(block) {
        let max = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        absmax.push(max);
        if max == 0.0 {
            codes.extend(std::iter::repeat_n(0, chunk.len()));
            continue;
        }
        let inverse = 1.0 / max;
        codes.extend(chunk.iter().map(|v| {
            let t = ((v * inverse).clamp(-1.0, 1.0) + 1.0) * 0.5;
            lut[t.mul_add(65535.0, 0.5) as usize & 0xffff]
        }));
    }
    (codes, absmax)
}

/// The kernel's table: for `k` in 0..65536, the number of midpoints of [`dynamic_code`]
/// strictly below `2k / 65535 - 1` (float32).
fn blockwise_lut() -> &'static [u8; 65536] {
    static LUT: std::sync::OnceLock<Box<[u8; 65536]>> = std::sync::OnceLock::new();
    LUT.get_or_init(|| {
        let code = dynamic_code();
        let midpoints: Vec<f32> = code.windows(2).map(|w| (w[0] + w[1]) * 0.5).collect();
        let mut lut = Box::new([0u8; 65536]);
        for (k, entry) in lut.iter_mut().enumerate() {
            let value = (2 * k) as f32 / 65535.0 - 1.0;
            *entry = midpoints.partition_point(|m| *m < value) as u8;
        }
        lut
    })
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

/// bitsandbytes' signed 8-bit dynamic data type (`create_dynamic_map(signed=True)`) as float32
/// bits: for each decimal exponent e in -6..=0, the midpoints of `linspace(0.1, 1, 2^(e+6) + 1)`
/// scaled by `10^e` with both signs, plus 0 and 1, sorted. Kept as PyTorch computed them (its
/// vectorised `linspace` rounds differently from a scalar loop); `fixtures/qlora` holds the
/// same table as bitsandbytes returns it.
const DYNAMIC_CODE_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// The 256 values of bitsandbytes' signed dynamic 8-bit code, ascending, in [-1, 1].
pub fn dynamic_code() -> [f32; 256] {
    DYNAMIC_CODE_BITS.map(f32::from_bits)
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
