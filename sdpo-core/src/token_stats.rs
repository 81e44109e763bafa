//! TRL 1.x's per-token statistics of the next-token distribution, behind its `entropy` and
//! `mean_token_accuracy` metrics.
//!
//! TRL's fused LM head computes them at every scored position from the same logits tile as
//! the log-probs (`trl.kernels.ChunkedLogProbFunction`); the trainer here does the same, from
//! one chunk of logits while it is in memory ([`token_entropy`], [`label_is_top1`]), and
//! averages them over the loss mask ([`masked_mean`]):
//!
//! - `entropy`: the mean entropy over the completion positions of both sides;
//! - `mean_token_accuracy`: the fraction of the chosen completion's tokens that are the
//!   policy's most likely next token.
//!
//! Both are metrics, never part of the loss: the results carry no gradient.

use burn::tensor::{Bool, Int, Tensor};

use crate::error::{CoreError, expect_shape};

fn check_rank<const D: usize, const O: usize>(what: &'static str) -> Result<(), CoreError> {
    if D < 2 || O + 1 != D {
        return Err(CoreError::ShapeMismatch {
            tensor: what,
            actual: vec![O],
            expected: vec![D.saturating_sub(1)],
        });
    }
    Ok(())
}

/// Shannon entropy (nats) of `softmax(logits)` over the last axis, without gradient.
///
/// With `m` the row maximum and `e_v = exp(z_v - m)`: `log(sum e) - sum(e (z - m)) / sum(e)`,
/// TRL's `log_z - E[z]` with the shift taken out of both terms, stable for any logits.
///
/// # Shapes
/// - `logits`: `[..., vocab]` (rank `D >= 2`); returns `[...]` (rank `O = D - 1`, checked)
pub fn token_entropy<const D: usize, const O: usize>(
    logits: Tensor<D>,
) -> Result<Tensor<O>, CoreError> {
    check_rank::<D, O>("token_entropy output rank")?;
    let last = D - 1;
    let logits = logits.detach();
    let shifted = logits.clone() - logits.max_dim(last);
    let exp = shifted.clone().exp();
    let sum = exp.clone().sum_dim(last);
    let expected_shift = (exp * shifted).sum_dim(last) / sum.clone();
    Ok((sum.log() - expected_shift).squeeze_dim(last))
}

/// Whether each label is the policy's most likely token: 1.0 where `logits[.., label]` is the
/// maximum and no earlier index holds the same value (the first maximum, as `torch.argmax`
/// and TRL's `is_top1` break ties), else 0.0. Without gradient.
///
/// # Shapes
/// - `logits`: `[..., vocab]` (rank `D >= 2`); `labels`: `[...]` (rank `O = D - 1`), ids in
///   `0..vocab`; returns `[...]`
pub fn label_is_top1<const D: usize, const O: usize>(
    logits: Tensor<D>,
    labels: Tensor<O, Int>,
) -> Result<Tensor<O>, CoreError> {
    check_rank::<D, O>("label_is_top1 output rank")?;
    let last = D - 1;
    let dims = logits.dims();
    expect_shape("labels", &labels.dims(), &dims[..last])?;
    let vocab = dims[last];
    let logits = logits.detach();
    let dtype = logits.dtype();
    let device = logits.device();
    let labels = labels.unsqueeze_dim::<D>(last);
    let at_label = logits.clone().gather(last, labels.clone()).expand(dims);
    // Only boolean `[..., vocab]` temporaries: no copy of the logits.
    let higher = logits.clone().greater(at_label.clone()).any_dim(last);
    let mut index_shape = [1usize; D];
    index_shape[last] = vocab;
    let index = Tensor::<1, Int>::arange(0..vocab as i64, (&device, labels.dtype()))
        .reshape(index_shape)
        .expand(dims);
    let tie_before = logits
        .equal(at_label)
        .bool_and(index.lower(labels.expand(dims)))
        .any_dim(last);
    let top1 = higher.bool_or(tie_before).bool_not();
    Ok(top1.float().cast(dtype).squeeze_dim(last))
}

/// Mean of `values` where `mask` is true, `[1]`; 0 when the mask is empty (TRL's rule for both
/// metrics).
///
/// # Shapes
/// - `values`, `mask`: `[rows, seq]`; returns `[1]`
pub fn masked_mean(values: Tensor<2>, mask: Tensor<2, Bool>) -> Tensor<1> {
    let dtype = values.dtype();
    let count = mask.clone().int().sum().float().cast(dtype);
    values.mask_fill(mask.bool_not(), 0.0).sum() / count.clamp_min(1.0)
}

/// [`token_entropy`] and [`label_is_top1`] of a `[rows, T, vocab]` logits chunk, aligned with
/// [`completion_logps`](crate::completion_logps): position `t` scores the token at `t + 1`,
/// `[rows, T - 1]` each, 0 outside the completion (`loss_mask` false).
///
/// # Shapes
/// - `logits`: `[rows, T, vocab]`; `input_ids`: `[rows, T]`; `loss_mask`: `[rows, T - 1]`
/// - returns `(entropy, top1)`, both `[rows, T - 1]`
pub fn completion_token_stats(
    logits: Tensor<3>,
    input_ids: Tensor<2, Int>,
    loss_mask: Tensor<2, Bool>,
) -> Result<(Tensor<2>, Tensor<2>), CoreError> {
    let [rows, seq, _vocab] = logits.dims();
    expect_shape("input_ids", &input_ids.dims(), &[rows, seq])?;
    if seq < 2 {
        return Err(CoreError::TooSmall {
            tensor: "logits",
            reason: format!("a sequence of {seq} position(s) has no next-token target"),
        });
    }
    expect_shape("loss_mask", &loss_mask.dims(), &[rows, seq - 1])?;
    // Every position is scored (the last against a dummy id 0), then the last column dropped,
    // so the logits are never copied.
    let device = input_ids.device();
    let last = Tensor::<2, Int>::zeros([rows, 1], (&device, input_ids.dtype()));
    let labels = Tensor::cat(vec![input_ids.slice([0..rows, 1..seq]), last], 1);
    let outside = loss_mask.bool_not();
    let entropy: Tensor<2> = token_entropy(logits.clone())?;
    let top1: Tensor<2> = label_is_top1(logits, labels)?;
    let keep = |t: Tensor<2>| {
        t.slice([0..rows, 0..seq - 1])
            .mask_fill(outside.clone(), 0.0)
    };
    Ok((keep(entropy), keep(top1)))
}
