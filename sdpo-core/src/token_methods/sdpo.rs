//! SDPO as a token scorer: the selection of [`mask_unimportant_tokens`] as {0,1} weights.
//!
//! The weighted sums of these weights are bit-identical to the selection's own kept-token
//! sums (a kept token's log-prob times 1.0 is itself, a dropped one's times 0.0 is 0); the
//! SDPO loss itself stays in [`PreferenceLoss`](crate::PreferenceLoss), which SDPO shares
//! with the DPO family (label smoothing, LD-DPO, WPO, mixtures).

use super::{TokenColumns, TokenScorer, TokenWeights, WeightKind};
use crate::error::CoreError;
use crate::selection::{TokenLogps, mask_unimportant_tokens};

/// The method's `loss_type`.
pub const NAME: &str = "sdpo";

/// SDPO's scorer: scores `ref - policy` (chosen) and `policy - ref` (rejected), kept at or
/// above the per-sequence `sdpo_threshold`-quantile.
#[derive(Debug, Clone, Copy)]
pub struct SdpoScorer {
    /// The quantile `q` (`sdpo_threshold`; 0.6 keeps about 40 %).
    pub threshold: f64,
}

impl TokenScorer for SdpoScorer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn columns(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn uses_reference(&self) -> bool {
        true
    }

    fn score(&self, inputs: &TokenLogps, _: &TokenColumns) -> Result<TokenWeights, CoreError> {
        let selection = mask_unimportant_tokens(inputs, self.threshold)?;
        let dtype = inputs.policy_chosen_logps.dtype();
        Ok(TokenWeights {
            kind: WeightKind::Mask,
            chosen_scores: selection.chosen_scores,
            rejected_scores: selection.rejected_scores,
            chosen: selection.chosen_kept.float().cast(dtype),
            rejected: selection.rejected_kept.float().cast(dtype),
            chosen_normaliser: None,
            rejected_normaliser: None,
            pair_valid: None,
        })
    }
}
