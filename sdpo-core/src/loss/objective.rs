//! The training objective: token selection (when `sdpo` is configured), the configured loss
//! types under the configured TRL version's semantics, their weighted sum, and the numbers the
//! metrics are made of.

use burn::tensor::{Bool, Tensor};

use super::bco::RunningMoments;
use super::config::{LossConfig, LossType, TrlSemantics};
use super::family::{DpoLossOutput, dpo_loss};
use super::trl1::{Trl1Inputs, trl1_loss};
use super::weighting::{sequence_sums, token_counts, wpo_pair_weights};
use crate::error::CoreError;
use crate::selection::{SequenceLogps, TokenLogps, TokenSelection, mask_unimportant_tokens};
use crate::token_methods::{TokenColumns, TokenMethod, TokenWeights};

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
    /// Sequence log-probs over all completion tokens (TRL's `logps/chosen`, `logps/rejected`);
    /// LD-adjusted under TRL 1.x semantics with `ld_alpha`, as TRL 1.x reports them.
    pub full_sums: SequenceLogps,
    /// Token selection, when the configuration has an `sdpo` term (its `sums` are the plain
    /// kept-token sums; the `sdpo` loss and its rewards use them LD-adjusted when `ld_alpha` is
    /// set under TRL 1.x semantics).
    pub selection: Option<TokenSelection>,
    /// The token weights, when the configuration is a token-level method (`confpo`, `sepo`,
    /// `tisdpo`, `critical_token`, `tgdpo`).
    pub token_weights: Option<TokenWeights>,
    /// Number of valid chosen and rejected tokens, `[1]` each (for the kept fractions).
    pub valid_tokens: (Tensor<1>, Tensor<1>),
}

/// The configured preference loss with its state (the `bco_pair` running mean of TRL 0.28).
#[derive(Debug, Clone)]
pub struct PreferenceLoss {
    config: LossConfig,
    bco: RunningMoments,
    method: Option<TokenMethod>,
}

impl PreferenceLoss {
    /// Validates the configuration and starts with fresh state.
    pub fn new(config: LossConfig) -> Result<Self, CoreError> {
        config.validate()?;
        let method = config.token_method()?;
        Ok(Self {
            config,
            bco: RunningMoments::default(),
            method,
        })
    }

    /// The configured token-level method, if the configuration is one.
    pub fn token_method(&self) -> Option<&TokenMethod> {
        self.method.as_ref()
    }

    /// The per-token columns the configured method reads besides the policy's and the
    /// reference's log-probs (none for the DPO family and SDPO).
    pub fn columns(&self) -> Vec<&'static str> {
        self.method
            .as_ref()
            .map_or_else(Vec::new, |m| m.scorer().columns())
    }

    /// Whether the loss reads the reference's log-probs: `false` with `reference_free` and for
    /// the reference-free token-level methods (ConfPO, SePO), so a trainer can skip the
    /// reference forward.
    pub fn uses_reference(&self) -> bool {
        match &self.method {
            Some(method) => method.scorer().uses_reference(),
            None => !self.config.reference_free,
        }
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
    /// [`chosen_nll_loss`]. With `use_weighting`, `inputs` must carry the policy's
    /// `policy_*_log_sum_sq_probs` (else [`CoreError::MissingOptionInput`]).
    ///
    /// Under TRL 1.x semantics the sums are LD-adjusted when `ld_alpha` is set and each pair's
    /// loss is WPO-weighted with `use_weighting`; for `sdpo` the kept masks take the place of
    /// the completion masks in both (see `docs/sdpo.md`).
    pub fn forward(
        &mut self,
        inputs: &TokenLogps,
        nll_loss: Option<Tensor<1>>,
    ) -> Result<LossOutput, CoreError> {
        self.forward_with_columns(inputs, nll_loss, &TokenColumns::new())
    }

    /// [`Self::forward`] with the per-token columns a token-level method reads
    /// ([`Self::columns`]); the DPO family ignores `columns`.
    ///
    /// # Errors
    /// As [`Self::forward`], and a column the method needs missing or misshapen.
    pub fn forward_with_columns(
        &mut self,
        inputs: &TokenLogps,
        nll_loss: Option<Tensor<1>>,
        columns: &TokenColumns,
    ) -> Result<LossOutput, CoreError> {
        inputs.check_shapes()?;
        if let Some(method) = &self.method {
            return method_output(inputs, method, columns);
        }
        match self.config.trl_semantics {
            TrlSemantics::V0_28 => self.forward_v0_28(inputs, nll_loss),
            TrlSemantics::V1 => self.forward_v1(inputs, nll_loss),
        }
    }

    /// TRL 0.28: `dpo_loss` on the full (or, for `sdpo`, kept) sums.
    fn forward_v0_28(
        &mut self,
        inputs: &TokenLogps,
        nll_loss: Option<Tensor<1>>,
    ) -> Result<LossOutput, CoreError> {
        let full_sums = inputs.full_sums();
        let selection = if self.config.uses_selection() {
            Some(mask_unimportant_tokens(inputs, self.config.sdpo_threshold)?)
        } else {
            None
        };
        let mut terms = Vec::new();
        for &loss_type in self.config.loss_types() {
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
            terms.push((loss_type, out));
        }
        self.combine(inputs, terms, full_sums, selection)
    }

    /// TRL 1.x: LD-DPO sums and WPO weights over the completion masks (over the kept masks for
    /// `sdpo`), then `trl1_loss` per loss type.
    fn forward_v1(
        &mut self,
        inputs: &TokenLogps,
        nll_loss: Option<Tensor<1>>,
    ) -> Result<LossOutput, CoreError> {
        // A uniform reference: every reference log-prob is 0 (selection scores included).
        let zeroed;
        let inputs = if self.config.reference_free {
            zeroed = TokenLogps {
                ref_chosen_logps: inputs.ref_chosen_logps.zeros_like(),
                ref_rejected_logps: inputs.ref_rejected_logps.zeros_like(),
                ..inputs.clone()
            };
            &zeroed
        } else {
            inputs
        };
        let full = self.trl1_inputs(
            inputs,
            inputs.chosen_loss_mask.clone(),
            inputs.rejected_loss_mask.clone(),
        )?;
        let selection = if self.config.uses_selection() {
            Some(mask_unimportant_tokens(inputs, self.config.sdpo_threshold)?)
        } else {
            None
        };
        let kept = match &selection {
            Some(sel) => Some(self.trl1_inputs(
                inputs,
                sel.chosen_kept.clone(),
                sel.rejected_kept.clone(),
            )?),
            None => None,
        };
        let mut terms = Vec::new();
        for &loss_type in self.config.loss_types() {
            let term_inputs = match (&kept, loss_type) {
                (Some(kept), LossType::Sdpo) => kept,
                _ => &full,
            };
            let out = trl1_loss(loss_type, &self.config, term_inputs, nll_loss.clone())?;
            terms.push((loss_type, out));
        }
        let full_sums = full.sums;
        self.combine(inputs, terms, full_sums, selection)
    }

    /// The inputs of the TRL 1.x loss over one pair of token masks.
    fn trl1_inputs(
        &self,
        inputs: &TokenLogps,
        chosen_mask: Tensor<2, Bool>,
        rejected_mask: Tensor<2, Bool>,
    ) -> Result<Trl1Inputs, CoreError> {
        let dtype = inputs.policy_chosen_logps.dtype();
        let pair_weights = if self.config.use_weighting {
            Some(wpo_pair_weights(
                inputs,
                chosen_mask.clone(),
                rejected_mask.clone(),
            )?)
        } else {
            None
        };
        Ok(Trl1Inputs {
            chosen_lengths: token_counts(chosen_mask.clone(), dtype),
            rejected_lengths: token_counts(rejected_mask.clone(), dtype),
            sums: sequence_sums(inputs, chosen_mask, rejected_mask, self.config.ld_alpha)?,
            pair_weights,
        })
    }

    /// `sum_k weight_k * mean(losses_k)`, with the first term's rewards.
    fn combine(
        &self,
        inputs: &TokenLogps,
        terms: Vec<(LossType, DpoLossOutput)>,
        full_sums: SequenceLogps,
        selection: Option<TokenSelection>,
    ) -> Result<LossOutput, CoreError> {
        let weights = self.config.weights();
        let mut total: Option<Tensor<1>> = None;
        let mut losses = Vec::new();
        let mut rewards = None;
        for ((loss_type, out), weight) in terms.into_iter().zip(weights) {
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
        let valid_tokens = valid_token_counts(inputs);
        Ok(LossOutput {
            loss,
            losses,
            chosen_rewards,
            rejected_rewards,
            full_sums,
            selection,
            token_weights: None,
            valid_tokens,
        })
    }
}

/// A token-level method's loss as the objective's output.
fn method_output(
    inputs: &TokenLogps,
    method: &TokenMethod,
    columns: &TokenColumns,
) -> Result<LossOutput, CoreError> {
    let out = method.forward(inputs, columns)?;
    let loss_type = method.loss_type();
    Ok(LossOutput {
        loss: out.loss,
        losses: vec![(loss_type, out.losses)],
        chosen_rewards: out.chosen_rewards,
        rejected_rewards: out.rejected_rewards,
        full_sums: inputs.full_sums(),
        selection: None,
        token_weights: Some(out.weights),
        valid_tokens: valid_token_counts(inputs),
    })
}

/// Number of valid chosen and rejected tokens, `[1]` each.
fn valid_token_counts(inputs: &TokenLogps) -> (Tensor<1>, Tensor<1>) {
    (
        inputs.chosen_loss_mask.clone().int().sum().float(),
        inputs.rejected_loss_mask.clone().int().sum().float(),
    )
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
