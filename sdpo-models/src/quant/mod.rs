//! 4-bit frozen bases (QLoRA): the linear weights of the decoder held as bitsandbytes' NF4 or
//! FP4 codes with per-block scales, dequantized one layer at a time inside the forward pass.
//!
//! [`CausalLm::quantize_4bit`] replaces every linear layer's float weight by a
//! [`Quantized4bit`] (codes and scales bit for bit as bitsandbytes 0.50's `quantize_4bit` on
//! the CPU makes them; [`blockwise`]); embeddings, norms, biases and the output head stay in
//! float32, as transformers leaves them. An adapter attached afterwards trains on top
//! ([`CausalLm::attach_lora`], [`CausalLm::load_adapter`]); the adapter-disabled model is the
//! quantized base, which makes it the DPO reference without a second copy.
//!
//! ```no_run
//! use burn::prelude::*;
//! use sdpo_models::CausalLm;
//! use sdpo_models::lora::LoraConfig;
//! use sdpo_models::quant::Bnb4bitConfig;
//!
//! # fn main() -> Result<(), sdpo_models::ModelError> {
//! let device = Device::default();
//! let base = CausalLm::from_pretrained("Qwen2.5-1.5B-Instruct", &device)?;
//! let policy = base
//!     .quantize_4bit(&Bnb4bitConfig::default())? // nf4, fp32 compute
//!     .attach_lora(&LoraConfig::new(16, 32.0), 42)?;
//! # Ok(()) }
//! ```

mod apply;
pub mod blockwise;
pub mod dynamic;
mod weight;

use std::fmt;
use std::str::FromStr;

pub use weight::{BlockScales, NestedScales, Quantized4bit, check_blocks};

use crate::error::ModelError;
use crate::precision::MatmulPrecision;

/// The 4-bit data type (`bnb_4bit_quant_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QuantType {
    /// NormalFloat4 (QLoRA's, and TRL's default).
    #[default]
    Nf4,
    /// bitsandbytes' 4-bit float.
    Fp4,
}

impl QuantType {
    /// `nf4` or `fp4`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nf4 => "nf4",
            Self::Fp4 => "fp4",
        }
    }
}

impl FromStr for QuantType {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "nf4" => Ok(Self::Nf4),
            "fp4" => Ok(Self::Fp4),
            other => Err(ModelError::InvalidConfig {
                key: "bnb_4bit_quant_type".into(),
                reason: format!("`{other}` is not a 4-bit type; use \"nf4\" or \"fp4\""),
            }),
        }
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The dtype bitsandbytes would view the packed codes as (`bnb_4bit_quant_storage`). It only
/// matters to sharding frameworks that need one dtype for every parameter (FSDP); the codes
/// here are always packed eight to a 32-bit word, so every value gives the same memory and
/// the same numbers. Recorded and validated so that a TRL configuration carries over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QuantStorage {
    /// `uint8` (the default).
    #[default]
    Uint8,
    /// `float16`.
    Float16,
    /// `bfloat16`.
    Bfloat16,
    /// `float32`.
    Float32,
}

impl FromStr for QuantStorage {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s.trim_start_matches("torch.") {
            "uint8" => Ok(Self::Uint8),
            "float16" | "half" => Ok(Self::Float16),
            "bfloat16" => Ok(Self::Bfloat16),
            "float32" | "float" => Ok(Self::Float32),
            other => Err(ModelError::InvalidConfig {
                key: "bnb_4bit_quant_storage".into(),
                reason: format!(
                    "`{other}` is not a storage dtype; use uint8, float16, bfloat16 or float32"
                ),
            }),
        }
    }
}

impl QuantStorage {
    /// The dtype's name as transformers writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uint8 => "uint8",
            Self::Float16 => "float16",
            Self::Bfloat16 => "bfloat16",
            Self::Float32 => "float32",
        }
    }
}

/// transformers' `BitsAndBytesConfig` for a 4-bit base (`load_in_4bit = True`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bnb4bitConfig {
    /// `bnb_4bit_quant_type`.
    pub quant_type: QuantType,
    /// `bnb_4bit_use_double_quant` (TRL's `use_bnb_nested_quant`): quantize the block scales
    /// too, about 0.4 bits per weight less.
    pub double_quant: bool,
    /// `bnb_4bit_compute_dtype`: the dtype of the base products (float32 by default, as
    /// transformers').
    pub compute_dtype: MatmulPrecision,
    /// `bnb_4bit_quant_storage`.
    pub quant_storage: QuantStorage,
}

/// Parses a dtype name as `bnb_4bit_compute_dtype` takes it (`float32`, `bfloat16`,
/// `float16`, with or without `torch.`).
pub fn compute_dtype_from_name(name: &str) -> Result<MatmulPrecision, ModelError> {
    match name.trim_start_matches("torch.") {
        "float32" | "float" => Ok(MatmulPrecision::F32),
        "bfloat16" => Ok(MatmulPrecision::Bf16),
        "float16" | "half" => Ok(MatmulPrecision::F16),
        other => Err(ModelError::InvalidConfig {
            key: "bnb_4bit_compute_dtype".into(),
            reason: format!("`{other}` is not a compute dtype; use float32, bfloat16 or float16"),
        }),
    }
}
