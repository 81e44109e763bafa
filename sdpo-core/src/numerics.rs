//! Numerically stable scalar functions on tensors.
//!
//! burn's own `softplus` switches to the identity above a threshold, which is off by up to
//! `exp(-20)`; the DPO goldens are compared at 1e-10 relative in f64, so these are written out
//! in the exact forms TRL's torch code evaluates.

use burn::tensor::{DType, Tensor};

/// `log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))`, finite for every finite `x`.
///
/// `min(x, 0)` is written `x/2 - |x|/2` (the same value for every normal `x`): its gradient at
/// `x = 0` is then `1/2`, the derivative of `log(sigmoid)` there, as PyTorch's `logsigmoid`
/// gives it. A clamp passes the whole gradient at its boundary, which doubled the gradient of
/// every pair whose logit is exactly 0 (a step where the reference equals the policy, such as
/// the first step of a run).
pub fn log_sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let abs = x.clone().abs();
    x * 0.5 - abs.clone() * 0.5 - abs.neg().exp().log1p()
}

/// `log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))`, finite for every finite `x`; `max(x, 0)`
/// is `x/2 + |x|/2`, so the gradient at 0 is `1/2` (see [`log_sigmoid`]).
pub fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let abs = x.clone().abs();
    x * 0.5 + abs.clone() * 0.5 + abs.neg().exp().log1p()
}

/// `sigmoid(x) = exp(log_sigmoid(x))`, stable at both tails.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    log_sigmoid(x).exp()
}

/// `exp(min(x, cap))` with `cap = floor(ln(MAX) * 1e4) / 1e4` of the tensor's dtype, as TRL's
/// `cap_exp`: large exponents saturate at the largest finite value instead of overflowing.
pub fn capped_exp<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let cap = match x.dtype() {
        DType::F64 => (f64::MAX.ln() * 1e4).floor() / 1e4,
        DType::F16 => (65504f64.ln() * 1e4).floor() / 1e4,
        DType::BF16 => (3.389_531_4e38_f64.ln() * 1e4).floor() / 1e4,
        _ => ((f32::MAX as f64).ln() * 1e4).floor() / 1e4,
    };
    x.clamp_max(cap).exp()
}

/// DiscoPOP's per-pair loss of the logits `x` (`beta` times the log-ratio difference) with
/// temperature `tau`: `-log_sigmoid(x) * (1 - sigmoid(x / tau)) + exp(-x) * sigmoid(x / tau)`,
/// the same in TRL 0.28 and 1.x. The second term is one exponent, `exp(-x + log_sigmoid(x /
/// tau))`: in f32 the product is inf * 0 = NaN for x < -88.7, while the exponent stays finite.
pub fn discopop<const D: usize>(x: Tensor<D>, tau: f64) -> Tensor<D> {
    let scaled = x.clone() / tau;
    let modulation = sigmoid(scaled.clone());
    log_sigmoid(x.clone()).neg() * (modulation.neg() + 1.0) + (x.neg() + log_sigmoid(scaled)).exp()
}
