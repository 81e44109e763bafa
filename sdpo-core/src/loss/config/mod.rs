//! The loss configuration, with TRL's `DPOConfig` field names: [`LossConfig`], its defaults and
//! its validation. The enumerated choices it holds (loss types, f-divergences, TRL semantics) are
//! in `types.rs`, re-exported here.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

mod types;

pub use types::{
    CtReductionName, FDivergenceType, LossType, LossTypes, TisdpoTransformName, TrlSemantics,
};

mod methods;

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
    /// ConfPO: SimPO's target margin `gamma` (`CPOConfig`'s name).
    pub simpo_gamma: f64,
    /// SePO: the fraction of candidate tokens selected (the code's `k_perc`).
    pub sepo_ratio: f64,
    /// SePO: the fraction on the rejected side; unset = `sepo_ratio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sepo_rejected_ratio: Option<f64>,
    /// SePO: a factor on the margin inside the sigmoid (the paper's coefficient; 1 in the code).
    pub sepo_scale: f64,
    /// TIS-DPO: how a sequence's scores become weights.
    pub tisdpo_transform: TisdpoTransformName,
    /// TIS-DPO `binary`: the percentage of tokens given weight 1.
    pub tisdpo_top_percent: f64,
    /// TIS-DPO `threshold`: the upper clip.
    pub tisdpo_upper: f64,
    /// TIS-DPO `threshold`: the lower clip.
    pub tisdpo_lower: f64,
    /// TIS-DPO `threshold_and_scale`: the lower clip.
    pub tisdpo_min_val: f64,
    /// TIS-DPO `threshold_and_scale`: the upper clip.
    pub tisdpo_max_val: f64,
    /// TIS-DPO `threshold_and_scale` and `rank_based`: the smallest weight.
    pub tisdpo_min_scale: f64,
    /// TIS-DPO `threshold_and_scale` and `rank_based`: the largest weight.
    pub tisdpo_max_scale: f64,
    /// TIS-DPO: decimals the live scores are rounded to (the authors' 2); unset: not rounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tisdpo_round_decimals: Option<u32>,
    /// Critical tokens: chosen tokens weigh 1 (the code's default); `false` weighs them by
    /// `p_CE`.
    pub ct_only_neg: bool,
    /// Critical tokens: `"position"` (the code's) or `"sequence"` (the paper's).
    pub ct_dpo_reduction: CtReductionName,
    /// Critical tokens, `position`: the grid size the summed terms are divided by; unset: the
    /// batch's own `B * T`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ct_position_denominator: Option<f64>,
    /// Critical tokens: the contrast `gamma` of `softmax((1 + gamma) logits+ - gamma logits-)`
    /// when `p_CE` is computed live from the two tuned models (the code's 1).
    pub ct_ce_gamma: f64,
    /// TGDPO: how strongly the token reward moves each token's beta.
    pub tgdpo_alpha: f64,
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
            simpo_gamma: 0.5,
            sepo_ratio: 0.3,
            sepo_rejected_ratio: None,
            sepo_scale: 1.0,
            tisdpo_transform: TisdpoTransformName::RankBased,
            tisdpo_top_percent: 100.0,
            tisdpo_upper: 1.0,
            tisdpo_lower: -1.0,
            tisdpo_min_val: -1.5,
            tisdpo_max_val: 1.5,
            tisdpo_min_scale: 0.7,
            tisdpo_max_scale: 1.3,
            tisdpo_round_decimals: Some(2),
            ct_only_neg: true,
            ct_dpo_reduction: CtReductionName::Position,
            ct_position_denominator: None,
            ct_ce_gamma: 1.0,
            tgdpo_alpha: 0.5,
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
        if self.loss_types().iter().any(|t| t.is_token_method()) {
            return self.token_method().map(|_| ());
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
