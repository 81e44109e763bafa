//! TGDPO (arXiv 2506.14574): a per-token beta from the token reward of a DPO-trained model.
//!
//! As the authors' code computes it (`dvlab-research/TGDPO`, `CustomDPOTrainer.dpo_loss`):
//! a frozen token-reward model's log-probs `lk` give each completion token the reward
//! `r_hat = lk - lr` against the policy's own reference; the chosen tokens' beta is
//! `beta * (1 + alpha * beta * r_hat)`, the rejected tokens' `beta * (1 - alpha * beta *
//! r_hat)`, neither clipped (a token's beta may reach 0 or go negative), and the loss is
//! `-logsigmoid(sum_t beta_c,t rho_c,t - sum_t beta_r,t rho_r,t)`. `alpha = 0` is DPO. The
//! logged rewards are the unweighted `beta * sum_t rho_t`.

use super::{
    TokenColumns, TokenMethodOutput, TokenScorer, TokenWeights, WeightKind, check_finite,
    mask_weights, plain_rewards,
};
use crate::error::CoreError;
use crate::numerics::log_sigmoid;
use crate::selection::TokenLogps;

/// The method's `loss_type`.
pub const NAME: &str = "tgdpo";
/// The token-reward model's per-token log-probs.
pub const REWARD_COLUMN: &str = "tgdpo_reward_logps";

/// TGDPO's hyperparameters (the code's `pref_beta` and `tgdpo_alpha`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TgdpoConfig {
    /// Inverse temperature (0.1).
    pub beta: f64,
    /// How strongly the token reward moves each token's beta (0.5).
    pub alpha: f64,
}

impl Default for TgdpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            alpha: 0.5,
        }
    }
}

/// TGDPO: the scorer and its loss.
#[derive(Debug, Clone, Copy)]
pub struct Tgdpo {
    config: TgdpoConfig,
}

impl Tgdpo {
    /// Checks the hyperparameters.
    ///
    /// # Errors
    /// A non-finite value or a `beta` not above 0, naming its key.
    pub fn new(config: TgdpoConfig) -> Result<Self, CoreError> {
        check_finite("beta", config.beta, true)?;
        check_finite("tgdpo_alpha", config.alpha, false)?;
        Ok(Self { config })
    }

    /// The loss on one batch.
    ///
    /// # Errors
    /// A missing reward-model column or shapes that do not fit.
    pub fn forward(
        &self,
        inputs: &TokenLogps,
        columns: &TokenColumns,
    ) -> Result<TokenMethodOutput, CoreError> {
        let weights = self.score(inputs, columns)?;
        let beta = self.config.beta;
        let (chosen, rejected) = weights.weighted_log_ratios(inputs);
        let losses = log_sigmoid((chosen - rejected) * beta).neg();
        let (chosen_rewards, rejected_rewards) = plain_rewards(inputs, beta);
        Ok(TokenMethodOutput::new(
            losses,
            chosen_rewards,
            rejected_rewards,
            weights,
        ))
    }
}

impl TokenScorer for Tgdpo {
    fn name(&self) -> &'static str {
        NAME
    }

    fn columns(&self) -> Vec<&'static str> {
        vec![REWARD_COLUMN]
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
        let reward = columns.require(NAME, REWARD_COLUMN, dims)?;
        let scale = self.config.alpha * self.config.beta;
        let side = |reward: &burn::tensor::Tensor<2>,
                    reference: &burn::tensor::Tensor<2>,
                    mask: &burn::tensor::Tensor<2, burn::tensor::Bool>,
                    sign: f64| {
            let invalid = mask.clone().bool_not();
            let r_hat = (reward.clone().detach() - reference.clone().detach())
                .mask_fill(invalid.clone(), 0.0);
            let weights =
                (r_hat.clone() * (sign * scale) + 1.0) * mask_weights(mask.clone(), reference);
            (r_hat, weights)
        };
        let (chosen_scores, chosen) = side(
            &reward.chosen,
            &inputs.ref_chosen_logps,
            &inputs.chosen_loss_mask,
            1.0,
        );
        let (rejected_scores, rejected) = side(
            &reward.rejected,
            &inputs.ref_rejected_logps,
            &inputs.rejected_loss_mask,
            -1.0,
        );
        Ok(TokenWeights {
            kind: WeightKind::TokenBeta,
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
