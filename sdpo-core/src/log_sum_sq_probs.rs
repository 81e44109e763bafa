//! WPO's alignment term: `log(sum_v p_v^2)` of each next-token distribution.
//!
//! WPO (`use_weighting`) weights a pair by how likely the policy is to produce it, corrected
//! for how peaked the policy is: token `t` contributes `log p(y_t) - log(sum_v p_v^2)`. The
//! second term needs the whole vocabulary at every completion position, so the trainer computes
//! it from the same logits chunk as the token log-probs ([`token_logps`](crate::token_logps)),
//! while that chunk is in memory, and passes it to the loss in
//! [`TokenLogps`](crate::TokenLogps). It is a constant for the gradient (TRL computes it under
//! `no_grad`), so the result is detached.

use burn::tensor::{Bool, Tensor};

use crate::error::CoreError;

/// `log(sum_v softmax(logits)_v^2)` over the last axis, without gradient.
///
/// Computed as TRL 1.x's fused head does, stably for any logits: with `m` the row maximum,
/// `log(sum_v exp(2 (z_v - m))) - 2 log(sum_v exp(z_v - m))`. The value lies in
/// `[-log(vocab), 0]`: `-log(vocab)` for a uniform distribution, 0 for a one-hot one.
///
/// `O` must be `D - 1` (checked): `[rows, seq, vocab] -> [rows, seq]` for a batch chunk, or
/// `[positions, vocab] -> [positions]` for a chunk of flattened positions.
///
/// # Shapes
/// - `logits`: `[..., vocab]` (rank `D >= 2`); returns `[...]` (rank `D - 1`)
///
/// For `[rows, T, vocab]` logits, output position `t` belongs to the distribution that
/// predicts token `t + 1`, like [`completion_logps`](crate::completion_logps): keep columns
/// `0..T-1` to align it with the completion log-probs and their loss mask.
pub fn log_sum_sq_probs<const D: usize, const O: usize>(
    logits: Tensor<D>,
) -> Result<Tensor<O>, CoreError> {
    if D < 2 || O + 1 != D {
        return Err(CoreError::ShapeMismatch {
            tensor: "log_sum_sq_probs output rank",
            actual: vec![O],
            expected: vec![D.saturating_sub(1)],
        });
    }
    let last = D - 1;
    let logits = logits.detach();
    let max = logits.clone().max_dim(last);
    let shifted = logits - max;
    let sum_exp = shifted.clone().exp().sum_dim(last);
    let sum_sq_exp = (shifted * 2.0).exp().sum_dim(last);
    Ok((sum_sq_exp.log() - sum_exp.log() * 2.0).squeeze_dim(last))
}

/// [`log_sum_sq_probs`] of a `[rows, T, vocab]` logits chunk, aligned with
/// [`completion_logps`](crate::completion_logps): `[rows, T - 1]`, position `t` for token
/// `t + 1`, zero outside the completion (`loss_mask` false).
///
/// # Shapes
/// - `logits`: `[rows, T, vocab]`; `loss_mask`: `[rows, T - 1]` (from `completion_logps`)
/// - returns `[rows, T - 1]`
pub fn completion_log_sum_sq_probs(
    logits: Tensor<3>,
    loss_mask: Tensor<2, Bool>,
) -> Result<Tensor<2>, CoreError> {
    let [rows, seq, _vocab] = logits.dims();
    if seq < 2 {
        return Err(CoreError::TooSmall {
            tensor: "logits",
            reason: format!("a sequence of {seq} position(s) has no next-token target"),
        });
    }
    crate::error::expect_shape("loss_mask", &loss_mask.dims(), &[rows, seq - 1])?;
    // All T positions, then drop the last: slicing the output never copies the logits.
    let values: Tensor<2> = log_sum_sq_probs(logits)?;
    Ok(values
        .slice([0..rows, 0..seq - 1])
        .mask_fill(loss_mask.bool_not(), 0.0))
}
