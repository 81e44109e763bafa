//! Global gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_` (burn's own clipping is
//! per parameter).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{FloatDType, Tensor};

use crate::precision::{WIDENED_SLICE, row_slices};

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let sq = squared_sum(grad);
            self.total = Some(match self.total.take() {
                Some(t) => t + sq,
                None => sq,
            });
        }
    }
}

/// The sum of the squares of `grad`'s values, accumulated in float32 whatever its dtype (a
/// bfloat16 gradient is widened a slice of rows at a time, so no float32 copy of a large one
/// exists).
fn squared_sum<const D: usize>(grad: Tensor<D>) -> Tensor<1> {
    if FloatDType::from(grad.dtype()) == FloatDType::F32 {
        return grad.square().sum();
    }
    let mut total: Option<Tensor<1>> = None;
    for (start, len) in row_slices(&grad.dims(), WIDENED_SLICE) {
        let sq = grad
            .clone()
            .narrow(0, start, len)
            .cast(FloatDType::F32)
            .square()
            .sum();
        total = Some(match total {
            Some(t) => t + sq,
            None => sq,
        });
    }
    total.unwrap_or_else(|| Tensor::zeros([1], &grad.device()))
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad * self.factor);
        }
    }
}

/// The global L2 norm of all gradients, `[1]` on the device (`None` without gradients).
pub fn global_grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> Option<Tensor<1>> {
    let mut visitor = SquaredNorm { grads, total: None };
    model.visit(&mut visitor);
    visitor.total.map(Tensor::sqrt)
}

/// Multiplies every gradient by `factor` (undoing `fp16`'s loss scale).
pub fn scale_grads<M: Module>(model: &M, grads: &mut GradientsParams, factor: f64) {
    model.visit(&mut Scale { grads, factor });
}

/// Scales every gradient by `max_norm / (norm + 1e-6)` when `norm > max_norm` (torch's rule).
pub fn clip_grad_norm<M: Module>(model: &M, grads: &mut GradientsParams, norm: f64, max_norm: f64) {
    if max_norm > 0.0 && norm.is_finite() {
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            model.visit(&mut Scale { grads, factor });
        }
    }
}
