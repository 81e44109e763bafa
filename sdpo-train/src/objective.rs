//! The objective of one batch: the policy's and the reference's per-token log-probs, the
//! configured loss from `sdpo-core`, TRL's metrics, and the finiteness checks the trainer reads
//! before it lets a step touch the weights.

use burn::tensor::Tensor;

use sdpo_core::{
    LossType, Metric, PreferenceLoss, TokenLogps, chosen_nll_loss, masked_sum, preference_metrics,
};
use sdpo_data::PreferenceBatch;
use sdpo_models::CausalLm;

use crate::batch::{DeviceBatch, SidedLogps};
use crate::engine::LogpsPath;
use crate::error::TrainError;
use crate::reference::{Reference, Split, reference_logps};

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

/// Names of the [`BatchObjective::checks`].
pub const POLICY_LOGPS_CHECK: &str = "policy log-probs";
/// See [`POLICY_LOGPS_CHECK`].
pub const REFERENCE_LOGPS_CHECK: &str = "reference log-probs";

/// The loss of one batch: the policy's per-token log-probs (one forward pass of `2B` rows on
/// `path`), the reference's (model on the same path, or cache), then `objective` (which
/// advances its `bco_pair` state). On [`LogpsPath::Whole`] the loss keeps the policy's graph
/// when `model` is on an autodiff device; nothing is read back. (A bounded training step is
/// [`crate::engine::policy_step`] with [`objective_from_logps`] as its loss.)
pub fn batch_objective(
    model: &CausalLm,
    reference: &Reference,
    path: &LogpsPath,
    split: Split,
    host: &PreferenceBatch,
    batch: &DeviceBatch,
    objective: &mut PreferenceLoss,
) -> Result<BatchObjective, TrainError> {
    let wpo = objective.config().use_weighting;
    let policy = path.logps(model, batch, wpo)?;
    objective_from_logps(policy, reference, path, split, host, batch, objective)
}

/// [`batch_objective`] from the policy's per-token log-probs (`policy`, with WPO's
/// `log(sum_v p_v^2)` when the loss uses weighting): the reference's log-probs on `path`, the
/// loss, TRL's metrics and the checks.
pub fn objective_from_logps(
    policy: SidedLogps,
    reference: &Reference,
    path: &LogpsPath,
    split: Split,
    host: &PreferenceBatch,
    batch: &DeviceBatch,
    objective: &mut PreferenceLoss,
) -> Result<BatchObjective, TrainError> {
    let device = batch.input_ids.device();
    let (ref_chosen, ref_rejected) = reference_logps(reference, path, split, host, batch, &device)?;
    let inputs = TokenLogps {
        policy_chosen_logps: policy.chosen,
        policy_rejected_logps: policy.rejected,
        ref_chosen_logps: ref_chosen,
        ref_rejected_logps: ref_rejected,
        chosen_loss_mask: policy.chosen_mask,
        rejected_loss_mask: policy.rejected_mask,
        policy_chosen_log_sum_sq_probs: policy.chosen_log_sum_sq_probs,
        policy_rejected_log_sum_sq_probs: policy.rejected_log_sum_sq_probs,
    };
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
        .forward(&inputs, nll)
        .map_err(TrainError::Compute)?;
    let mut metrics: Vec<Metric> = vec![("loss", out.loss.clone().detach().without_autodiff())];
    metrics.extend(
        preference_metrics(&out)
            .into_iter()
            .map(|(k, v)| (k, v.without_autodiff())),
    );
    metrics.push((
        "logits/chosen",
        policy.chosen_logits_mean.without_autodiff(),
    ));
    metrics.push((
        "logits/rejected",
        policy.rejected_logits_mean.without_autodiff(),
    ));
    metrics.push(("entropy", policy.entropy.without_autodiff()));
    metrics.push((
        "mean_token_accuracy",
        policy.mean_token_accuracy.without_autodiff(),
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
