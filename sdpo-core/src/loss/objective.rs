//! The training objective: token selection (when `sdpo` is configured), the configured loss
//! types, their weighted sum, and the numbers the metrics are made of.

use burn::tensor::Tensor;

use super::bco::RunningMoments;
use super::config::{LossConfig, LossType};
use super::family::dpo_loss;
use crate::error::CoreError;
use crate::selection::{SequenceLogps, TokenLogps, TokenSelection, mask_unimportant_tokens};

/// Everything one evaluation of the objective produced.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The scalar to minimise, `[1]`: `sum_k weight_k * mean(losses_k)`.
    pub loss: Tensor<1>,
    /// Each configured loss type with its per-example losses, `[batch]`.
    pub losses: Vec<(LossType, Tensor<1>)>,
    /// Implicit chosen rewards `beta * (policy - ref)` of the first loss type's sums, `[batch]`
    /// (for `sdpo` these are the sums over the kept tokens, as in the SDPO paper's code).
    pub chosen_rewards: Tensor<1>,
    /// Implicit rejected rewards, like `chosen_rewards`, `[batch]`.
    pub rejected_rewards: Tensor<1>,
    /// Sequence log-probs over all completion tokens (TRL's `logps/chosen`, `logps/rejected`).
    pub full_sums: SequenceLogps,
    /// Token selection, when the configuration has an `sdpo` term.
    pub selection: Option<TokenSelection>,
    /// Number of valid chosen and rejected tokens, `[1]` each (for the kept fractions).
    pub valid_tokens: (Tensor<1>, Tensor<1>),
}

/// The configured preference loss with its state (the `bco_pair` running mean).
#[derive(Debug, Clone)]
pub struct PreferenceLoss {
    config: LossConfig,
    bco: RunningMoments,
}

impl PreferenceLoss {
    /// Validates the configuration and starts with fresh state.
    pub fn new(config: LossConfig) -> Result<Self, CoreError> {
        config.validate()?;
        Ok(Self {
            config,
            bco: RunningMoments::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LossConfig {
        &self.config
    }

    /// The `bco_pair` running state (saved with checkpoints).
    pub fn running_moments(&self) -> RunningMoments {
        self.bco
    }

    /// Restores the `bco_pair` running state (when resuming).
    pub fn set_running_moments(&mut self, state: RunningMoments) {
        self.bco = state;
    }

    /// Evaluates the objective on one batch of per-token log-probs.
    ///
    /// `nll_loss` (`[1]`) is needed only when the configuration has an `sft` term; see
    /// [`chosen_nll_loss`].
    pub fn forward(
        &mut self,
        inputs: &TokenLogps,
        nll_loss: Option<Tensor<1>>,
    ) -> Result<LossOutput, CoreError> {
        inputs.check_shapes()?;
        let full_sums = inputs.full_sums();
        let selection = if self.config.uses_selection() {
            Some(mask_unimportant_tokens(inputs, self.config.sdpo_threshold)?)
        } else {
            None
        };
        let weights = self.config.weights();
        let mut total: Option<Tensor<1>> = None;
        let mut losses = Vec::new();
        let mut rewards = None;
        for (&loss_type, &weight) in self.config.loss_types().iter().zip(&weights) {
            let sums = match (&selection, loss_type) {
                (Some(sel), LossType::Sdpo) => &sel.sums,
                _ => &full_sums,
            };
            let out = dpo_loss(
                loss_type,
                &self.config,
                sums,
                nll_loss.clone(),
                &mut self.bco,
            )?;
            let term = out.losses.clone().mean() * weight;
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
            rewards.get_or_insert((out.chosen_rewards, out.rejected_rewards));
            losses.push((loss_type, out.losses));
        }
        let (Some(loss), Some((chosen_rewards, rejected_rewards))) = (total, rewards) else {
            return Err(CoreError::InvalidConfig {
                field: "loss_type",
                value: "[]".into(),
                reason: "give at least one loss type".into(),
            });
        };
        let valid_tokens = (
            inputs.chosen_loss_mask.clone().int().sum().float(),
            inputs.rejected_loss_mask.clone().int().sum().float(),
        );
        Ok(LossOutput {
            loss,
            losses,
            chosen_rewards,
            rejected_rewards,
            full_sums,
            selection,
            valid_tokens,
        })
    }
}

/// Mean negative log-likelihood of the chosen completion tokens, `[1]` (the input of `sft`).
///
/// # Shapes
/// - `policy_chosen_logps`, `chosen_loss_mask`: `[batch, seq]`
pub fn chosen_nll_loss(inputs: &TokenLogps) -> Tensor<1> {
    let mask = inputs.chosen_loss_mask.clone();
    let count = mask.clone().int().sum().float().clamp_min(1.0);
    let total = inputs
        .policy_chosen_logps
        .clone()
        .mask_fill(mask.bool_not(), 0.0)
        .sum();
    total.neg() / count.cast(inputs.policy_chosen_logps.dtype())
}
