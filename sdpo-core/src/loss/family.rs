//! The DPO loss family: one function per TRL `loss_type`, on sequence log-probs.

use burn::tensor::{Tensor, activation::relu};

use super::bco::RunningMoments;
use super::config::{FDivergenceType, LossConfig, LossType};
use crate::error::{CoreError, expect_shape};
use crate::numerics::{capped_exp, discopop, log_sigmoid, sigmoid, softplus};
use crate::selection::SequenceLogps;

/// Per-example losses and implicit rewards of one loss type.
#[derive(Debug, Clone)]
pub struct DpoLossOutput {
    /// The loss of each example, `[batch]` (for `aot*` the batch is sorted, so entry `i` does
    /// not belong to example `i`).
    pub losses: Tensor<1>,
    /// `beta * (policy_chosen - ref_chosen)`, `[batch]`.
    pub chosen_rewards: Tensor<1>,
    /// `beta * (policy_rejected - ref_rejected)`, `[batch]`.
    pub rejected_rewards: Tensor<1>,
}

/// The label-smoothed sigmoid form shared by `sigmoid`, `sdpo` and `aot*`:
/// `-logsigmoid(beta x)(1 - eps) - logsigmoid(-beta x) eps`.
pub(crate) fn smoothed_sigmoid(x: Tensor<1>, beta: f64, eps: f64) -> Tensor<1> {
    let scaled = x * beta;
    let pos = log_sigmoid(scaled.clone()).neg() * (1.0 - eps);
    if eps == 0.0 {
        return pos;
    }
    pos - log_sigmoid(scaled.neg()) * eps
}

/// Computes one DPO-family loss exactly as TRL 0.28's `DPOTrainer.dpo_loss`.
///
/// `nll_loss` is needed by `sft` only (a `[1]` tensor, the mean NLL of the chosen completion
/// tokens). `bco` is the running state of `bco_pair`; it is updated by that loss type only.
/// `sdpo` computes the sigmoid loss on whatever sums it is given: the caller passes the sums
/// over the kept tokens (see [`PreferenceLoss`](crate::PreferenceLoss)).
///
/// This is the `trl_semantics = "0.28"` loss; [`trl1_loss`](crate::trl1_loss) is TRL 1.x's.
/// `sigmoid_norm` and `forward_kl` do not exist in TRL 0.28 and are refused.
///
/// Differences from TRL, both deliberate: the f-divergence applies whenever it is configured
/// (TRL 0.28 compares a string with an enum and silently never applies it); `exo_pair` with
/// `label_smoothing = 0` uses 1e-3 for itself only instead of writing it back to the config.
pub fn dpo_loss(
    loss_type: LossType,
    config: &LossConfig,
    logps: &SequenceLogps,
    nll_loss: Option<Tensor<1>>,
    bco: &mut RunningMoments,
) -> Result<DpoLossOutput, CoreError> {
    if loss_type == LossType::SigmoidNorm || config.f_divergence_type == FDivergenceType::ForwardKl
    {
        return Err(CoreError::InvalidConfig {
            field: if loss_type == LossType::SigmoidNorm {
                "loss_type"
            } else {
                "f_divergence_type"
            },
            value: if loss_type == LossType::SigmoidNorm {
                "sigmoid_norm".into()
            } else {
                "forward_kl".into()
            },
            reason: "TRL 1.x only; TRL 0.28's dpo_loss has no such option".into(),
        });
    }
    let [batch] = logps.policy_chosen.dims();
    expect_shape("policy_rejected", &logps.policy_rejected.dims(), &[batch])?;
    expect_shape("ref_chosen", &logps.ref_chosen.dims(), &[batch])?;
    expect_shape("ref_rejected", &logps.ref_rejected.dims(), &[batch])?;

    let beta = config.beta;
    let eps = config.label_smoothing;
    let (pc, pr) = (logps.policy_chosen.clone(), logps.policy_rejected.clone());
    let (rc, rr) = (logps.ref_chosen.clone(), logps.ref_rejected.clone());
    let chosen_logratios = pc.clone() - rc.clone();
    let rejected_logratios = pr.clone() - rr.clone();
    let chosen_rewards = chosen_logratios.clone().detach() * beta;
    let rejected_rewards = rejected_logratios.clone().detach() * beta;

    // CL / RL: the log-ratios against the reference, unless reference-free.
    let (cl, rl) = if config.reference_free {
        (pc.clone(), pr.clone())
    } else {
        (chosen_logratios.clone(), rejected_logratios.clone())
    };
    // The DPO "logits" L, under the configured f-divergence.
    let logits = || -> Tensor<1> {
        match config.f_divergence_type {
            FDivergenceType::AlphaDivergence => {
                let alpha = config.alpha_coef();
                (capped_exp(rl.clone() * -alpha) - capped_exp(cl.clone() * -alpha)) / alpha
            }
            kind => {
                let logratios = pc.clone() - pr.clone();
                let l = if config.reference_free {
                    logratios
                } else {
                    logratios - (rc.clone() - rr.clone())
                };
                if kind == FDivergenceType::JsDivergence {
                    l - (softplus(cl.clone()) - softplus(rl.clone()))
                } else {
                    l
                }
            }
        }
    };

    let losses = match loss_type {
        LossType::Sigmoid | LossType::Sdpo | LossType::SigmoidNorm => {
            smoothed_sigmoid(logits(), beta, eps)
        }
        LossType::Robust => {
            let scaled = logits() * beta;
            (log_sigmoid(scaled.clone()).neg() * (1.0 - eps) + log_sigmoid(scaled.neg()) * eps)
                / (1.0 - 2.0 * eps)
        }
        LossType::ExoPair => {
            let eps = if eps == 0.0 { 1e-3 } else { eps };
            let scaled = logits() * beta;
            sigmoid(scaled.clone()) * (log_sigmoid(scaled.clone()) - (1.0 - eps).ln())
                + sigmoid(scaled.clone().neg()) * (log_sigmoid(scaled.neg()) - eps.ln())
        }
        LossType::Hinge => relu(logits().mul_scalar(-beta) + 1.0),
        LossType::Ipo => (logits() - 1.0 / (2.0 * beta)).square(),
        LossType::BcoPair => {
            let rewards = Tensor::cat(vec![chosen_rewards.clone(), rejected_rewards.clone()], 0);
            let batch_mean =
                rewards
                    .mean()
                    .try_into_vec_as::<f64>()
                    .map_err(|e| CoreError::DeviceRead {
                        tensor: "bco_pair reward mean",
                        reason: format!("{e:?}"),
                    })?;
            bco.update(batch_mean.first().copied().unwrap_or(0.0));
            let shift = bco.mean;
            log_sigmoid(chosen_logratios * beta - shift).neg()
                - log_sigmoid((rejected_logratios * beta - shift).neg())
        }
        LossType::SppoHard => {
            (chosen_logratios - 0.5 / beta).square() + (rejected_logratios + 0.5 / beta).square()
        }
        LossType::NcaPair => {
            let c = chosen_logratios * beta;
            let r = rejected_logratios * beta;
            log_sigmoid(c.clone()).neg() - log_sigmoid(c.neg()) * 0.5 - log_sigmoid(r.neg()) * 0.5
        }
        LossType::Aot => {
            let delta = (pc - pr).sort(0) - (rc - rr).sort(0);
            smoothed_sigmoid(delta, beta, eps)
        }
        LossType::AotUnpaired => {
            let delta = chosen_logratios.sort(0) - rejected_logratios.sort(0);
            smoothed_sigmoid(delta, beta, eps)
        }
        LossType::ApoZero => sigmoid(cl * beta).neg() + sigmoid(rl * beta) + 1.0,
        LossType::ApoDown => sigmoid(cl.clone() * beta) - sigmoid((cl - rl) * beta) + 1.0,
        LossType::Discopop => discopop(((pc - pr) - (rc - rr)) * beta, config.discopop_tau),
        LossType::Sft => {
            let nll = nll_loss.ok_or(CoreError::MissingInput {
                loss_type: "sft",
                input: "nll_loss",
            })?;
            expect_shape("nll_loss", &nll.dims(), &[1])?;
            nll.expand([batch])
        }
        LossType::Confpo
        | LossType::Sepo
        | LossType::Tisdpo
        | LossType::CriticalToken
        | LossType::Tgdpo => return Err(super::not_a_family_term(loss_type)),
    };
    Ok(DpoLossOutput {
        losses,
        chosen_rewards,
        rejected_rewards,
    })
}
