//! TRL 1.x's DPO loss family (`trl_semantics = "1.x"`), on sequence log-probs.
//!
//! TRL 1.x computes the loss inside `DPOTrainer._compute_loss`; this is that code's math for
//! one loss type, given the (LD-adjusted) sequence sums, the completion lengths and the WPO pair
//! weights. [`PreferenceLoss`](crate::PreferenceLoss) builds those inputs from per-token
//! log-probs.

use burn::tensor::{DType, Tensor, activation::relu};

use super::config::{FDivergenceType, LossConfig, LossType};
use super::family::{DpoLossOutput, smoothed_sigmoid};
use crate::error::{CoreError, expect_shape};
use crate::numerics::{discopop, log_sigmoid, sigmoid};
use crate::selection::SequenceLogps;

/// The inputs of one TRL 1.x loss term.
#[derive(Debug, Clone)]
pub struct Trl1Inputs {
    /// The four sequence log-probs, LD-adjusted when `ld_alpha` is set, `[batch]` each.
    pub sums: SequenceLogps,
    /// Completion length of each chosen sequence, at least 1 (`ipo`, `sigmoid_norm`), `[batch]`.
    pub chosen_lengths: Tensor<1>,
    /// Completion length of each rejected sequence, at least 1, `[batch]`.
    pub rejected_lengths: Tensor<1>,
    /// WPO's pair weights (constants), `[batch]`; `None` without `use_weighting`.
    pub pair_weights: Option<Tensor<1>>,
}

/// TRL 1.x's per-side score of a log-ratio under the configured f-divergence (`f'(t)` at
/// `t = exp(log-ratio)`).
///
/// - `reverse_kl`: `r`;
/// - `forward_kl`: `1 - exp(-r)`;
/// - `js_divergence`: `ln 2 + logsigmoid(r)`;
/// - `alpha_divergence` with `a = f_alpha_divergence_coef`: `(exp(min((a-1) r, c)) - 1) / (a-1)`
///   with `c = 80` (11 in float16), and `r` itself when `|a - 1| < 1e-6`.
pub fn f_divergence_scores(logratios: Tensor<1>, config: &LossConfig) -> Tensor<1> {
    match config.f_divergence_type {
        FDivergenceType::ReverseKl => logratios,
        FDivergenceType::ForwardKl => logratios.neg().exp().neg() + 1.0,
        FDivergenceType::JsDivergence => log_sigmoid(logratios) + std::f64::consts::LN_2,
        FDivergenceType::AlphaDivergence => {
            let a = config.alpha_coef();
            if (a - 1.0).abs() < 1e-6 {
                return logratios;
            }
            // TRL clamps so that exp stays finite after casting back; it has no float64 entry
            // (a KeyError there), so float64 uses float32's bound.
            let cap = if logratios.dtype() == DType::F16 {
                11.0
            } else {
                80.0
            };
            ((logratios * (a - 1.0)).clamp_max(cap).exp() - 1.0) * (1.0 / (a - 1.0))
        }
    }
}

/// Computes one loss type exactly as TRL 1.16's `DPOTrainer._compute_loss`, plus `sdpo`.
///
/// `nll_loss` (`[1]`) is needed by `sft` only. With `pair_weights`, every per-pair loss is
/// multiplied by its weight (WPO). Rewards are `beta * (policy - ref)` of the given sums.
///
/// Beyond TRL 1.16, where it fails: `hinge` with WPO gets its true gradient (TRL's backward
/// raises on an in-place multiply), `sft` with WPO is `nll * w` per pair (TRL's forward
/// raises), and `exo_pair` with `label_smoothing = 0` is an error (TRL's loss is infinite).
/// `sdpo` is the sigmoid loss with SDPO's cDPO label smoothing; with `label_smoothing = 0` it is
/// exactly `sigmoid`. `reference_free` takes the reference sums as 0.
pub fn trl1_loss(
    loss_type: LossType,
    config: &LossConfig,
    inputs: &Trl1Inputs,
    nll_loss: Option<Tensor<1>>,
) -> Result<DpoLossOutput, CoreError> {
    let sums = &inputs.sums;
    let [batch] = sums.policy_chosen.dims();
    expect_shape("policy_rejected", &sums.policy_rejected.dims(), &[batch])?;
    expect_shape("ref_chosen", &sums.ref_chosen.dims(), &[batch])?;
    expect_shape("ref_rejected", &sums.ref_rejected.dims(), &[batch])?;
    expect_shape("chosen_lengths", &inputs.chosen_lengths.dims(), &[batch])?;
    expect_shape(
        "rejected_lengths",
        &inputs.rejected_lengths.dims(),
        &[batch],
    )?;
    if let Some(w) = &inputs.pair_weights {
        expect_shape("pair_weights", &w.dims(), &[batch])?;
        if matches!(loss_type, LossType::Aot | LossType::AotUnpaired) {
            return Err(CoreError::InvalidConfig {
                field: "use_weighting",
                value: "true".into(),
                reason: format!("`{loss_type}` sorts the batch, so pair weights cannot apply"),
            });
        }
    }

    let beta = config.beta;
    let eps = config.label_smoothing;
    let (pc, pr) = (sums.policy_chosen.clone(), sums.policy_rejected.clone());
    let (rc, rr) = if config.reference_free {
        (sums.ref_chosen.zeros_like(), sums.ref_rejected.zeros_like())
    } else {
        (sums.ref_chosen.clone(), sums.ref_rejected.clone())
    };
    let chosen_logratios = pc.clone() - rc.clone();
    let rejected_logratios = pr.clone() - rr.clone();
    let chosen_rewards = chosen_logratios.clone().detach() * beta;
    let rejected_rewards = rejected_logratios.clone().detach() * beta;
    let chosen_scores = || f_divergence_scores(chosen_logratios.clone(), config);
    let rejected_scores = || f_divergence_scores(rejected_logratios.clone(), config);
    let delta = || chosen_scores() - rejected_scores();
    let normalised_delta = || {
        chosen_scores() / inputs.chosen_lengths.clone()
            - rejected_scores() / inputs.rejected_lengths.clone()
    };

    let losses = match loss_type {
        LossType::Sigmoid => log_sigmoid(delta() * beta).neg(),
        LossType::Sdpo => smoothed_sigmoid(delta(), beta, eps),
        LossType::SigmoidNorm => log_sigmoid(normalised_delta() * beta).neg(),
        LossType::Hinge => relu(delta().mul_scalar(-beta) + 1.0),
        LossType::Ipo => (normalised_delta() - 1.0 / (2.0 * beta)).square(),
        LossType::ExoPair => {
            if eps <= 0.0 {
                return Err(CoreError::InvalidConfig {
                    field: "label_smoothing",
                    value: eps.to_string(),
                    reason: "exo_pair needs label_smoothing > 0 (its epsilon)".into(),
                });
            }
            let scaled = delta() * beta;
            sigmoid(scaled.clone()) * (log_sigmoid(scaled.clone()) - (-eps).ln_1p())
                + sigmoid(scaled.clone().neg()) * (log_sigmoid(scaled.neg()) - eps.ln())
        }
        LossType::NcaPair => {
            let c = chosen_logratios * beta;
            let r = rejected_logratios * beta;
            log_sigmoid(c.clone()).neg() - log_sigmoid(c.neg()) * 0.5 - log_sigmoid(r.neg()) * 0.5
        }
        LossType::Robust => {
            let scaled = delta() * beta;
            (log_sigmoid(scaled.clone()).neg() * (1.0 - eps) + log_sigmoid(scaled.neg()) * eps)
                / (1.0 - 2.0 * eps)
        }
        // No running mean in TRL 1.x.
        LossType::BcoPair => {
            log_sigmoid(chosen_logratios * beta).neg()
                - log_sigmoid((rejected_logratios * beta).neg())
        }
        LossType::SppoHard => {
            (chosen_logratios - 0.5 / beta).square() + (rejected_logratios + 0.5 / beta).square()
        }
        LossType::Aot => {
            let delta = (pc - pr).sort(0) - (rc - rr).sort(0);
            smoothed_sigmoid(delta, beta, eps)
        }
        LossType::AotUnpaired => {
            let delta = chosen_logratios.sort(0) - rejected_logratios.sort(0);
            smoothed_sigmoid(delta, beta, eps)
        }
        LossType::ApoZero => {
            sigmoid(chosen_logratios * beta).neg() + sigmoid(rejected_logratios * beta) + 1.0
        }
        LossType::ApoDown => {
            sigmoid(chosen_logratios.clone() * beta)
                - sigmoid((chosen_logratios - rejected_logratios) * beta)
                + 1.0
        }
        LossType::Discopop => discopop(delta() * beta, config.discopop_tau),
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
    let losses = match &inputs.pair_weights {
        Some(w) => losses * w.clone().detach(),
        None => losses,
    };
    Ok(DpoLossOutput {
        losses,
        chosen_rewards,
        rejected_rewards,
    })
}
