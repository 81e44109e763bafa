//! SePO (arXiv 2408.13518): an oracle model's token rewards select the tokens; the loss is
//! reference-free.
//!
//! As the authors' code computes it (`SteveKGYang/SePO`, `token_score.py` and
//! `utils_selective.py`): each completion token's score is `r = lo - lor`, the log-ratio of a
//! small DPO-trained oracle to the oracle's own reference (`1 / beta_oracle` times its token
//! reward; the scale does not change ranks). The first completion token is never a candidate
//! (the code slices the scores at the prompt length, after the next-token shift). Of the
//! `N = n - 1` candidates, exactly `K = floor(sepo_ratio * N)` are selected (the float64
//! product, truncated): the largest `r` on the chosen side, the smallest on the rejected
//! side, ties to the lower position. The loss is `-logsigmoid(sepo_scale * (a_c - a_r))`, `a_s`
//! the mean selected policy log-prob; no reference model, no beta.

use std::cmp::Ordering::Equal;

use super::{
    TokenColumns, TokenMethodOutput, TokenScorer, TokenWeights, WeightKind, check_finite,
    device_rows, device_values, host_mask, host_rows,
};
use crate::error::CoreError;
use crate::numerics::log_sigmoid;
use crate::selection::TokenLogps;

/// The method's `loss_type`.
pub const NAME: &str = "sepo";
/// The oracle model's per-token log-probs.
pub const ORACLE_COLUMN: &str = "sepo_oracle_logps";
/// The oracle's own reference model's per-token log-probs.
pub const ORACLE_REF_COLUMN: &str = "sepo_oracle_ref_logps";

/// SePO's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SepoConfig {
    /// The fraction `k` of candidate tokens selected (the code's `--k_perc`; 0.3).
    pub sepo_ratio: f64,
    /// The fraction on the rejected side; `None`: `sepo_ratio` (the code uses one for both).
    pub sepo_rejected_ratio: Option<f64>,
    /// A factor on `a_c - a_r` inside the sigmoid (the paper's coefficient; 1 in the code).
    pub sepo_scale: f64,
}

impl Default for SepoConfig {
    fn default() -> Self {
        Self {
            sepo_ratio: 0.3,
            sepo_rejected_ratio: None,
            sepo_scale: 1.0,
        }
    }
}

/// SePO: the scorer and its loss.
#[derive(Debug, Clone, Copy)]
pub struct Sepo {
    config: SepoConfig,
}

impl Sepo {
    /// Checks the hyperparameters.
    ///
    /// # Errors
    /// A ratio outside `(0, 1]` or a non-finite scale, naming its key.
    pub fn new(config: SepoConfig) -> Result<Self, CoreError> {
        check_ratio("sepo_ratio", config.sepo_ratio)?;
        if let Some(ratio) = config.sepo_rejected_ratio {
            check_ratio("sepo_rejected_ratio", ratio)?;
        }
        check_finite("sepo_scale", config.sepo_scale, false)?;
        Ok(Self { config })
    }

    /// The loss on one batch (the reference log-probs in `inputs` are not read).
    ///
    /// # Errors
    /// A missing oracle column, shapes that do not fit, a non-finite score, or a completion
    /// too short for one selected token.
    pub fn forward(
        &self,
        inputs: &TokenLogps,
        columns: &TokenColumns,
    ) -> Result<TokenMethodOutput, CoreError> {
        let weights = self.score(inputs, columns)?;
        let sums = weights.weighted_sums(inputs);
        let margin =
            (sums.policy_chosen.clone() - sums.policy_rejected.clone()) * self.config.sepo_scale;
        let losses = log_sigmoid(margin).neg();
        Ok(TokenMethodOutput::new(
            losses,
            sums.policy_chosen,
            sums.policy_rejected,
            weights,
        ))
    }
}

impl TokenScorer for Sepo {
    fn name(&self) -> &'static str {
        NAME
    }

    fn columns(&self) -> Vec<&'static str> {
        vec![ORACLE_COLUMN, ORACLE_REF_COLUMN]
    }

    fn uses_reference(&self) -> bool {
        false
    }

    fn score(
        &self,
        inputs: &TokenLogps,
        columns: &TokenColumns,
    ) -> Result<TokenWeights, CoreError> {
        let dims = inputs.check_shapes()?;
        let oracle = columns.require(NAME, ORACLE_COLUMN, dims)?;
        let oracle_ref = columns.require(NAME, ORACLE_REF_COLUMN, dims)?;
        let like = &inputs.policy_chosen_logps;
        let rejected_ratio = self
            .config
            .sepo_rejected_ratio
            .unwrap_or(self.config.sepo_ratio);
        let [chosen_side, rejected_side] = [
            (
                "chosen",
                &oracle.chosen,
                &oracle_ref.chosen,
                &inputs.chosen_loss_mask,
                self.config.sepo_ratio,
                true,
            ),
            (
                "rejected",
                &oracle.rejected,
                &oracle_ref.rejected,
                &inputs.rejected_loss_mask,
                rejected_ratio,
                false,
            ),
        ]
        .map(
            |(name, oracle, oracle_ref, mask, ratio, top)| -> Result<_, CoreError> {
                let lo = host_rows(oracle.clone().detach(), ORACLE_COLUMN)?;
                let lor = host_rows(oracle_ref.clone().detach(), ORACLE_REF_COLUMN)?;
                let valid = host_mask(mask.clone(), "loss mask")?;
                let mut scores = Vec::with_capacity(valid.len());
                let mut selected = Vec::with_capacity(valid.len());
                let mut counts = Vec::with_capacity(valid.len());
                for (pair, ((lo, lor), valid)) in lo.iter().zip(&lor).zip(&valid).enumerate() {
                    let row: Vec<f64> = lo
                        .iter()
                        .zip(lor)
                        .zip(valid)
                        .map(|((lo, lor), &valid)| if valid { lo - lor } else { 0.0 })
                        .collect();
                    let keep =
                        select(&row, valid, ratio, top).map_err(|reason| CoreError::TooSmall {
                            tensor: if top {
                                "chosen_loss_mask"
                            } else {
                                "rejected_loss_mask"
                            },
                            reason: format!("pair {pair}, {name} completion: {reason}"),
                        })?;
                    counts.push(keep.iter().filter(|&&k| k).count() as f64);
                    selected.push(keep.iter().map(|&k| f64::from(u8::from(k))).collect());
                    scores.push(row);
                }
                Ok((
                    device_rows(&scores, like),
                    device_rows(&selected, like),
                    device_values(counts, like),
                ))
            },
        );
        let (chosen_scores, chosen, chosen_count) = chosen_side?;
        let (rejected_scores, rejected, rejected_count) = rejected_side?;
        Ok(TokenWeights {
            kind: WeightKind::Mask,
            chosen_scores,
            rejected_scores,
            chosen,
            rejected,
            chosen_normaliser: Some(chosen_count),
            rejected_normaliser: Some(rejected_count),
            pair_valid: None,
        })
    }
}

/// SePO's selection on one completion: of the completion tokens after the first, exactly
/// `floor(ratio * N)` with the largest scores (`top`) or the smallest, ties to the lower
/// position. `scores` and `valid` are one row; the result is true on the selected positions.
///
/// # Errors
/// A message when a candidate's score is not finite or the count is 0 (the authors' code
/// divides by it; their data preparation drops responses under 8 tokens).
pub fn select(scores: &[f64], valid: &[bool], ratio: f64, top: bool) -> Result<Vec<bool>, String> {
    let mut candidates: Vec<usize> = (0..valid.len()).filter(|&t| valid[t]).skip(1).collect();
    if let Some(&t) = candidates.iter().find(|&&t| !scores[t].is_finite()) {
        return Err(format!(
            "the oracle's score at position {t} is {}",
            scores[t]
        ));
    }
    let count = (ratio * candidates.len() as f64).floor() as usize;
    if count == 0 {
        return Err(format!(
            "{} candidate token(s) after the first: sepo_ratio = {ratio} selects none (give \
             longer completions, or raise the ratio)",
            candidates.len()
        ));
    }
    // A stable sort keeps equal scores in position order (the scores are finite; -0 and 0
    // are equal).
    if top {
        candidates.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(Equal));
    } else {
        candidates.sort_by(|&a, &b| scores[a].partial_cmp(&scores[b]).unwrap_or(Equal));
    }
    let mut keep = vec![false; valid.len()];
    for &t in &candidates[..count] {
        keep[t] = true;
    }
    Ok(keep)
}

fn check_ratio(field: &'static str, ratio: f64) -> Result<(), CoreError> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(CoreError::InvalidConfig {
            field,
            value: ratio.to_string(),
            reason: "a fraction of the tokens must lie in (0, 1]".into(),
        });
    }
    Ok(())
}
