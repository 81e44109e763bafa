//! TRL 1.x's two token/pair weightings: LD-DPO's down-weighted tail (`ld_alpha`) and WPO's pair
//! weights (`use_weighting`), for any pair of token masks (the completion masks, or SDPO's kept
//! masks, which then take the completions' place).

use burn::tensor::{Bool, Tensor};

use crate::error::{CoreError, expect_shape};
use crate::logps::masked_sum;
use crate::selection::{SequenceLogps, TokenLogps};

/// LD-DPO's split of each side's tokens into the part shared with the other side of the pair and
/// the tail past it.
///
/// With `n_c`, `n_r` the number of tokens in the chosen and rejected masks of a pair and
/// `n = min(n_c, n_r)`, the first `n` tokens of each side (in sequence order, counting masked
/// tokens only) are *shared*, the rest are the *tail*. The longer side's tail is what LD-DPO
/// down-weights; the shorter side has none.
#[derive(Debug, Clone)]
pub struct LdSplit {
    /// Chosen tokens among the first `n` of the pair, `[batch, seq]`.
    pub chosen_shared: Tensor<2, Bool>,
    /// Chosen tokens past the first `n`, `[batch, seq]`.
    pub chosen_tail: Tensor<2, Bool>,
    /// Rejected tokens among the first `n`, `[batch, seq]`.
    pub rejected_shared: Tensor<2, Bool>,
    /// Rejected tokens past the first `n`, `[batch, seq]`.
    pub rejected_tail: Tensor<2, Bool>,
}

impl LdSplit {
    /// Splits a pair of token masks (TRL 1.x: `comp_pos = mask.cumsum(1)`, shared where
    /// `1 <= comp_pos <= n`, tail where `comp_pos > n`).
    ///
    /// # Shapes
    /// - `chosen_mask`, `rejected_mask`: `[batch, seq]`
    pub fn new(
        chosen_mask: Tensor<2, Bool>,
        rejected_mask: Tensor<2, Bool>,
    ) -> Result<Self, CoreError> {
        let [batch, seq] = chosen_mask.dims();
        expect_shape("rejected_mask", &rejected_mask.dims(), &[batch, seq])?;
        // Positions are counted in f32 (exact up to 2^24 tokens), on every backend.
        let count = |mask: Tensor<2, Bool>| mask.float().cast(burn::tensor::DType::F32);
        let chosen_pos = count(chosen_mask.clone()).cumsum(1);
        let rejected_pos = count(rejected_mask.clone()).cumsum(1);
        let chosen_len = count(chosen_mask.clone()).sum_dim(1);
        let rejected_len = count(rejected_mask.clone()).sum_dim(1);
        let shared_len = chosen_len.min_pair(rejected_len).expand([batch, seq]);
        let split = |pos: Tensor<2>, mask: Tensor<2, Bool>| {
            let tail = pos
                .clone()
                .greater(shared_len.clone())
                .bool_and(mask.clone());
            let shared = pos.lower_equal(shared_len.clone()).bool_and(mask);
            (shared, tail)
        };
        let (chosen_shared, chosen_tail) = split(chosen_pos, chosen_mask);
        let (rejected_shared, rejected_tail) = split(rejected_pos, rejected_mask);
        Ok(Self {
            chosen_shared,
            chosen_tail,
            rejected_shared,
            rejected_tail,
        })
    }
}

/// `shared_sum + ld_alpha * tail_sum` per row, as TRL 1.x adds them.
fn ld_sum(
    values: Tensor<2>,
    shared: Tensor<2, Bool>,
    tail: Tensor<2, Bool>,
    alpha: f64,
) -> Tensor<1> {
    masked_sum(values.clone(), shared) + masked_sum(values, tail) * alpha
}

/// The four sequence log-probs over the given chosen / rejected token masks, with LD-DPO's tail
/// weighting when `ld_alpha` is set (for policy and reference alike, as TRL 1.x).
///
/// Values under a false mask are ignored (masked, not multiplied, so garbage there cannot leak
/// in as NaN). `ld_alpha = None` gives the plain masked sums.
///
/// # Shapes
/// - the four log-prob tensors of `inputs` and both masks: `[batch, seq]`; returns `[batch]` each
pub fn sequence_sums(
    inputs: &TokenLogps,
    chosen_mask: Tensor<2, Bool>,
    rejected_mask: Tensor<2, Bool>,
    ld_alpha: Option<f64>,
) -> Result<SequenceLogps, CoreError> {
    let Some(alpha) = ld_alpha else {
        return Ok(SequenceLogps {
            policy_chosen: masked_sum(inputs.policy_chosen_logps.clone(), chosen_mask.clone()),
            policy_rejected: masked_sum(
                inputs.policy_rejected_logps.clone(),
                rejected_mask.clone(),
            ),
            ref_chosen: masked_sum(inputs.ref_chosen_logps.clone(), chosen_mask),
            ref_rejected: masked_sum(inputs.ref_rejected_logps.clone(), rejected_mask),
        });
    };
    let split = LdSplit::new(chosen_mask, rejected_mask)?;
    let chosen = |values: &Tensor<2>| {
        ld_sum(
            values.clone(),
            split.chosen_shared.clone(),
            split.chosen_tail.clone(),
            alpha,
        )
    };
    let rejected = |values: &Tensor<2>| {
        ld_sum(
            values.clone(),
            split.rejected_shared.clone(),
            split.rejected_tail.clone(),
            alpha,
        )
    };
    Ok(SequenceLogps {
        policy_chosen: chosen(&inputs.policy_chosen_logps),
        policy_rejected: rejected(&inputs.policy_rejected_logps),
        ref_chosen: chosen(&inputs.ref_chosen_logps),
        ref_rejected: rejected(&inputs.ref_rejected_logps),
    })
}

/// Number of tokens in each row of `mask`, at least 1, in `dtype`, `[batch]` (TRL's
/// `mask.sum(dim=1).clamp(min=1)`).
pub fn token_counts(mask: Tensor<2, Bool>, dtype: burn::tensor::DType) -> Tensor<1> {
    mask.int()
        .sum_dim(1)
        .squeeze_dim::<1>(1)
        .float()
        .cast(dtype)
        .clamp_min(1.0)
}

/// WPO's weight of each pair (Eq. 2 of the WPO paper, as TRL 1.x computes it):
/// `w = exp(mean_t (log p_t - log sum_v p_v^2))` over each side's tokens, and the pair weight
/// `w_chosen * w_rejected`, `[batch]`. A constant for the gradient.
///
/// The means run over the tokens of the given masks, divided by their count (at least 1):
/// the completion masks for the ordinary losses, SDPO's kept masks for `sdpo`. No clamping
/// (TRL 0.28 clamped the pair weight at 1; TRL 1.x does not).
///
/// # Shapes
/// - `inputs`' policy log-probs and WPO terms, both masks: `[batch, seq]`; returns `[batch]`
pub fn wpo_pair_weights(
    inputs: &TokenLogps,
    chosen_mask: Tensor<2, Bool>,
    rejected_mask: Tensor<2, Bool>,
) -> Result<Tensor<1>, CoreError> {
    let missing = |input| CoreError::MissingOptionInput {
        option: "use_weighting",
        input,
    };
    let chosen_sq = inputs
        .policy_chosen_log_sum_sq_probs
        .clone()
        .ok_or(missing("policy_chosen_log_sum_sq_probs"))?;
    let rejected_sq = inputs
        .policy_rejected_log_sum_sq_probs
        .clone()
        .ok_or(missing("policy_rejected_log_sum_sq_probs"))?;
    let side = |logps: Tensor<2>, sq: Tensor<2>, mask: Tensor<2, Bool>| {
        let dtype = logps.dtype();
        let aligned = masked_sum(logps.detach() - sq.detach(), mask.clone());
        (aligned / token_counts(mask, dtype)).exp()
    };
    Ok(
        side(inputs.policy_chosen_logps.clone(), chosen_sq, chosen_mask)
            * side(
                inputs.policy_rejected_logps.clone(),
                rejected_sq,
                rejected_mask,
            ),
    )
}
