//! Autodiff helpers for differentiating a model one piece at a time (the memory-bounded
//! engine's per-layer backward, [`CausalLm::attention_backward`]): tracked leaves and constants
//! that carry the policy's gradient-checkpointing strategy, and gradients read back as zeros
//! where nothing flowed.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{GradientCheckpointingStrategy, Gradients, Tensor};

use crate::CausalLm;

/// How a model's parameters are tracked: their gradient-checkpointing strategy (`None` on a
/// device without one). Every operand of an autodiff operation must carry the same one.
pub type Tracking = Option<GradientCheckpointingStrategy>;

/// The strategy of `model`'s first float parameter.
pub fn tracking_of(model: &CausalLm) -> Tracking {
    struct FirstStrategy(Option<Tracking>);
    impl ModuleVisitor for FirstStrategy {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.is_none() {
                self.0 = Some(param.val().gradient_checkpointing_strategy());
            }
        }
    }
    let mut visitor = FirstStrategy(None);
    model.visit(&mut visitor);
    visitor.0.flatten()
}

/// A constant (no gradient) on the autodiff device with strategy `tracking`.
pub fn leaf_constant<const D: usize>(value: Tensor<D>, tracking: Tracking) -> Tensor<D> {
    let t = value.without_autodiff().autodiff();
    match tracking {
        Some(strategy) => t.with_gradient_checkpointing_strategy(strategy),
        None => t,
    }
}

/// A tracked leaf holding `value`, with strategy `tracking`.
pub fn leaf<const D: usize>(value: Tensor<D>, tracking: Tracking) -> Tensor<D> {
    leaf_constant(value, tracking).require_grad()
}

/// The gradient of `leaf` in `grads`, or zeros of its shape when nothing flowed into it.
pub fn grad_or_zeros<const D: usize>(leaf: &Tensor<D>, grads: &Gradients) -> Tensor<D> {
    match leaf.grad(grads) {
        Some(g) => g,
        None => {
            let inner = leaf.clone().without_autodiff();
            Tensor::zeros(inner.shape(), (&inner.device(), inner.dtype()))
        }
    }
}
