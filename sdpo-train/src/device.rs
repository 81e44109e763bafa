//! The device the policy trains on.

use burn::tensor::Device;

/// The device a trainer builds the policy on: `device` with autodiff, and with burn's gradient
/// checkpointing (activations of memory-bound operations recomputed in the backward pass
/// instead of kept) when `gradient_checkpointing` is true. The reference model stays on the
/// plain `device`.
pub fn training_device(device: &Device, gradient_checkpointing: bool) -> Device {
    let device = device.clone().autodiff();
    if gradient_checkpointing {
        device.gradient_checkpointing()
    } else {
        device
    }
}
