//! AdamW (`adamw_torch`, `adamw_torch_fused`) with as few full-size temporaries as the update
//! allows: burn's own AdamW keeps about four copies of a parameter alive while it updates it
//! (the gradient's share of `m`, both bias-corrected moments, the decayed parameter), which for
//! a 150k-token embedding is 2 GB on top of the weights, gradients and moments; here at most
//! two (`√v` and the step) exist at once, and every other operation updates a tensor that no
//! one else holds, in place where the backend can. The update is PyTorch's:
//! `p ← p·(1 − lr·wd)`, `m ← β1·m + (1 − β1)·g`, `v ← β2·v + (1 − β2)·g²`,
//! `p ← p − lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + ε)`. The state is burn's [`AdamWState`], so
//! checkpoints written with burn's AdamW resume with this one.

use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

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
