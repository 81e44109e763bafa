//! LoRA adapters in PEFT's format: attach new ones, load and save PEFT adapter directories,
//! run the model with adapters on or off, merge them into a plain model.
//!
//! The adapted layers compute `x W + b + scale · B (A x)` ([`LoraLinear`] and GPT-2's
//! [`Conv1D`](crate::Conv1D)); attaching or loading an adapter freezes every base
//! parameter (`Param::set_require_grad(false)`: no gradient, hence no optimizer state), so the
//! trainable parameters are exactly the `A`/`B` factors (and the copies of `modules_to_save`).
//! With `use_dora` (DoRA, PEFT's weight-decomposed LoRA) each branch also trains a magnitude
//! per output (`lora_magnitude_vector`).
//! [`CausalLm::without_adapters`] is the base model sharing the same weight buffers: the DPO
//! reference without a second copy of the model.
//!
//! ```no_run
//! use burn::prelude::*;
//! use sdpo_models::CausalLm;
//! use sdpo_models::lora::{LoraConfig, TargetModules};
//!
//! # fn main() -> Result<(), sdpo_models::ModelError> {
//! let device = Device::default();
//! let base = CausalLm::from_pretrained("SmolLM2-135M-Instruct", &device)?;
//! let config = LoraConfig {
//!     target_modules: Some(TargetModules::AllLinear),
//!     ..LoraConfig::new(16, 32.0)
//! };
//! let policy = base.attach_lora(&config, 42)?; // trainable: lora_A / lora_B only
//! let reference = policy.without_adapters(); // the frozen base, same buffers
//! policy.save_adapter("out/adapter", Some("SmolLM2-135M-Instruct"))?; // PEFT layout
//! let merged = policy.merge_adapters(); // a plain model
//! merged.save_pretrained("out/merged")?;
//! # Ok(()) }
//! ```

mod adapter;
mod adapter_config;
mod config;
pub(crate) mod linear;
mod peft_files;
mod tensors;

pub use adapter::{AttachedAdapter, PEFT_PREFIX};
pub use adapter_config::{AdapterInfo, resolve_adapter_base};
pub use config::{
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, InitLoraWeights, LayerLora, LoraConfig,
    TargetModules, default_target_modules, lora_scale,
};
pub use linear::{LoraBranch, LoraLinear, TrainedCopy};
