//! Training metrics with TRL's names, kept on the device until they are read.

use burn::tensor::{Bool, Tensor};

use crate::error::CoreError;
use crate::loss::objective::LossOutput;

/// A named scalar (`[1]`) on the device.
pub type Metric = (&'static str, Tensor<1>);

/// The preference metrics of one batch: TRL's `rewards/chosen`, `rewards/rejected`,
/// `rewards/accuracies`, `rewards/margins`, `logps/chosen`, `logps/rejected`; with token
/// selection also `sdpo/chosen_kept_fraction`, `sdpo/rejected_kept_fraction` (kept over valid
/// tokens of the batch) and `sdpo/chosen_threshold`, `sdpo/rejected_threshold` (mean over the
/// sequences that have a valid token).
///
/// Nothing is read back here; see [`read_metrics`].
pub fn preference_metrics(out: &LossOutput) -> Vec<Metric> {
    let dtype = out.chosen_rewards.dtype();
    let chosen = out.chosen_rewards.clone();
    let rejected = out.rejected_rewards.clone();
    let accuracies = chosen
        .clone()
        .greater(rejected.clone())
        .float()
        .cast(dtype)
        .mean();
    let mut metrics = vec![
        ("rewards/chosen", chosen.clone().mean()),
        ("rewards/rejected", rejected.clone().mean()),
        ("rewards/accuracies", accuracies),
        ("rewards/margins", (chosen - rejected).mean()),
        (
            "logps/chosen",
            out.full_sums.policy_chosen.clone().detach().mean(),
        ),
        (
            "logps/rejected",
            out.full_sums.policy_rejected.clone().detach().mean(),
        ),
    ];
    if let Some(sel) = &out.selection {
        let kept_fraction = |kept: Tensor<2, Bool>, valid: Tensor<1>| {
            kept.int().sum().float().cast(dtype) / valid.cast(dtype).clamp_min(1.0)
        };
        metrics.push((
            "sdpo/chosen_kept_fraction",
            kept_fraction(sel.chosen_kept.clone(), out.valid_tokens.0.clone()),
        ));
        metrics.push((
            "sdpo/rejected_kept_fraction",
            kept_fraction(sel.rejected_kept.clone(), out.valid_tokens.1.clone()),
        ));
        metrics.push((
            "sdpo/chosen_threshold",
            finite_mean(sel.chosen_threshold.clone()),
        ));
        metrics.push((
            "sdpo/rejected_threshold",
            finite_mean(sel.rejected_threshold.clone()),
        ));
    }
    if let Some(weights) = &out.token_weights {
        // The mean weight of the completion tokens (for a mask: the kept fraction).
        let mean_weight = |w: &Tensor<2>, valid: Tensor<1>| {
            w.clone().detach().cast(dtype).sum() / valid.cast(dtype).clamp_min(1.0)
        };
        metrics.push((
            "tokens/chosen_weight_mean",
            mean_weight(&weights.chosen, out.valid_tokens.0.clone()),
        ));
        metrics.push((
            "tokens/rejected_weight_mean",
            mean_weight(&weights.rejected, out.valid_tokens.1.clone()),
        ));
    }
    metrics
}

/// Mean over the finite entries (0 when there is none).
fn finite_mean(values: Tensor<1>) -> Tensor<1> {
    let dtype = values.dtype();
    let finite = values.clone().is_finite();
    let count = finite
        .clone()
        .int()
        .sum()
        .float()
        .cast(dtype)
        .clamp_min(1.0);
    values.mask_fill(finite.bool_not(), 0.0).sum() / count
}

/// Per-row sum of the logits over the masked positions (every vocabulary entry), detached: the
/// numerator of TRL's `logits/chosen` and `logits/rejected`, computable chunk by chunk.
///
/// # Shapes
/// - `logits`: `[rows, seq, vocab]`, `mask`: `[rows, seq]`; returns `[rows]`
pub fn masked_logit_sums(logits: Tensor<3>, mask: Tensor<2, Bool>) -> Tensor<1> {
    let per_position = logits.detach().sum_dim(2).squeeze_dim::<2>(2);
    crate::logps::masked_sum(per_position, mask)
}

/// The mean logit over the masked positions from per-row [`masked_logit_sums`]:
/// `sum(sums) / (count(mask) * vocab)` (0 when the mask is empty).
///
/// # Shapes
/// - `sums`: `[rows]`, `mask`: `[rows, seq]`; returns `[1]`
pub fn logits_mean_from_sums(sums: Tensor<1>, mask: Tensor<2, Bool>, vocab: usize) -> Tensor<1> {
    let dtype = sums.dtype();
    let count = mask.int().sum().float().cast(dtype) * vocab as f64;
    sums.sum() / count.clamp_min(1.0)
}

/// Mean logit over the completion positions, for TRL's `logits/chosen` and `logits/rejected`.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`, `mask`: `[batch, seq]`; returns `[1]`
pub fn masked_logits_mean(logits: Tensor<3>, mask: Tensor<2, Bool>) -> Tensor<1> {
    let [_, _, vocab] = logits.dims();
    logits_mean_from_sums(masked_logit_sums(logits, mask.clone()), mask, vocab)
}

/// Reads named scalars back to the host in one transfer.
pub fn read_metrics(metrics: Vec<Metric>) -> Result<Vec<(&'static str, f64)>, CoreError> {
    if metrics.is_empty() {
        return Ok(Vec::new());
    }
    let dtype = metrics[0].1.dtype();
    let (names, values): (Vec<_>, Vec<_>) = metrics
        .into_iter()
        .map(|(name, value)| (name, value.cast(dtype)))
        .unzip();
    let host = Tensor::cat(values, 0)
        .try_into_vec_as::<f64>()
        .map_err(|e| CoreError::DeviceRead {
            tensor: "metrics",
            reason: format!("{e:?}"),
        })?;
    Ok(names.into_iter().zip(host).collect())
}
