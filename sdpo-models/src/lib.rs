//! Hugging Face causal language models on burn 0.22, with logits that match transformers.
//!
//! - [`CausalLm`]: `LlamaForCausalLM` (Llama 2/3.x incl. `llama3`/`linear` RoPE scaling,
//!   SmolLM2, TinyLlama, Mistral without sliding window), `Qwen2ForCausalLM` and
//!   `GPT2LMHeadModel`, selected at run time from `config.json`.
//! - [`HfConfig`] mirrors `config.json` (transformers 4 and 5 layouts); [`ModelConfig`] is the
//!   resolved configuration, built with `TryFrom` and failing with a [`ModelError`] that names
//!   the unsupported `model_type` or option.
//! - Strict safetensors loading ([`CausalLm::from_pretrained`]) and HF-compatible saving
//!   ([`CausalLm::save_pretrained`]).
//!
//! ```no_run
//! use burn::prelude::*;
//! use sdpo_models::CausalLm;
//!
//! # fn main() -> Result<(), sdpo_models::ModelError> {
//! let device = Device::default();
//! let model = CausalLm::from_pretrained("path/to/SmolLM2-135M-Instruct", &device)?;
//! let ids = Tensor::<2, Int>::from_ints([[1, 2, 3]], &device);
//! let mask = Tensor::<2, Int>::ones([1, 3], &device);
//! let logits = model.forward(ids, mask); // [1, 3, vocab]
//! # Ok(()) }
//! ```
//!
//! LoRA ([`lora`]): attach or load PEFT adapters ([`CausalLm::attach_lora`],
//! [`CausalLm::load_adapter`]), run with them on or off ([`CausalLm::without_adapters`]),
//! save them in PEFT's layout ([`CausalLm::save_adapter`]) or merge them
//! ([`CausalLm::merge_adapters`]).
//!
//! Training: build the policy on an autodiff device (`device.clone().autodiff()`)
//! and the frozen reference on the plain device.
//! For long sequences the forward pass is also available one piece at a time (embedding, one
//! decoder layer, attention in query blocks, final norm, output head; see [`StackContext`]), so
//! that a trainer can recompute one layer at a time instead of keeping every layer's
//! activations.
#![warn(missing_docs)]

mod attention;
mod causal_lm;
pub mod checkpoint;
mod config;
mod error;
mod families;
mod gated_silu;
pub mod grad;
mod hf_config;
mod init;
pub mod libtorch;
pub mod lora;
mod output;
mod precision;
pub mod quant;
mod rope;
mod stack;
pub mod streaming;
mod tensor_read;
mod vector;

pub use attention::fused::{FusedAttention, kernel_set};
pub use attention::mask::{attention_bias, attention_blocked};
pub use causal_lm::CausalLm;
pub use config::{
    Activation, Architecture, LayerAttention, LayerRope, ModelConfig, QkNorm, RopeConfig,
    RopeScaling,
};
pub use error::{ModelError, ShapeMismatch};
pub use families::decoder::{DecoderLm, DecoderModel};
pub use families::gemma::{GemmaDecoderLayer, GemmaForCausalLm};
pub use families::gpt2::{Conv1D, Gpt2Attention, Gpt2Block, Gpt2LmHeadModel, Gpt2Mlp, Gpt2Model};
pub use families::llama::{LlamaDecoderLayer, LlamaForCausalLm};
pub use families::olmo2::{Olmo2DecoderLayer, Olmo2ForCausalLm};
pub use families::parts::{GatedMlp, SelfAttention};
pub use families::phi3::{Phi3Attention, Phi3DecoderLayer, Phi3ForCausalLm, Phi3Mlp};
pub use families::supported_model_types;
pub use hf_config::{HfConfig, HfRopeParameters};
pub use output::{CausalLmOutput, HeadGradients};
pub use precision::{MatmulPrecision, matrix_dtype, store_matrices_as, store_product_weights_as};
pub use rope::{RopeTables, inverse_frequencies, rope_frequencies};
pub use stack::{AttentionInputs, PackedRows, StackContext};
pub use streaming::{Piece, StreamedLm, WeightStorage};
