//! The precision of a run's matrix products (`bf16`, `fp16`), given what the backend computes
//! in, and the dynamic loss scale that `fp16` needs.
//!
//! `bf16`/`fp16` are TRL's keys and mean what `torch.autocast` does there: matrix products in
//! the low-precision dtype, everything else in float32 ([`MatmulPrecision`]). A backend that
//! only stores the dtype and converts it to float32 for every product (flex) would run slower
//! and round more for nothing, so there the run says so and trains in float32.
//!
//! [`row_slices`] is how low-precision parameters and gradients are widened to float32 (the
//! AdamW update, the gradient norm): a few rows at a time, never the whole tensor.

use burn::tensor::{Device, FloatDType};
use sdpo_models::MatmulPrecision;

use crate::config::TrainConfig;

/// Whether `device`'s backend runs matrix products in `dtype` itself (rather than converting
/// to float32): LibTorch (CPU and CUDA) for bfloat16 and float16; a CubeCL device (wgpu) when
/// it reports the dtype as usable for arithmetic (float16 with `SHADER_F16`); never flex.
pub fn computes_in(device: &Device, dtype: FloatDType) -> bool {
    // burn 0.22's dispatch device names its backend in its Debug form; the variants themselves
    // exist only under the matching burn features.
    let backend = format!("{:?}", device.as_dispatch());
    if backend.starts_with("Flex") || backend.starts_with("NdArray") {
        false
    } else if backend.starts_with("LibTorch") {
        true
    } else {
        device.supports_dtype(dtype)
    }
}

/// The precision the run's products use, and a warning when `bf16`/`fp16` was asked for on a
/// backend without that arithmetic (the run then trains in float32).
pub fn run_precision(config: &TrainConfig, device: &Device) -> (MatmulPrecision, Option<String>) {
    let (key, wanted) = if config.bf16 {
        ("bf16", MatmulPrecision::Bf16)
    } else if config.fp16 {
        ("fp16", MatmulPrecision::F16)
    } else {
        return (MatmulPrecision::F32, None);
    };
    if computes_in(device, wanted.dtype()) {
        (wanted, None)
    } else {
        let warning = format!(
            "warning: {key} = true, but this backend has no {} arithmetic (it would convert every \
             product to float32): training in float32",
            wanted.name()
        );
        (MatmulPrecision::F32, Some(warning))
    }
}

/// `fp16`'s dynamic loss scale, as `torch.amp.GradScaler` with its defaults: the loss is
/// multiplied by the scale before the backward pass so that small gradients survive float16,
/// and the gradients are divided by it before clipping and AdamW. A step whose gradients
/// overflow is skipped and the scale halved; after 2000 steps in a row without overflow it
/// doubles.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScale {
    enabled: bool,
    scale: f64,
    good_steps: usize,
}

/// Steps without overflow before the scale doubles (torch's `growth_interval`).
pub const LOSS_SCALE_GROWTH_INTERVAL: usize = 2000;
/// The first scale (torch's `init_scale`).
pub const INITIAL_LOSS_SCALE: f64 = 65536.0;

impl LossScale {
    /// The scale a run starts with: [`INITIAL_LOSS_SCALE`] with float16 products, else 1 (off).
    pub fn for_precision(precision: MatmulPrecision) -> Self {
        let enabled = precision == MatmulPrecision::F16;
        Self {
            enabled,
            scale: if enabled { INITIAL_LOSS_SCALE } else { 1.0 },
            good_steps: 0,
        }
    }

    /// Whether loss scaling is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The current factor.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Records a step whose gradients were finite.
    pub fn on_finite_step(&mut self) {
        if !self.enabled() {
            return;
        }
        self.good_steps += 1;
        if self.good_steps >= LOSS_SCALE_GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
    }

    /// Records a step whose gradients overflowed: halves the scale.
    pub fn on_overflow(&mut self) {
        if self.enabled {
            self.scale /= 2.0;
            self.good_steps = 0;
        }
    }
}

/// Whether a step's read-back shows overflowing gradients and nothing else wrong: the gradient
/// norm is not finite while the loss, the metrics and the log-prob checks are.
pub fn gradients_overflowed(host: &[(&str, f64)]) -> bool {
    let norm_finite = host
        .iter()
        .filter(|(name, _)| *name == "grad_norm")
        .all(|(_, v)| v.is_finite());
    let rest_finite = host
        .iter()
        .filter(|(name, _)| *name != "grad_norm")
        .all(|(_, v)| v.is_finite());
    !norm_finite && rest_finite
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_halves_on_overflow_and_doubles_after_the_growth_interval() {
        let mut s = LossScale::for_precision(MatmulPrecision::F16);
        assert_eq!(s.scale(), INITIAL_LOSS_SCALE);
        s.on_overflow();
        assert_eq!(s.scale(), INITIAL_LOSS_SCALE / 2.0);
        for _ in 0..LOSS_SCALE_GROWTH_INTERVAL - 1 {
            s.on_finite_step();
        }
        assert_eq!(s.scale(), INITIAL_LOSS_SCALE / 2.0);
        s.on_finite_step();
        assert_eq!(s.scale(), INITIAL_LOSS_SCALE);
        assert!(!LossScale::for_precision(MatmulPrecision::Bf16).enabled());
    }

    #[test]
    fn an_overflow_is_a_non_finite_gradient_norm_with_everything_else_finite() {
        let step = |norm: f64, loss: f64| vec![("loss", loss), ("grad_norm", norm)];
        assert!(gradients_overflowed(&step(f64::INFINITY, 0.7)));
        assert!(gradients_overflowed(&step(f64::NAN, 0.7)));
        assert!(!gradients_overflowed(&step(3.0, 0.7)));
        // A non-finite loss is divergence, not overflow: the step is refused, not skipped.
        assert!(!gradients_overflowed(&step(f64::NAN, f64::NAN)));
    }
}

/// The values of a bfloat16/float16 tensor widened to float32 at once (16 MiB per temporary).
pub const WIDENED_SLICE: usize = 1 << 22;

/// `(start, len)` ranges along the first dimension of a tensor of shape `dims`, each of
/// whole rows and about `values` values (at least one row); none for an empty tensor.
pub fn row_slices(dims: &[usize], values: usize) -> impl Iterator<Item = (usize, usize)> {
    let rows = dims.first().copied().unwrap_or(1);
    let rows = if dims.contains(&0) { 0 } else { rows };
    let row_len = dims.iter().skip(1).product::<usize>().max(1);
    let per_slice = (values / row_len).max(1);
    (0..rows)
        .step_by(per_slice)
        .map(move |start| (start, per_slice.min(rows - start)))
}

#[cfg(test)]
mod slice_tests {
    use super::row_slices;

    #[test]
    fn row_slices_cover_every_row_once() {
        let slices: Vec<_> = row_slices(&[9, 5], 10).collect();
        assert_eq!(slices, [(0, 2), (2, 2), (4, 2), (6, 2), (8, 1)]);
        assert_eq!(
            row_slices(&[3, 100], 10).collect::<Vec<_>>(),
            [(0, 1), (1, 1), (2, 1)]
        );
        assert_eq!(row_slices(&[37], 1 << 22).collect::<Vec<_>>(), [(0, 37)]);
        assert_eq!(row_slices(&[0, 4], 10).count(), 0);
        assert_eq!(row_slices(&[4, 0], 10).count(), 0);
    }
}

/// How the run's reference log-probs are computed on `device` (the cache key's
/// [`crate::reference::cache::Computation`]): [`run_precision`] and the device's kernels.
pub(crate) fn run_computation(
    config: &TrainConfig,
    device: &Device,
) -> (crate::reference::cache::Computation, Option<String>) {
    let (precision, warning) = run_precision(config, device);
    let computation = crate::reference::cache::Computation {
        precision,
        kernels: sdpo_models::kernel_set(device),
    };
    (computation, warning)
}
