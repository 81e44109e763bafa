//! Critical tokens (arXiv 2411.19943, "cDPO" in its paper; here `critical_token`, since TRL's
//! cDPO is conservative DPO): rejected tokens weighted by how much more likely a model tuned
//! on incorrect answers finds them than one tuned on correct answers.
//!
//! As the authors' code computes it (`chenzhiling9954/Critical-Tokens-Matter`,
//! `Pipeline.calculate_ce_score` and `CDPOTrainer.dpo_loss`): the contrastive-estimation
//! probability of each token, `p_CE = softmax((1 + g) * logits+ - g * logits-)[token]` with
//! `g = 1` ([`ce_probs`]), is precomputed from the two tuned models. Rejected tokens weigh
//! `1 - p_CE`, chosen tokens 1 (`ct_only_neg`, the default; else `p_CE`); EOS weighs 1. The
//! code's loss ([`CtReduction::Position`]) applies the sigmoid per aligned position, pairing
//! the `i`-th chosen with the `i`-th rejected completion token, and averages over the whole
//! padded grid, where each position that is completion on neither side adds `log 2`; the
//! paper's ([`CtReduction::Sequence`]) is the sigmoid DPO loss on the weighted sums. The logged
//! rewards are the unweighted `beta * sum_t rho_t`.

use burn::tensor::{Int, Tensor, TensorData};

use super::{
    TokenColumns, TokenMethodOutput, TokenScorer, TokenWeights, WeightKind, check_finite,
    device_rows, host_mask, host_rows, log_ratios, plain_rewards,
};
use crate::error::{CoreError, expect_shape};
use crate::numerics::log_sigmoid;
use crate::selection::TokenLogps;

/// The method's `loss_type`.
pub const NAME: &str = "critical_token";
/// The contrastive-estimation probability `p_CE` of each completion token.
pub const CE_PROB_COLUMN: &str = "ct_ce_prob";

/// How the per-token terms become the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CtReduction {
    /// The code's: `-logsigmoid(beta * (w_c,i rho_c,i - w_r,i rho_r,i))` per completion index
    /// `i` (a side without token `i` contributes 0), summed with `log 2` for every other
    /// position of the grid and divided by `denominator`.
    Position {
        /// The grid's size, `B * (T - 1)` of the authors' padded batch; `None`: `B * T` of the
        /// batch's own `[B, T]` log-probs.
        denominator: Option<f64>,
    },
    /// The paper's: `-logsigmoid(beta * (sum_t w_c,t rho_c,t - sum_t w_r,t rho_r,t))`.
    Sequence,
}

/// The critical-token method's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CriticalTokenConfig {
    /// Inverse temperature (0.1).
    pub beta: f64,
    /// Chosen tokens weigh 1 (the code's default); else `p_CE`.
    pub only_neg: bool,
    /// The reduction (the code's `Position` by default).
    pub reduction: CtReduction,
}

impl Default for CriticalTokenConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            only_neg: true,
            reduction: CtReduction::Position { denominator: None },
        }
    }
}

/// The critical-token method: the scorer and its loss.
#[derive(Debug, Clone, Copy)]
pub struct CriticalToken {
    config: CriticalTokenConfig,
}

impl CriticalToken {
    /// Checks the hyperparameters.
    ///
    /// # Errors
    /// A non-finite `beta` or denominator, naming its key.
    pub fn new(config: CriticalTokenConfig) -> Result<Self, CoreError> {
        check_finite("beta", config.beta, true)?;
        if let CtReduction::Position {
            denominator: Some(denominator),
        } = config.reduction
        {
            check_finite("ct_position_denominator", denominator, true)?;
        }
        Ok(Self { config })
    }

    /// The loss on one batch.
    ///
    /// # Errors
    /// A missing `p_CE` column, shapes that do not fit, a probability outside `[0, 1]`, or a
    /// denominator smaller than the completion positions.
    pub fn forward(
        &self,
        inputs: &TokenLogps,
        columns: &TokenColumns,
    ) -> Result<TokenMethodOutput, CoreError> {
        let weights = self.score(inputs, columns)?;
        let beta = self.config.beta;
        let (chosen, rejected) = weights.weighted_log_ratios(inputs);
        let losses = match self.config.reduction {
            CtReduction::Sequence => log_sigmoid((chosen.clone() - rejected.clone()) * beta).neg(),
            CtReduction::Position { denominator } => {
                self.position_losses(inputs, &weights, denominator)?
            }
        };
        // The code logs the unweighted `beta * rho` (averaged over its grid).
        let (chosen_rewards, rejected_rewards) = plain_rewards(inputs, beta);
        Ok(TokenMethodOutput::new(
            losses,
            chosen_rewards,
            rejected_rewards,
            weights,
        ))
    }

    /// Per-pair losses of the position reduction, scaled so that their mean is the code's
    /// loss: `B / D * (sum_i l_i + (D / B - L_b) * log 2)`, `L_b = max(n_c, n_r)`.
    fn position_losses(
        &self,
        inputs: &TokenLogps,
        weights: &TokenWeights,
        denominator: Option<f64>,
    ) -> Result<Tensor<1>, CoreError> {
        let [batch, seq] = inputs.check_shapes()?;
        let denominator = denominator.unwrap_or((batch * seq) as f64);
        let chosen_valid = host_mask(inputs.chosen_loss_mask.clone(), "chosen_loss_mask")?;
        let rejected_valid = host_mask(inputs.rejected_loss_mask.clone(), "rejected_loss_mask")?;
        let positions = |valid: &Vec<Vec<bool>>| -> Vec<Vec<usize>> {
            valid
                .iter()
                .map(|row| (0..row.len()).filter(|&t| row[t]).collect())
                .collect()
        };
        let chosen_positions = positions(&chosen_valid);
        let rejected_positions = positions(&rejected_valid);
        let lengths: Vec<usize> = chosen_positions
            .iter()
            .zip(&rejected_positions)
            .map(|(c, r)| c.len().max(r.len()))
            .collect();
        let width = lengths.iter().copied().max().unwrap_or(0).max(1);
        let completion_positions: usize = lengths.iter().sum();
        let per_pair = denominator / batch as f64;
        if (completion_positions as f64) > denominator
            || lengths.iter().any(|&l| l as f64 > per_pair)
        {
            return Err(CoreError::InvalidConfig {
                field: "ct_position_denominator",
                value: denominator.to_string(),
                reason: format!(
                    "the grid must hold every aligned completion position ({} per pair at most)",
                    lengths.iter().copied().max().unwrap_or(0)
                ),
            });
        }
        let like = &inputs.policy_chosen_logps;
        let device = like.device();
        // Gather indices (completion index i -> row position) and which exist, per side.
        let aligned = |positions: &Vec<Vec<usize>>| {
            let mut index = Vec::with_capacity(batch * width);
            let mut present = Vec::with_capacity(batch * width);
            for row in positions {
                for i in 0..width {
                    index.push(row.get(i).copied().unwrap_or(0) as i64);
                    present.push(if i < row.len() { 1.0 } else { 0.0 });
                }
            }
            let index =
                Tensor::<2, Int>::from_data(TensorData::new(index, [batch, width]), &device);
            let present = present
                .chunks(width)
                .map(<[f64]>::to_vec)
                .collect::<Vec<_>>();
            (index, present)
        };
        let (chosen_index, chosen_present) = aligned(&chosen_positions);
        let (rejected_index, rejected_present) = aligned(&rejected_positions);
        // Each side's weighted log-ratio at completion index i (0 where the side has none).
        let ratios = log_ratios(inputs);
        let aligned_terms = |ratio: Tensor<2>, w: &Tensor<2>, index, present: &[Vec<f64>]| {
            (ratio * w.clone()).gather(1, index) * device_rows(present, like)
        };
        let chosen = aligned_terms(
            ratios.chosen,
            &weights.chosen,
            chosen_index,
            &chosen_present,
        );
        let rejected = aligned_terms(
            ratios.rejected,
            &weights.rejected,
            rejected_index,
            &rejected_present,
        );
        let either: Vec<Vec<f64>> = lengths
            .iter()
            .map(|&l| (0..width).map(|i| if i < l { 1.0 } else { 0.0 }).collect())
            .collect();
        let either = device_rows(&either, like);
        let per_position = log_sigmoid((chosen - rejected) * self.config.beta).neg() * either;
        let padding: Vec<f64> = lengths
            .iter()
            .map(|&l| (per_pair - l as f64) * std::f64::consts::LN_2)
            .collect();
        let padding = super::device_values(padding, like);
        let sums = per_position.sum_dim(1).squeeze_dim(1) + padding;
        Ok(sums * (batch as f64 / denominator))
    }
}

impl TokenScorer for CriticalToken {
    fn name(&self) -> &'static str {
        NAME
    }

    fn columns(&self) -> Vec<&'static str> {
        vec![CE_PROB_COLUMN]
    }

    fn uses_reference(&self) -> bool {
        true
    }

    fn score(
        &self,
        inputs: &TokenLogps,
        columns: &TokenColumns,
    ) -> Result<TokenWeights, CoreError> {
        let dims = inputs.check_shapes()?;
        let ce = columns.require(NAME, CE_PROB_COLUMN, dims)?;
        let like = &inputs.policy_chosen_logps;
        let [chosen_side, rejected_side] = [
            (true, &ce.chosen, &inputs.chosen_loss_mask),
            (false, &ce.rejected, &inputs.rejected_loss_mask),
        ]
        .map(|(chosen, probs, mask)| -> Result<_, CoreError> {
            let probs = host_rows(probs.clone().detach(), CE_PROB_COLUMN)?;
            let valid = host_mask(mask.clone(), "loss mask")?;
            let mut scores = Vec::with_capacity(probs.len());
            let mut weights = Vec::with_capacity(probs.len());
            for (pair, (probs, valid)) in probs.iter().zip(&valid).enumerate() {
                let last = (0..valid.len()).rev().find(|&t| valid[t]);
                let mut score_row = vec![0.0; valid.len()];
                let mut weight_row = vec![0.0; valid.len()];
                for t in (0..valid.len()).filter(|&t| valid[t]) {
                    let p = probs[t];
                    if Some(t) != last && !(0.0..=1.0).contains(&p) {
                        return Err(CoreError::InvalidConfig {
                            field: CE_PROB_COLUMN,
                            value: p.to_string(),
                            reason: format!(
                                "pair {pair}, {} completion, position {t}: a probability must lie in [0, 1]",
                                if chosen { "chosen" } else { "rejected" }
                            ),
                        });
                    }
                    score_row[t] = p;
                    weight_row[t] = if Some(t) == last {
                        1.0
                    } else if !chosen {
                        1.0 - p
                    } else if self.config.only_neg {
                        1.0
                    } else {
                        p
                    };
                }
                scores.push(score_row);
                weights.push(weight_row);
            }
            Ok((device_rows(&scores, like), device_rows(&weights, like)))
        });
        let (chosen_scores, chosen) = chosen_side?;
        let (rejected_scores, rejected) = rejected_side?;
        Ok(TokenWeights {
            kind: WeightKind::Weight,
            chosen_scores,
            rejected_scores,
            chosen,
            rejected,
            chosen_normaliser: None,
            rejected_normaliser: None,
            pair_valid: None,
        })
    }
}

/// `p_CE` of each label: `softmax((1 + gamma) * positive - gamma * negative)[label]` over the
/// vocabulary, from the two tuned models' logits at the same positions (the code's `gamma` is
/// 1). Positions are next-token aligned like the log-probs; a constant (no gradient).
///
/// # Shapes
/// - `positive_logits`, `negative_logits`: `[batch, seq, vocab]`; `labels`: `[batch, seq]`
/// - returns `[batch, seq]`
///
/// # Errors
/// Shapes that do not fit.
pub fn ce_probs(
    positive_logits: Tensor<3>,
    negative_logits: Tensor<3>,
    labels: Tensor<2, Int>,
    gamma: f64,
) -> Result<Tensor<2>, CoreError> {
    Ok(ce_logps(positive_logits, negative_logits, labels, gamma)?.exp())
}

/// `log p_CE` of each label (see [`ce_probs`]): the log-prob of the token under the
/// contrastive distribution, the form a log-prob cache stores.
///
/// # Errors
/// Shapes that do not fit.
pub fn ce_logps(
    positive_logits: Tensor<3>,
    negative_logits: Tensor<3>,
    labels: Tensor<2, Int>,
    gamma: f64,
) -> Result<Tensor<2>, CoreError> {
    let dims = positive_logits.dims();
    expect_shape("negative_logits", &negative_logits.dims(), &dims)?;
    expect_shape("labels", &labels.dims(), &dims[..2])?;
    let combined = positive_logits.detach() * (1.0 + gamma) - negative_logits.detach() * gamma;
    crate::logps::token_logps(combined, labels)
}
