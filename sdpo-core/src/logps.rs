//! Per-token log-probabilities from logits, and the next-token shift.
//!
//! A causal LM's logits at position `t` predict token `t + 1`. The trainer runs the model on
//! `input_ids [B, T]` and needs, for every completion token, `log p(token | prefix)`: that is
//! [`completion_logps`], built from [`token_logps`] and [`next_token_targets`].

use burn::tensor::{Bool, Int, Tensor};

use crate::error::{CoreError, expect_shape};

/// Log-probability of each label under the logits.
///
/// Computed as the gathered logit minus `logsumexp` over the vocabulary, so no `[B, T, V]`
/// log-softmax copy is kept; the gradient is the usual `onehot - softmax`.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`
/// - `labels`: `[batch, seq]`, every id in `0..vocab`
/// - returns `[batch, seq]`
pub fn token_logps(logits: Tensor<3>, labels: Tensor<2, Int>) -> Result<Tensor<2>, CoreError> {
    let [batch, seq, _vocab] = logits.dims();
    expect_shape("labels", &labels.dims(), &[batch, seq])?;
    // Any constant shift leaves logsumexp unchanged, so the max needs no gradient.
    let max = logits.clone().detach().max_dim(2);
    let logsumexp = (logits.clone() - max.clone()).exp().sum_dim(2).log() + max;
    let gathered = logits.gather(2, labels.unsqueeze_dim(2));
    Ok((gathered - logsumexp).squeeze_dim(2))
}

/// Labels and loss mask for next-token prediction.
#[derive(Debug, Clone)]
pub struct NextTokenTargets {
    /// `labels[b, t] = input_ids[b, t + 1]`, shape `[batch, seq - 1]`.
    pub labels: Tensor<2, Int>,
    /// `loss_mask[b, t] = completion_mask[b, t + 1] != 0`, shape `[batch, seq - 1]`.
    pub loss_mask: Tensor<2, Bool>,
}

/// Shifts model inputs into next-token targets: the logits at `t` are scored against the token
/// at `t + 1`, and only completion tokens count (TRL's convention).
///
/// # Shapes
/// - `input_ids`, `completion_mask`: `[batch, seq]` (`completion_mask` is 1 on completion tokens)
/// - returns labels and loss mask of `[batch, seq - 1]`
pub fn next_token_targets(
    input_ids: Tensor<2, Int>,
    completion_mask: Tensor<2, Int>,
) -> Result<NextTokenTargets, CoreError> {
    let [batch, seq] = input_ids.dims();
    expect_shape("completion_mask", &completion_mask.dims(), &[batch, seq])?;
    if seq < 2 {
        return Err(CoreError::TooSmall {
            tensor: "input_ids",
            reason: format!("a sequence of {seq} token(s) has no next-token target"),
        });
    }
    Ok(NextTokenTargets {
        labels: input_ids.slice([0..batch, 1..seq]),
        loss_mask: completion_mask.slice([0..batch, 1..seq]).not_equal_elem(0),
    })
}

/// Per-token log-probs of the completion tokens, zero elsewhere, and the loss mask.
///
/// Scores every position against the following token (the last position against a dummy id 0)
/// and then drops the last column, so the `[batch, seq, vocab]` logits are never copied.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`; `input_ids`, `completion_mask`: `[batch, seq]`
/// - returns `(logps, loss_mask)`, both `[batch, seq - 1]`
pub fn completion_logps(
    logits: Tensor<3>,
    input_ids: Tensor<2, Int>,
    completion_mask: Tensor<2, Int>,
) -> Result<(Tensor<2>, Tensor<2, Bool>), CoreError> {
    let [batch, seq, _vocab] = logits.dims();
    expect_shape("input_ids", &input_ids.dims(), &[batch, seq])?;
    let targets = next_token_targets(input_ids, completion_mask)?;
    let device = targets.labels.device();
    let last = Tensor::<2, Int>::zeros([batch, 1], (&device, targets.labels.dtype()));
    let labels = Tensor::cat(vec![targets.labels, last], 1);
    let logps = token_logps(logits, labels)?.slice([0..batch, 0..seq - 1]);
    let logps = logps.mask_fill(targets.loss_mask.clone().bool_not(), 0.0);
    Ok((logps, targets.loss_mask))
}

/// Sum of the per-token values where `mask` is true (garbage under a false mask is ignored).
///
/// # Shapes
/// - `values`, `mask`: `[batch, seq]`; returns `[batch]`
pub fn masked_sum(values: Tensor<2>, mask: Tensor<2, Bool>) -> Tensor<1> {
    values
        .mask_fill(mask.bool_not(), 0.0)
        .sum_dim(1)
        .squeeze_dim(1)
}
