//! AdamW (`adamw_torch`, `adamw_torch_fused`) with as few full-size temporaries as the update
//! allows: burn's own AdamW keeps about four copies of a parameter alive while it updates it
//! (the gradient's share of `m`, both bias-corrected moments, the decayed parameter), which for
//! a 150k-token embedding is 2 GB on top of the weights, gradients and moments; here at most
//! two (`√v` and the step) exist at once, and every other operation updates a tensor that no
//! one else holds, in place where the backend can. The update is PyTorch's:
//! `p ← p·(1 − lr·wd)`, `m ← β1·m + (1 − β1)·g`, `v ← β2·v + (1 − β2)·g²`,
//! `p ← p − lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + ε)`. The state is burn's [`AdamWState`], so
//! checkpoints written with burn's AdamW resume with this one.
//!
//! A parameter held in bfloat16 or float16 (`dtype = "bfloat16"` without adapters) keeps its
//! moments in its own dtype, as `torch.optim.AdamW` does for a model loaded in bfloat16, and is
//! updated as PyTorch's fused CPU kernel (`adamw_torch_fused`, transformers' default) updates
//! it: parameter, gradient and moments widened to float32, the whole update computed there
//! (`m` by `lerp`), each rounded back once. The update runs over slices of
//! [`WIDENED_SLICE`] values, so its float32 temporaries stay small whatever the parameter's
//! size.

use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{Device, FloatDType, Tensor};

use sdpo_models::libtorch::LowPrecisionAdamW;

use crate::precision::{WIDENED_SLICE, row_slices};

/// Values per slice of LibTorch's in-place bfloat16 update: six float32 slices of 1 MiB each
/// stay in the CPU's caches.
const LIBTORCH_SLICE: usize = 1 << 18;

/// AdamW for one parameter group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// `adam_beta1`.
    pub beta_1: f64,
    /// `adam_beta2`.
    pub beta_2: f64,
    /// `adam_epsilon`.
    pub epsilon: f64,
    /// Decoupled weight decay of the group.
    pub weight_decay: f64,
}

impl Optimizer for AdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        if FloatDType::from(tensor.dtype()) != FloatDType::F32 {
            return self.low_precision_step(lr, tensor, grad, state, WIDENED_SLICE);
        }
        let (b1, b2) = (self.beta_1, self.beta_2);
        // `v` first: it needs the gradient once more, after which `g` is only `m`'s.
        let weighted_square = grad.clone().square().mul_scalar(1.0 - b2);
        let (time, moment_1, moment_2) = match state {
            Some(AdamWState { momentum }) => (
                momentum.time + 1,
                momentum
                    .moment_1
                    .mul_scalar(b1)
                    .add(grad.mul_scalar(1.0 - b1)),
                momentum.moment_2.mul_scalar(b2).add(weighted_square),
            ),
            None => (1, grad.mul_scalar(1.0 - b1), weighted_square),
        };
        let t = time as i32;
        let bias_correction1 = 1.0 - b1.powi(t);
        let bias_correction2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let denominator = moment_2
            .clone()
            .sqrt()
            .div_scalar(bias_correction2_sqrt)
            .add_scalar(self.epsilon);
        let step = moment_1
            .clone()
            .mul_scalar(lr / bias_correction1)
            .div(denominator);
        let decay = lr * self.weight_decay;
        let decayed = if decay == 0.0 {
            tensor
        } else {
            tensor.mul_scalar(1.0 - decay)
        };
        let momentum = AdaptiveMomentumState::new(time, moment_1, moment_2);
        (decayed.sub(step), Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

impl AdamW {
    /// The update of a bfloat16/float16 parameter (see the module documentation), about
    /// `slice_values` values at a time (whole rows). Moments of another dtype (a checkpoint
    /// written where the parameter was float32) are converted.
    fn low_precision_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
        slice_values: usize,
    ) -> (Tensor<D>, Option<AdamWState<D>>) {
        let dtype = FloatDType::from(tensor.dtype());
        let (time, moments) = match state {
            Some(AdamWState { momentum }) => (
                momentum.time + 1,
                Some((momentum.moment_1.cast(dtype), momentum.moment_2.cast(dtype))),
            ),
            None => (1, None),
        };
        let t = time as i32;
        let (b1, b2) = (self.beta_1, self.beta_2);
        let step_size = lr / (1.0 - b1.powi(t));
        let bias_correction2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let decay = 1.0 - lr * self.weight_decay;
        if tensor.shape().num_elements() == 0 {
            let momentum = AdaptiveMomentumState::new(time, grad.zeros_like(), grad.zeros_like());
            return (tensor, Some(AdamWState::new(momentum)));
        }
        // On LibTorch: the same update with its in-place operators, in the tensors' own memory.
        let update = LowPrecisionAdamW {
            beta_1: b1,
            beta_2: b2,
            epsilon: self.epsilon,
            step_size,
            bias_correction2_sqrt,
            decay: (self.weight_decay != 0.0).then_some(decay),
        };
        let (tensor, grad, moments) =
            match update.update_in_place(tensor, grad, moments, LIBTORCH_SLICE) {
                Ok((param, m, v)) => {
                    let momentum = AdaptiveMomentumState::new(time, m, v);
                    return (param, Some(AdamWState::new(momentum)));
                }
                Err(inputs) => *inputs,
            };
        let wide = |t: Tensor<D>| t.cast(FloatDType::F32);
        let (mut params, mut firsts, mut seconds) = (Vec::new(), Vec::new(), Vec::new());
        for (start, len) in row_slices(&tensor.dims(), slice_values) {
            let slice = |t: &Tensor<D>| wide(t.clone().narrow(0, start, len));
            let (p, g) = (slice(&tensor), slice(&grad));
            let (m, v) = match &moments {
                Some((m, v)) => (slice(m), slice(v)),
                None => (g.zeros_like(), g.zeros_like()),
            };
            let p = if self.weight_decay == 0.0 {
                p
            } else {
                p.mul_scalar(decay)
            };
            // `exp_avg.lerp_(grad, 1 - β1)`: m + (1 - β1)·(g − m).
            let m = m.clone().add(g.clone().sub(m).mul_scalar(1.0 - b1));
            let v = v.mul_scalar(b2).add(g.square().mul_scalar(1.0 - b2));
            let denominator = v
                .clone()
                .sqrt()
                .div_scalar(bias_correction2_sqrt)
                .add_scalar(self.epsilon);
            let p = p.sub(m.clone().mul_scalar(step_size).div(denominator));
            params.push(p.cast(dtype));
            firsts.push(m.cast(dtype));
            seconds.push(v.cast(dtype));
        }
        // The old parameter, gradient and moments go before the slices are joined.
        drop((tensor, grad, moments));
        let momentum =
            AdaptiveMomentumState::new(time, Tensor::cat(firsts, 0), Tensor::cat(seconds, 0));
        (Tensor::cat(params, 0), Some(AdamWState::new(momentum)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn values(tensor: Tensor<2>) -> Vec<f32> {
        tensor
            .cast(FloatDType::F32)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn a_bfloat16_update_in_slices_equals_the_update_in_one() {
        let device = Device::flex();
        let optim = AdamW {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.1,
        };
        let matrix = |seed: f32| {
            let values: Vec<f32> = (0..45).map(|i| ((i as f32 + seed) * 0.37).sin()).collect();
            Tensor::<2>::from_data(TensorData::new(values, [9, 5]), &device).cast(FloatDType::BF16)
        };
        let run = |slice_values: usize| {
            let (mut param, mut state) = (matrix(0.0), None);
            for step in 0..3 {
                let grad = matrix(step as f32 + 1.0);
                let (p, s) = optim.low_precision_step(1e-2, param, grad, state, slice_values);
                (param, state) = (p, s);
            }
            let momentum = state.expect("a state").momentum;
            (
                values(param),
                values(momentum.moment_1),
                values(momentum.moment_2),
            )
        };
        // Two rows (10 values) per slice, the last slice a single row, against one slice.
        let sliced = run(10);
        assert_eq!(sliced, run(WIDENED_SLICE));
        assert!(sliced.0.iter().all(|v| v.is_finite()));
    }
}
