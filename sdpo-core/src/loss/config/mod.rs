//! The loss configuration, with TRL's `DPOConfig` field names: [`LossConfig`], its defaults and
//! its validation. The enumerated choices it holds (loss types, f-divergences, TRL semantics) are
//! in `types.rs`, re-exported here.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

mod types;

pub use types::{FDivergenceType, LossType, LossTypes, TrlSemantics};

/// The loss configuration, with TRL's `DPOConfig` names and defaults (except `loss_type`, whose
/// default here is `sdpo`). `trl_semantics` picks TRL 1.x's loss (the default) or TRL 0.28's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Whose numbers to reproduce: `"1.x"` (default) or `"0.28"`.
    pub trl_semantics: TrlSemantics,
    /// The loss type, or a list of loss types combined with `loss_weights`.
    pub loss_type: LossTypes,
    /// One weight per loss type (default: 1.0 each). The total loss is
    /// `sum_k loss_weights[k] * mean(losses_k)`.
    pub loss_weights: Option<Vec<f64>>,
    /// Inverse temperature of the implicit reward; larger keeps the policy closer to the
    /// reference. Must be > 0.
    pub beta: f64,
    /// Probability that a preference label is flipped (cDPO / robust / EXO), in `[0, 0.5]`
    /// (`robust` needs < 0.5).
    pub label_smoothing: f64,
    /// Ignore the reference model (the implicit reference is uniform). TRL 0.28 drops the
    /// reference from the loss only; TRL 1.x has no such option, and under `"1.x"` every
    /// reference log-prob is taken as 0 (loss, rewards, SDPO scores).
    pub reference_free: bool,
    /// The f-divergence for the sigmoid-family logits.
    pub f_divergence_type: FDivergenceType,
    /// The coefficient of `alpha_divergence`. Unset = the version's default: 0.5 under `"1.x"`,
    /// 1.0 under `"0.28"`. The two versions read it differently: TRL 1.x's `a` is TRL 0.28's
    /// `1 - alpha` (0.5 means the same in both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f_alpha_divergence_coef: Option<f64>,
    /// LD-DPO (TRL 1.x): the part of the longer completion past the shorter one's length is
    /// weighted by this, in `[0, 1]`; unset = off (1.0 is the same as off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ld_alpha: Option<f64>,
    /// WPO (TRL 1.x): weight each pair's loss by the policy's length-normalised,
    /// alignment-corrected probability of both completions (a constant for the gradient).
    /// Needs the policy's `log(sum_v p_v^2)` per position
    /// ([`log_sum_sq_probs`](crate::log_sum_sq_probs)).
    pub use_weighting: bool,
    /// The temperature of `discopop`; must be > 0.
    pub discopop_tau: f64,
    /// SDPO: the per-sequence quantile of the token scores below which tokens are dropped, in
    /// `[0, 1]`. 0 keeps every token (plain DPO); 0.6 keeps about the top 40 %.
    pub sdpo_threshold: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            trl_semantics: TrlSemantics::V1,
            loss_type: LossTypes::default(),
            loss_weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            reference_free: false,
            f_divergence_type: FDivergenceType::ReverseKl,
            f_alpha_divergence_coef: None,
            ld_alpha: None,
            use_weighting: false,
            discopop_tau: 0.05,
            sdpo_threshold: 0.6,
        }
    }
}

fn invalid(field: &'static str, value: impl ToString, reason: &str) -> CoreError {
    CoreError::InvalidConfig {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl LossConfig {
    /// The loss types in order.
    pub fn loss_types(&self) -> &[LossType] {
        self.loss_type.as_slice()
    }

    /// The weight of each loss type (1.0 each when `loss_weights` is unset).
    pub fn weights(&self) -> Vec<f64> {
        match &self.loss_weights {
            Some(w) => w.clone(),
            None => vec![1.0; self.loss_types().len()],
        }
    }

    /// Checks every value; the error names the field and says what it must satisfy.
    pub fn validate(&self) -> Result<(), CoreError> {
        let types = self.loss_types();
        if types.is_empty() {
            return Err(invalid("loss_type", "[]", "give at least one loss type"));
        }
        if let Some(weights) = &self.loss_weights {
            if weights.len() != types.len() {
                return Err(invalid(
                    "loss_weights",
                    format!("{weights:?}"),
                    &format!(
                        "needs one weight per loss type ({} loss types)",
                        types.len()
                    ),
                ));
            }
            if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
                return Err(invalid("loss_weights", w, "weights must be finite"));
            }
        }
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(invalid("beta", self.beta, "must be a finite number > 0"));
        }
        if !(0.0..=0.5).contains(&self.label_smoothing) {
            return Err(invalid(
                "label_smoothing",
                self.label_smoothing,
                "must lie in [0, 0.5]",
            ));
        }
        if types.contains(&LossType::Robust) && self.label_smoothing >= 0.5 {
            return Err(invalid(
                "label_smoothing",
                self.label_smoothing,
                "the robust loss divides by 1 - 2 * label_smoothing, so it must be < 0.5",
            ));
        }
        let alpha = self.alpha_coef();
        if !alpha.is_finite() {
            return Err(invalid(
                "f_alpha_divergence_coef",
                alpha,
                "must be a finite number",
            ));
        }
        if let Some(ld_alpha) = self.ld_alpha
            && !(0.0..=1.0).contains(&ld_alpha)
        {
            return Err(invalid(
                "ld_alpha",
                ld_alpha,
                "must lie in [0, 1] (1 weights the tail like the rest; 0 drops it)",
            ));
        }
        if !(self.discopop_tau.is_finite() && self.discopop_tau > 0.0) {
            return Err(invalid(
                "discopop_tau",
                self.discopop_tau,
                "must be a finite number > 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.sdpo_threshold) {
            return Err(invalid(
                "sdpo_threshold",
                self.sdpo_threshold,
                "must lie in [0, 1] (it is a quantile)",
            ));
        }
        match self.trl_semantics {
            TrlSemantics::V1 => self.validate_v1(),
            TrlSemantics::V0_28 => self.validate_v0_28(),
        }
    }

    /// The combinations TRL 1.x refuses, and the ones where TRL 1.16 would silently do nothing
    /// or produce an infinite loss.
    fn validate_v1(&self) -> Result<(), CoreError> {
        let types = self.loss_types();
        if self.f_divergence_type != FDivergenceType::ReverseKl
            && let Some(t) = types.iter().find(|t| !t.accepts_f_divergence())
        {
            return Err(invalid(
                "f_divergence_type",
                self.f_divergence_type.name(),
                &format!(
                    "TRL 1.x applies an f-divergence only to sigmoid, sigmoid_norm, hinge, ipo, \
                     exo_pair, robust, discopop, sft (and sdpo here); `{t}` has no f-divergence \
                     form, use reverse_kl with it"
                ),
            ));
        }
        if self.use_weighting
            && let Some(t) = types
                .iter()
                .find(|t| matches!(t, LossType::Aot | LossType::AotUnpaired))
        {
            return Err(invalid(
                "use_weighting",
                true,
                &format!(
                    "WPO weights pairs, and `{t}` sorts the batch so its losses no longer \
                     belong to pairs (TRL 1.x refuses this too)"
                ),
            ));
        }
        if types.contains(&LossType::ExoPair) && self.label_smoothing == 0.0 {
            return Err(invalid(
                "label_smoothing",
                self.label_smoothing,
                "exo_pair under TRL 1.x takes label_smoothing as its epsilon and must have it > 0 \
                 (0 makes the loss infinite; the EXO paper recommends 1e-3)",
            ));
        }
        if self.label_smoothing > 0.0 && !types.iter().any(|t| t.reads_label_smoothing_v1()) {
            return Err(invalid(
                "label_smoothing",
                self.label_smoothing,
                "under TRL 1.x only exo_pair, robust, aot, aot_unpaired and sdpo use label \
                 smoothing (TRL 1.x's sigmoid has no cDPO smoothing and would ignore it); use \
                 robust, or trl_semantics = \"0.28\" for cDPO",
            ));
        }
        Ok(())
    }

    /// TRL 0.28 has neither the 1.x losses and divergences nor (usable) LD-DPO and WPO.
    fn validate_v0_28(&self) -> Result<(), CoreError> {
        let needs_v1 = |field: &'static str, value: String, what: &str| {
            invalid(
                field,
                value,
                &format!("{what} is TRL 1.x only; set trl_semantics = \"1.x\""),
            )
        };
        if self.loss_types().contains(&LossType::SigmoidNorm) {
            return Err(needs_v1(
                "loss_type",
                "sigmoid_norm".into(),
                "the sigmoid_norm loss",
            ));
        }
        if self.f_divergence_type == FDivergenceType::ForwardKl {
            return Err(needs_v1(
                "f_divergence_type",
                "forward_kl".into(),
                "the forward_kl divergence",
            ));
        }
        if let Some(ld_alpha) = self.ld_alpha {
            return Err(needs_v1(
                "ld_alpha",
                ld_alpha.to_string(),
                "LD-DPO as sdpo-rs computes it (TRL 0.28 down-weighted the policy only, counting \
                 from the sequence start)",
            ));
        }
        if self.use_weighting {
            return Err(needs_v1(
                "use_weighting",
                "true".into(),
                "WPO as sdpo-rs computes it (TRL 0.28's weights were shifted by one position)",
            ));
        }
        if self.f_divergence_type == FDivergenceType::AlphaDivergence && self.alpha_coef() == 0.0 {
            return Err(invalid(
                "f_alpha_divergence_coef",
                0.0,
                "TRL 0.28's alpha_divergence divides by it, so it must be non-zero",
            ));
        }
        Ok(())
    }

    /// The `alpha_divergence` coefficient in effect: the configured one, or the version's
    /// default (0.5 under TRL 1.x, 1.0 under TRL 0.28).
    pub fn alpha_coef(&self) -> f64 {
        self.f_alpha_divergence_coef
            .unwrap_or(match self.trl_semantics {
                TrlSemantics::V1 => 0.5,
                TrlSemantics::V0_28 => 1.0,
            })
    }

    /// Whether token selection is needed (the config has an `sdpo` term).
    pub fn uses_selection(&self) -> bool {
        self.loss_types().contains(&LossType::Sdpo)
    }
}
