//! The device the policy trains on.

use burn::tensor::Device;

/// The device a trainer builds the policy on: `device` with autodiff. The reference model
/// stays on the plain `device`. (`gradient_checkpointing` does not change the device: it
/// selects the memory-bounded engine, [`crate::logps::policy_step`], which recomputes whole decoder layers
/// itself instead of burn's operation-level checkpointing.)
pub fn training_device(device: &Device) -> Device {
    device.clone().autodiff()
}
