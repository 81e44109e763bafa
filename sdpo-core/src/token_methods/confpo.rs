//! ConfPO (arXiv 2506.08712): train only on the tokens the policy is least confident about.
//!
//! As the authors' code computes it (`hee-suk-yoon/ConfPO`, `CPOTrainer.cpo_loss_confpo`):
//! per sequence and side, a token is kept when its policy probability is below the sequence's
//! arithmetic mean token probability (`exp(lp_t) < mean_t exp(lp_t)`, strict, recomputed from
//! the current policy at every step); the loss is SimPO over the kept tokens only,
//! `-logsigmoid(beta * (a_c - a_r - simpo_gamma / beta))` with `a_s` the mean kept log-prob,
//! smoothed by `label_smoothing`; a pair with no kept token on a side has loss 0 and still
//! counts in the batch mean. No reference model.

use burn::tensor::{Bool, Tensor};

use super::{TokenColumns, TokenMethodOutput, TokenScorer, TokenWeights, WeightKind, check_finite};
use crate::error::CoreError;
use crate::numerics::log_sigmoid;
use crate::selection::TokenLogps;

/// The method's `loss_type`.
pub const NAME: &str = "confpo";

/// ConfPO's hyperparameters (the names of the authors' `CPOConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfpoConfig {
    /// Inverse temperature (the authors' run: 1.5; `CPOConfig`'s default 0.1).
    pub beta: f64,
    /// SimPO's target margin `gamma` (the authors' run: 1.6; default 0.5).
    pub simpo_gamma: f64,
    /// Label smoothing `epsilon` in `[0, 0.5)`.
    pub label_smoothing: f64,
}

impl Default for ConfpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            simpo_gamma: 0.5,
            label_smoothing: 0.0,
        }
    }
}

/// ConfPO: the scorer and its loss.
#[derive(Debug, Clone, Copy)]
pub struct Confpo {
    config: ConfpoConfig,
}

impl Confpo {
    /// Checks the hyperparameters.
    ///
    /// # Errors
    /// A non-finite or out-of-range value, naming its key.
    pub fn new(config: ConfpoConfig) -> Result<Self, CoreError> {
        check_finite("beta", config.beta, true)?;
        check_finite("simpo_gamma", config.simpo_gamma, false)?;
        check_finite("label_smoothing", config.label_smoothing, false)?;
        if !(0.0..0.5).contains(&config.label_smoothing) {
            return Err(CoreError::InvalidConfig {
                field: "label_smoothing",
                value: config.label_smoothing.to_string(),
                reason: "must lie in [0, 0.5)".into(),
            });
        }
        Ok(Self { config })
    }

    /// The loss on one batch (the reference log-probs in `inputs` are not read).
    ///
    /// # Errors
    /// Shapes that do not fit.
    pub fn forward(
        &self,
        inputs: &TokenLogps,
        columns: &TokenColumns,
    ) -> Result<TokenMethodOutput, CoreError> {
        let weights = self.score(inputs, columns)?;
        let sums = weights.weighted_sums(inputs);
        let ConfpoConfig {
            beta,
            simpo_gamma,
            label_smoothing,
        } = self.config;
        let logits =
            (sums.policy_chosen.clone() - sums.policy_rejected.clone()) - simpo_gamma / beta;
        let scaled = logits * beta;
        let mut losses = log_sigmoid(scaled.clone()).neg() * (1.0 - label_smoothing)
            - log_sigmoid(scaled.neg()) * label_smoothing;
        if let Some(valid) = &weights.pair_valid {
            losses = losses.mask_fill(valid.clone().bool_not(), 0.0);
        }
        Ok(TokenMethodOutput::new(
            losses,
            sums.policy_chosen * beta,
            sums.policy_rejected * beta,
            weights,
        ))
    }
}

impl TokenScorer for Confpo {
    fn name(&self) -> &'static str {
        NAME
    }

    fn columns(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn uses_reference(&self) -> bool {
        false
    }

    fn score(&self, inputs: &TokenLogps, _: &TokenColumns) -> Result<TokenWeights, CoreError> {
        inputs.check_shapes()?;
        let chosen = low_confidence(
            inputs.policy_chosen_logps.clone(),
            inputs.chosen_loss_mask.clone(),
        );
        let rejected = low_confidence(
            inputs.policy_rejected_logps.clone(),
            inputs.rejected_loss_mask.clone(),
        );
        let pair_valid = chosen
            .count
            .clone()
            .greater_elem(0.0)
            .bool_and(rejected.count.clone().greater_elem(0.0));
        Ok(TokenWeights {
            kind: WeightKind::Mask,
            chosen_scores: chosen.scores,
            rejected_scores: rejected.scores,
            chosen: chosen.weights,
            rejected: rejected.weights,
            chosen_normaliser: Some(chosen.count.clamp_min(1.0)),
            rejected_normaliser: Some(rejected.count.clamp_min(1.0)),
            pair_valid: Some(pair_valid),
        })
    }
}

struct Side {
    scores: Tensor<2>,
    weights: Tensor<2>,
    count: Tensor<1>,
}

/// Keeps the completion tokens whose log-prob is below the log of the sequence's mean token
/// probability.
fn low_confidence(logps: Tensor<2>, valid: Tensor<2, Bool>) -> Side {
    let [batch, seq] = logps.dims();
    let dtype = logps.dtype();
    let invalid = valid.clone().bool_not();
    let logps = logps.detach().mask_fill(invalid.clone(), f64::NEG_INFINITY);
    let count = valid.clone().int().sum_dim(1).float().cast(dtype); // [batch, 1]
    // Compared as probabilities, `p_t < mean(p)`, the same test as `lp_t < log(mean(p))`:
    // both sides then come from one `exp`, so a token equal to its row's mean (a one-token
    // completion, a row of equal log-probs) is never kept, however exact the backend's `exp`
    // and `log` are.
    let probs = logps.clone().exp();
    let mean_prob = (probs.clone().sum_dim(1) / count.clamp_min(1.0)).expand([batch, seq]);
    let kept = probs.lower(mean_prob).bool_and(valid);
    let weights = kept.float().cast(dtype);
    Side {
        scores: logps.mask_fill(invalid, 0.0),
        count: weights.clone().sum_dim(1).squeeze_dim(1),
        weights,
    }
}
