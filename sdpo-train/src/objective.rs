//! The objective of one batch: the configured loss from `sdpo-core` on the policy's and the
//! reference's per-token log-probs, TRL's metrics, and the finiteness checks the trainer reads
//! before it lets a step touch the weights.
//!
//! A training micro-batch is [`micro_step`]: the reference's log-probs first (a model forward
//! or a cache read, with nothing of the policy held), then the policy's forward and backward
//! through [`crate::logps::policy_gradients`] with [`objective_from_logps`] as the loss.
//! Evaluation is [`batch_objective`], the same without gradients.

use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use sdpo_core::{
    LossType, Metric, PreferenceLoss, TokenColumns, TokenLogps, chosen_nll_loss, masked_sum,
    preference_metrics,
};
use sdpo_data::PreferenceBatch;
use sdpo_models::CausalLm;

use crate::error::TrainError;
use crate::logps::{DeviceBatch, LogpsPath, SidedLogps, policy_gradients};
use crate::reference::{Reference, ReferenceLogps, Split};
use crate::scoring::ScoringModels;

/// The frozen side of the loss: the reference and the token-level method's scoring models.
#[derive(Debug, Clone, Copy)]
pub struct FrozenModels<'a> {
    /// The reference (model, cache or none).
    pub reference: &'a Reference,
    /// The scoring models (none for the DPO family and SDPO).
    pub scoring: &'a ScoringModels,
}

impl FrozenModels<'_> {
    /// The reference's log-probs of `batch` (collated from `host`, of `split`) and the
    /// method's per-token columns, computed before the policy's forward.
    pub fn inputs(
        &self,
        path: &LogpsPath,
        split: Split,
        host: &PreferenceBatch,
        batch: &DeviceBatch,
    ) -> Result<(ReferenceLogps, TokenColumns), TrainError> {
        let reference = self.reference.logps(path, split, host, batch)?;
        let columns = self.scoring.columns(path, split, host, batch, &reference)?;
        Ok((reference, columns))
    }
}

/// A batch's loss (with the policy's graph on an autodiff device), its metrics and its checks,
/// all still on the device.
#[derive(Debug)]
pub struct BatchObjective {
    /// The scalar loss, `[1]`.
    pub loss: Tensor<1>,
    /// TRL's metrics (`loss`, `rewards/*`, `logps/*`, `logits/*`, `entropy`,
    /// `mean_token_accuracy`, `sdpo/*`), detached.
    pub metrics: Vec<Metric>,
    /// Quantities that must be finite for the step to be applied: the sums of the policy's and
    /// the reference's log-probs over the scored tokens. A NaN anywhere in the scored tokens
    /// makes the sum NaN, so one number per side checks them all.
    pub checks: Vec<Metric>,
}

/// What one training micro-batch gives the optimizer step: metrics and checks as in
/// [`BatchObjective`], still on the device, and the policy's gradients of the weighted loss.
#[derive(Debug)]
pub struct MicroStep {
    /// TRL's metrics, detached, unweighted.
    pub metrics: Vec<Metric>,
    /// See [`BatchObjective::checks`].
    pub checks: Vec<Metric>,
    /// Gradients of `loss * loss_weight` with respect to the policy's trainable parameters.
    pub grads: GradientsParams,
}

/// Names of the [`BatchObjective::checks`].
pub const POLICY_LOGPS_CHECK: &str = "policy log-probs";
/// See [`POLICY_LOGPS_CHECK`].
pub const REFERENCE_LOGPS_CHECK: &str = "reference log-probs";

/// One training micro-batch of `policy` (on an autodiff device) on `batch` (collated from
/// `host`, train split): the reference's log-probs, then the policy's forward and backward on
/// `path` with the configured loss scaled by `loss_weight` (a gradient-accumulation weight,
/// times `fp16`'s loss scale), advancing `objective`'s `bco_pair` state.
pub fn micro_step(
    policy: &CausalLm,
    frozen: FrozenModels<'_>,
    path: &LogpsPath,
    host: &PreferenceBatch,
    batch: &DeviceBatch,
    objective: &mut PreferenceLoss,
    loss_weight: f64,
) -> Result<MicroStep, TrainError> {
    let (reference, columns) = frozen.inputs(path, Split::Train, host, batch)?;
    let wpo = objective.config().use_weighting;
    let ((metrics, checks), grads) = policy_gradients(policy, batch, path, wpo, |logps| {
        let out = objective_from_logps(logps, reference, &columns, objective)?;
        Ok((out.loss * loss_weight, (out.metrics, out.checks)))
    })?;
    Ok(MicroStep {
        metrics,
        checks,
        grads,
    })
}

/// The objective of one batch without a backward (evaluation): the reference's log-probs
/// (model on `path`, or the cache of `split`), the policy's on `path`, then `objective` (which
/// advances its `bco_pair` state). The loss keeps `model`'s graph when it is on an autodiff
/// device and `path` is [`crate::logps::MemoryMode::Whole`].
pub fn batch_objective(
    model: &CausalLm,
    frozen: FrozenModels<'_>,
    path: &LogpsPath,
    split: Split,
    host: &PreferenceBatch,
    batch: &DeviceBatch,
    objective: &mut PreferenceLoss,
) -> Result<BatchObjective, TrainError> {
    let (reference, columns) = frozen.inputs(path, split, host, batch)?;
    let policy = path.logps(model, batch, objective.config().use_weighting)?;
    objective_from_logps(policy, reference, &columns, objective)
}

/// The policy's statistics that are logged but not part of the loss.
struct PolicyStats {
    chosen_logits_mean: Tensor<1>,
    rejected_logits_mean: Tensor<1>,
    entropy: Tensor<1>,
    mean_token_accuracy: Tensor<1>,
}

/// `sdpo-core`'s loss inputs from the two models' per-token log-probs, and the policy's logged
/// statistics.
fn loss_inputs(policy: SidedLogps, reference: ReferenceLogps) -> (TokenLogps, PolicyStats) {
    let inputs = TokenLogps {
        policy_chosen_logps: policy.chosen,
        policy_rejected_logps: policy.rejected,
        ref_chosen_logps: reference.chosen,
        ref_rejected_logps: reference.rejected,
        chosen_loss_mask: policy.chosen_mask,
        rejected_loss_mask: policy.rejected_mask,
        policy_chosen_log_sum_sq_probs: policy.chosen_log_sum_sq_probs,
        policy_rejected_log_sum_sq_probs: policy.rejected_log_sum_sq_probs,
    };
    let stats = PolicyStats {
        chosen_logits_mean: policy.chosen_logits_mean,
        rejected_logits_mean: policy.rejected_logits_mean,
        entropy: policy.entropy,
        mean_token_accuracy: policy.mean_token_accuracy,
    };
    (inputs, stats)
}

/// `sdpo-core`'s loss inputs from the two models' per-token log-probs (for `sdpo inspect`).
pub fn token_logps(policy: SidedLogps, reference: ReferenceLogps) -> TokenLogps {
    loss_inputs(policy, reference).0
}

/// The loss, TRL's metrics and the checks from the policy's per-token log-probs (`policy`, with
/// WPO's `log(sum_v p_v^2)` when the loss uses weighting), the reference's, and the per-token
/// columns a token-level method reads.
pub fn objective_from_logps(
    policy: SidedLogps,
    reference: ReferenceLogps,
    columns: &TokenColumns,
    objective: &mut PreferenceLoss,
) -> Result<BatchObjective, TrainError> {
    let (inputs, stats) = loss_inputs(policy, reference);
    let scored_sum = |chosen: &Tensor<2>, rejected: &Tensor<2>| {
        let sum = masked_sum(chosen.clone().detach(), inputs.chosen_loss_mask.clone())
            + masked_sum(rejected.clone().detach(), inputs.rejected_loss_mask.clone());
        sum.sum().without_autodiff()
    };
    let checks = vec![
        (
            POLICY_LOGPS_CHECK,
            scored_sum(&inputs.policy_chosen_logps, &inputs.policy_rejected_logps),
        ),
        (
            REFERENCE_LOGPS_CHECK,
            scored_sum(&inputs.ref_chosen_logps, &inputs.ref_rejected_logps),
        ),
    ];
    let nll = objective
        .config()
        .loss_types()
        .contains(&LossType::Sft)
        .then(|| chosen_nll_loss(&inputs));
    let out = objective
        .forward_with_columns(&inputs, nll, columns)
        .map_err(TrainError::Compute)?;
    let mut metrics: Vec<Metric> = vec![("loss", out.loss.clone().detach().without_autodiff())];
    metrics.extend(
        preference_metrics(&out)
            .into_iter()
            .map(|(k, v)| (k, v.without_autodiff())),
    );
    metrics.push(("logits/chosen", stats.chosen_logits_mean.without_autodiff()));
    metrics.push((
        "logits/rejected",
        stats.rejected_logits_mean.without_autodiff(),
    ));
    metrics.push(("entropy", stats.entropy.without_autodiff()));
    metrics.push((
        "mean_token_accuracy",
        stats.mean_token_accuracy.without_autodiff(),
    ));
    Ok(BatchObjective {
        loss: out.loss,
        metrics,
        checks,
    })
}

/// Adds `weight * value` of each metric to the running sums (a NaN stays a NaN).
pub fn accumulate_metrics(sums: &mut Vec<Metric>, metrics: Vec<Metric>, weight: f64) {
    for (k, v) in metrics {
        match sums.iter_mut().find(|(name, _)| *name == k) {
            Some((_, sum)) => *sum = sum.clone() + v * weight,
            None => sums.push((k, v * weight)),
        }
    }
}
