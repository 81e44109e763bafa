//! [`Quantized4bit`]: a frozen linear weight held as 4-bit codes on the device and dequantized
//! with tensor operations every backend has (shifts, masks, `select`, products), one layer at
//! a time inside the forward pass.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::{DType, TensorCreationOptions};

use super::blockwise::{BLOCK_4BIT, BLOCK_NESTED, Blocks4bit, NestedAbsmax, dynamic_code};
use super::{Bnb4bitConfig, QuantType};
use crate::error::ModelError;
use crate::precision::MatmulPrecision;

/// The per-block scales of a [`Quantized4bit`] weight.
// One per layer; the size of the handles does not matter next to the tensors they hold.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum BlockScales {
    /// One float32 `absmax` per block of 64 values.
    Plain(Tensor<1>),
    /// Double quantization: one 8-bit code per block (four per `i32` word), one float32
    /// maximum per 256 blocks, the 256-entry dynamic code, and the mean added back.
    Nested(NestedScales),
}

/// Double-quantized block scales ([`BlockScales::Nested`]).
#[derive(Module, Debug)]
pub struct NestedScales {
    /// 8-bit codes of `absmax - offset`, four per word (the first in the low byte), padded
    /// to whole nested blocks.
    pub codes: Tensor<1, Int>,
    /// `[ceil(blocks / 256)]`.
    pub absmax: Tensor<1>,
    /// bitsandbytes' signed dynamic code, `[256]`.
    pub code: Tensor<1>,
    /// The mean of the block maxima.
    #[module(skip)]
    pub offset: f32,
}

/// A frozen weight `[out, in]` quantized as bitsandbytes' `Linear4bit` holds it: 4-bit codes
/// (eight per `i32` word, the first in the lowest nibble; blocks of 64 values in the row-major
/// order of the `[out, in]` weight) and the scales of each block.
#[derive(Module, Debug)]
pub struct Quantized4bit {
    /// Packed codes, `blocks · 8` words.
    pub codes: Tensor<1, Int>,
    /// The block scales.
    pub scales: BlockScales,
    /// The 16 values of the data type (NF4 or FP4).
    pub code: Tensor<1>,
    /// `[out, in]`.
    #[module(skip)]
    pub shape: [usize; 2],
    /// NF4 or FP4.
    #[module(skip)]
    pub quant_type: QuantType,
    /// The dtype the base product runs in (`bnb_4bit_compute_dtype`).
    #[module(skip)]
    pub compute: MatmulPrecision,
}

/// Packs `values` (each below `1 << bits`) into `i32` words, `32 / bits` per word, the first in
/// the lowest bits; padded with zeros to `len` values.
fn pack_words(values: &[u8], bits: usize, len: usize) -> Vec<i32> {
    let per_word = 32 / bits;
    let mut words = vec![0u32; len.div_ceil(per_word)];
    for (i, &v) in values.iter().enumerate() {
        words[i / per_word] |= u32::from(v) << (bits * (i % per_word));
    }
    words.into_iter().map(|w| w as i32).collect()
}

/// The values packed by [`pack_words`], `words · 32 / bits` of them, as an index tensor.
fn unpack_words(words: Tensor<1, Int>, bits: usize) -> Tensor<1, Int> {
    let per_word = 32 / bits;
    let mask = (1i64 << bits) - 1;
    let [n] = words.dims();
    let parts: Vec<Tensor<1, Int>> = (0..per_word)
        .map(|j| {
            words
                .clone()
                .bitwise_right_shift_scalar((bits * j) as i64)
                .bitwise_and_scalar(mask)
        })
        .collect();
    Tensor::stack::<2>(parts, 1).reshape([n * per_word])
}

fn int_tensor(words: Vec<i32>, device: &Device) -> Tensor<1, Int> {
    let len = words.len();
    Tensor::from_data(
        TensorData::new(words, [len]),
        TensorCreationOptions::new(device.clone()).with_dtype(DType::I32),
    )
}

fn float_tensor(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

impl Quantized4bit {
    /// Quantizes the weight `values` (`[out, in]` row-major) as bitsandbytes' `Linear4bit`
    /// does when `config` asks for 4-bit loading.
    pub fn quantize(
        values: &[f32],
        shape: [usize; 2],
        config: &Bnb4bitConfig,
        device: &Device,
    ) -> Self {
        let blocks = super::blockwise::quantize_4bit(values, config.quant_type);
        let nested = config
            .double_quant
            .then(|| super::blockwise::double_quantize(&blocks.absmax));
        Self::from_blocks(blocks, nested, shape, config, device)
    }

    /// A weight from quantized blocks (and, with double quantization, their nested scales).
    pub fn from_blocks(
        blocks: Blocks4bit,
        nested: Option<NestedAbsmax>,
        shape: [usize; 2],
        config: &Bnb4bitConfig,
        device: &Device,
    ) -> Self {
        let n_blocks = blocks.absmax.len();
        let codes = int_tensor(pack_words(&blocks.codes, 4, n_blocks * BLOCK_4BIT), device);
        let scales = match nested {
            None => BlockScales::Plain(float_tensor(blocks.absmax, device)),
            Some(nested) => {
                let padded = nested.absmax.len() * BLOCK_NESTED;
                BlockScales::Nested(NestedScales {
                    codes: int_tensor(pack_words(&nested.codes, 8, padded), device),
                    absmax: float_tensor(nested.absmax, device),
                    code: float_tensor(dynamic_code().to_vec(), device),
                    offset: nested.offset,
                })
            }
        };
        Self {
            codes,
            scales,
            code: float_tensor(config.quant_type.code().to_vec(), device),
            shape,
            quant_type: config.quant_type,
            compute: config.compute_dtype,
        }
    }

    /// Number of 4-bit blocks.
    pub fn blocks(&self) -> usize {
        (self.shape[0] * self.shape[1]).div_ceil(BLOCK_4BIT)
    }

    /// The block maxima, float32 `[blocks]`: `code[q] · nested_absmax + offset` when double
    /// quantized.
    pub fn absmax(&self) -> Tensor<1> {
        match &self.scales {
            BlockScales::Plain(absmax) => absmax.clone(),
            BlockScales::Nested(nested) => {
                let [nested_blocks] = nested.absmax.dims();
                let q = unpack_words(nested.codes.clone(), 8);
                let values = nested
                    .code
                    .clone()
                    .select(0, q)
                    .reshape([nested_blocks, BLOCK_NESTED]);
                let scaled = values * nested.absmax.clone().reshape([nested_blocks, 1]);
                scaled
                    .reshape([nested_blocks * BLOCK_NESTED])
                    .slice(0..self.blocks())
                    .add_scalar(nested.offset)
            }
        }
    }

    /// The weight back in float32, `[out, in]`: `code[q] · absmax[block]` (bitsandbytes'
    /// `dequantize_4bit`).
    pub fn dequantize(&self) -> Tensor<2> {
        let blocks = self.blocks();
        let q = unpack_words(self.codes.clone(), 4);
        let values = self.code.clone().select(0, q).reshape([blocks, BLOCK_4BIT]);
        let scaled = values * self.absmax().reshape([blocks, 1]);
        let [out, d_in] = self.shape;
        scaled
            .reshape([blocks * BLOCK_4BIT])
            .slice(0..out * d_in)
            .reshape([out, d_in])
    }

    /// `x Wᵀ + b` with `W` dequantized for this product only; the product in the compute
    /// dtype, or in the run's lower precision when the run's products are in bf16/fp16.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, in]`; output `[batch, seq, out]`
    pub fn linear(&self, x: Tensor<3>, bias: Option<Tensor<1>>, run: MatmulPrecision) -> Tensor<3> {
        let precision = match run {
            MatmulPrecision::F32 => self.compute,
            lower => lower,
        };
        precision.linear(x, self.dequantize().transpose(), bias)
    }

    /// Bytes held on the device: codes, scales and code tables.
    pub fn bytes(&self) -> usize {
        let words = |t: &Tensor<1, Int>| t.dims()[0] * 4;
        let floats = |t: &Tensor<1>| t.dims()[0] * 4;
        let scales = match &self.scales {
            BlockScales::Plain(a) => floats(a),
            BlockScales::Nested(n) => words(&n.codes) + floats(&n.absmax) + floats(&n.code),
        };
        words(&self.codes) + scales + floats(&self.code)
    }
}

/// Checks the parts of a 4-bit weight read from a file against its shape: the number of codes,
/// of block scales and of nested scales, and every code in range. `name` is the tensor's name
/// in the file, for the error.
pub fn check_blocks(
    name: &str,
    shape: [usize; 2],
    blocks: &Blocks4bit,
    nested: Option<&NestedAbsmax>,
) -> Result<(), ModelError> {
    let bad = |reason: String| ModelError::InvalidQuantizedTensor {
        tensor: name.to_string(),
        reason,
    };
    let numel = shape[0] * shape[1];
    if blocks.codes.len() != numel {
        return Err(bad(format!(
            "{} codes for a [{}, {}] weight ({numel} values)",
            blocks.codes.len(),
            shape[0],
            shape[1]
        )));
    }
    if let Some((i, q)) = blocks.codes.iter().enumerate().find(|(_, q)| **q > 15) {
        return Err(bad(format!("code {q} at value {i} is not a 4-bit code")));
    }
    let expected_blocks = numel.div_ceil(BLOCK_4BIT);
    match nested {
        None => {
            if blocks.absmax.len() != expected_blocks {
                return Err(bad(format!(
                    "{} block scales (absmax) where {numel} values in blocks of {BLOCK_4BIT} \
                     need {expected_blocks}",
                    blocks.absmax.len()
                )));
            }
            if let Some(a) = blocks.absmax.iter().find(|a| !a.is_finite() || **a < 0.0) {
                return Err(bad(format!("block scale {a} is not a finite maximum")));
            }
        }
        Some(nested) => {
            if nested.codes.len() != expected_blocks {
                return Err(bad(format!(
                    "{} quantized block scales where {expected_blocks} blocks need as many",
                    nested.codes.len()
                )));
            }
            let expected_nested = expected_blocks.div_ceil(BLOCK_NESTED);
            if nested.absmax.len() != expected_nested {
                return Err(bad(format!(
                    "{} nested scales where {expected_blocks} blocks in nested blocks of \
                     {BLOCK_NESTED} need {expected_nested}",
                    nested.absmax.len()
                )));
            }
            if !nested.offset.is_finite() || nested.absmax.iter().any(|a| !a.is_finite()) {
                return Err(bad("a nested scale or the offset is not finite".into()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_hold_eight_nibbles_or_four_bytes_low_first() {
        let words = pack_words(&[1, 2, 3, 4, 5, 6, 7, 15, 9], 4, 16);
        assert_eq!(words, vec![0xf765_4321u32 as i32, 9]);
        let bytes = pack_words(&[0xff, 1, 0x80], 8, 4);
        assert_eq!(bytes, vec![0x0080_01ff]);
    }

    #[test]
    fn unpacking_gives_the_packed_values_back_even_with_the_sign_bit_set() {
        let device = Device::default();
        let values: Vec<u8> = (0..32).map(|i| (i * 7 % 16) as u8).collect();
        let words = int_tensor(pack_words(&values, 4, 32), &device);
        let back: Vec<i64> = unpack_words(words, 4)
            .into_data()
            .convert::<i64>()
            .try_to_vec()
            .expect("ints");
        assert_eq!(
            back,
            values.iter().map(|&v| i64::from(v)).collect::<Vec<_>>()
        );
        let bytes: Vec<u8> = vec![255, 128, 0, 7, 200];
        let words = int_tensor(pack_words(&bytes, 8, 8), &device);
        let back: Vec<i64> = unpack_words(words, 8)
            .into_data()
            .convert::<i64>()
            .try_to_vec()
            .expect("ints");
        assert_eq!(back, vec![255, 128, 0, 7, 200, 0, 0, 0]);
    }
}
