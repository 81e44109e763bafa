//! SDPO token selection: score every completion token, keep the important ones per sequence.

use burn::tensor::{Bool, Tensor};

use crate::error::{CoreError, expect_shape};
use crate::logps::masked_sum;
use crate::quantile::masked_quantile;

/// Per-token log-probs of a preference batch and which positions are completion tokens.
///
/// The log-probs are next-token log-probs after the shift (see
/// [`completion_logps`](crate::completion_logps)); values under a false mask are ignored, whatever
/// they are.
#[derive(Debug, Clone)]
pub struct TokenLogps {
    /// Policy log-probs of the chosen completions, `[batch, seq]`.
    pub policy_chosen_logps: Tensor<2>,
    /// Policy log-probs of the rejected completions, `[batch, seq]`.
    pub policy_rejected_logps: Tensor<2>,
    /// Reference log-probs of the chosen completions, `[batch, seq]`.
    pub ref_chosen_logps: Tensor<2>,
    /// Reference log-probs of the rejected completions, `[batch, seq]`.
    pub ref_rejected_logps: Tensor<2>,
    /// True on the chosen completion tokens, `[batch, seq]`.
    pub chosen_loss_mask: Tensor<2, Bool>,
    /// True on the rejected completion tokens, `[batch, seq]`.
    pub rejected_loss_mask: Tensor<2, Bool>,
    /// WPO (`use_weighting`) only: the policy's `log(sum_v p_v^2)` at each chosen position,
    /// `[batch, seq]`, aligned with `policy_chosen_logps` (see
    /// [`completion_log_sum_sq_probs`](crate::completion_log_sum_sq_probs)). `None` when WPO is
    /// off; the loss refuses to run without it when WPO is on. Values under a false mask are
    /// ignored; it is a constant for the gradient.
    pub policy_chosen_log_sum_sq_probs: Option<Tensor<2>>,
    /// WPO only: the policy's `log(sum_v p_v^2)` at each rejected position, `[batch, seq]`.
    pub policy_rejected_log_sum_sq_probs: Option<Tensor<2>>,
}

impl TokenLogps {
    /// Checks that all six tensors share the policy-chosen shape; returns `[batch, seq]`.
    pub fn check_shapes(&self) -> Result<[usize; 2], CoreError> {
        let dims = self.policy_chosen_logps.dims();
        expect_shape(
            "policy_rejected_logps",
            &self.policy_rejected_logps.dims(),
            &dims,
        )?;
        expect_shape("ref_chosen_logps", &self.ref_chosen_logps.dims(), &dims)?;
        expect_shape("ref_rejected_logps", &self.ref_rejected_logps.dims(), &dims)?;
        expect_shape("chosen_loss_mask", &self.chosen_loss_mask.dims(), &dims)?;
        expect_shape("rejected_loss_mask", &self.rejected_loss_mask.dims(), &dims)?;
        if let Some(t) = &self.policy_chosen_log_sum_sq_probs {
            expect_shape("policy_chosen_log_sum_sq_probs", &t.dims(), &dims)?;
        }
        if let Some(t) = &self.policy_rejected_log_sum_sq_probs {
            expect_shape("policy_rejected_log_sum_sq_probs", &t.dims(), &dims)?;
        }
        Ok(dims)
    }

    /// Sequence log-probs over every valid token (what plain DPO uses).
    pub fn full_sums(&self) -> SequenceLogps {
        SequenceLogps {
            policy_chosen: masked_sum(
                self.policy_chosen_logps.clone(),
                self.chosen_loss_mask.clone(),
            ),
            policy_rejected: masked_sum(
                self.policy_rejected_logps.clone(),
                self.rejected_loss_mask.clone(),
            ),
            ref_chosen: masked_sum(self.ref_chosen_logps.clone(), self.chosen_loss_mask.clone()),
            ref_rejected: masked_sum(
                self.ref_rejected_logps.clone(),
                self.rejected_loss_mask.clone(),
            ),
        }
    }
}

/// Sequence-level log-probs, the inputs of every DPO-family loss.
#[derive(Debug, Clone)]
pub struct SequenceLogps {
    /// Policy log-prob of each chosen completion, `[batch]`.
    pub policy_chosen: Tensor<1>,
    /// Policy log-prob of each rejected completion, `[batch]`.
    pub policy_rejected: Tensor<1>,
    /// Reference log-prob of each chosen completion, `[batch]`.
    pub ref_chosen: Tensor<1>,
    /// Reference log-prob of each rejected completion, `[batch]`.
    pub ref_rejected: Tensor<1>,
}

/// The outcome of SDPO token selection for one batch.
#[derive(Debug, Clone)]
pub struct TokenSelection {
    /// Importance of each chosen token, `ref - policy` (0 where not valid), `[batch, seq]`.
    pub chosen_scores: Tensor<2>,
    /// Importance of each rejected token, `policy - ref` (0 where not valid), `[batch, seq]`.
    pub rejected_scores: Tensor<2>,
    /// Per-sequence chosen threshold, `-inf` for a sequence without valid tokens, `[batch]`.
    pub chosen_threshold: Tensor<1>,
    /// Per-sequence rejected threshold, `-inf` for a sequence without valid tokens, `[batch]`.
    pub rejected_threshold: Tensor<1>,
    /// Kept chosen tokens: valid and `score >= threshold`, `[batch, seq]`.
    pub chosen_kept: Tensor<2, Bool>,
    /// Kept rejected tokens: valid and `score >= threshold`, `[batch, seq]`.
    pub rejected_kept: Tensor<2, Bool>,
    /// The four sums over the kept tokens (policy and reference, chosen and rejected).
    pub sums: SequenceLogps,
}

/// Scores every completion token by how far policy and reference disagree in the direction
/// that matters, keeps those at or above the per-sequence `q`-quantile of the scores, and sums
/// the log-probs over the kept tokens (the seed implementation's name for this step).
///
/// - chosen score `ref - policy`: the policy under-rates a good token;
/// - rejected score `policy - ref`: the policy over-rates a bad token;
/// - validity comes from the loss masks only, never from the value of a log-prob;
/// - `q = 0` keeps every valid token (plain DPO), `q = 0.6` about the top 40 %; ties at the
///   threshold are all kept;
/// - the masks are constants for the gradient: the gradient reaches the policy log-probs only
///   through the sums.
pub fn mask_unimportant_tokens(inputs: &TokenLogps, q: f64) -> Result<TokenSelection, CoreError> {
    inputs.check_shapes()?;
    let chosen = select_side(
        inputs.ref_chosen_logps.clone().detach() - inputs.policy_chosen_logps.clone().detach(),
        inputs.chosen_loss_mask.clone(),
        q,
    )?;
    let rejected = select_side(
        inputs.policy_rejected_logps.clone().detach() - inputs.ref_rejected_logps.clone().detach(),
        inputs.rejected_loss_mask.clone(),
        q,
    )?;
    let sums = SequenceLogps {
        policy_chosen: kept_sum(inputs.policy_chosen_logps.clone(), chosen.dropped.clone()),
        policy_rejected: kept_sum(
            inputs.policy_rejected_logps.clone(),
            rejected.dropped.clone(),
        ),
        ref_chosen: kept_sum(inputs.ref_chosen_logps.clone(), chosen.dropped),
        ref_rejected: kept_sum(inputs.ref_rejected_logps.clone(), rejected.dropped),
    };
    Ok(TokenSelection {
        chosen_scores: chosen.scores,
        rejected_scores: rejected.scores,
        chosen_threshold: chosen.threshold,
        rejected_threshold: rejected.threshold,
        chosen_kept: chosen.kept,
        rejected_kept: rejected.kept,
        sums,
    })
}

struct SideSelection {
    scores: Tensor<2>,
    threshold: Tensor<1>,
    kept: Tensor<2, Bool>,
    /// `!kept`, computed once for the two sums of this side.
    dropped: Tensor<2, Bool>,
}

/// Sum over the kept tokens; values under `dropped` (including garbage) are ignored.
fn kept_sum(values: Tensor<2>, dropped: Tensor<2, Bool>) -> Tensor<1> {
    values.mask_fill(dropped, 0.0).sum_dim(1).squeeze_dim(1)
}

fn select_side(
    scores: Tensor<2>,
    valid: Tensor<2, Bool>,
    q: f64,
) -> Result<SideSelection, CoreError> {
    let [batch, seq] = scores.dims();
    // The quantile ignores invalid entries itself, and `kept` requires validity, so the raw
    // scores serve both; only the returned scores are zeroed where not valid.
    let threshold = masked_quantile(scores.clone(), valid.clone(), q)?;
    let kept = scores
        .clone()
        .greater_equal(threshold.clone().unsqueeze_dim::<2>(1).expand([batch, seq]))
        .bool_and(valid.clone());
    let dropped = kept.clone().bool_not();
    Ok(SideSelection {
        scores: scores.mask_fill(valid.bool_not(), 0.0),
        threshold,
        kept,
        dropped,
    })
}
