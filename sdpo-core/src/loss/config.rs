//! The loss configuration, with TRL's `DPOConfig` field names.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// One preference loss. The serialised names are TRL's `loss_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// DPO: `-logsigmoid(beta * logits)`, with label smoothing (cDPO).
    Sigmoid,
    /// SLiC: `relu(1 - beta * logits)`.
    Hinge,
    /// IPO: `(logits - 1 / (2 beta))^2`.
    Ipo,
    /// EXO with pairwise preferences.
    ExoPair,
    /// NCA with pairwise preferences.
    NcaPair,
    /// Robust DPO (unbiased under label noise `label_smoothing`).
    Robust,
    /// BCO with pairs and a running mean of the rewards as the shift.
    BcoPair,
    /// SPPO with hard labels.
    SppoHard,
    /// AOT (paired): distributional alignment over the sorted batch.
    Aot,
    /// AOT (unpaired); `aot_pair` in older TRL and in the SDPO fork.
    #[serde(alias = "aot_pair")]
    AotUnpaired,
    /// APO-zero (anchored preference optimisation).
    ApoZero,
    /// APO-down.
    ApoDown,
    /// DiscoPOP (log-ratio modulated loss).
    Discopop,
    /// Negative log-likelihood of the chosen completion (for mixtures).
    Sft,
    /// Selective DPO: the sigmoid loss over the important tokens only.
    Sdpo,
}

impl LossType {
    /// The TRL name of this loss type.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sigmoid => "sigmoid",
            Self::Hinge => "hinge",
            Self::Ipo => "ipo",
            Self::ExoPair => "exo_pair",
            Self::NcaPair => "nca_pair",
            Self::Robust => "robust",
            Self::BcoPair => "bco_pair",
            Self::SppoHard => "sppo_hard",
            Self::Aot => "aot",
            Self::AotUnpaired => "aot_unpaired",
            Self::ApoZero => "apo_zero",
            Self::ApoDown => "apo_down",
            Self::Discopop => "discopop",
            Self::Sft => "sft",
            Self::Sdpo => "sdpo",
        }
    }

    /// Every loss type, in TRL's documentation order (SDPO last).
    pub const ALL: [LossType; 15] = [
        Self::Sigmoid,
        Self::Hinge,
        Self::Ipo,
        Self::ExoPair,
        Self::NcaPair,
        Self::Robust,
        Self::BcoPair,
        Self::SppoHard,
        Self::Aot,
        Self::AotUnpaired,
        Self::ApoZero,
        Self::ApoDown,
        Self::Discopop,
        Self::Sft,
        Self::Sdpo,
    ];
}

impl std::fmt::Display for LossType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LossType {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "aot_pair" {
            return Ok(Self::AotUnpaired);
        }
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| CoreError::InvalidConfig {
                field: "loss_type",
                value: s.to_string(),
                reason: format!(
                    "unknown loss type; known: {}",
                    Self::ALL.map(LossType::name).join(", ")
                ),
            })
    }
}

/// One loss type or a list of them (TRL 1.x accepts both for `loss_type`). An unknown name is
/// an error that lists the known ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, try_from = "RawLossTypes")]
pub enum LossTypes {
    /// A single loss type: `loss_type = "sdpo"`.
    One(LossType),
    /// Several, combined with `loss_weights`: `loss_type = ["sdpo", "sft"]`.
    Many(Vec<LossType>),
}

/// `loss_type` as written: a name or a list of names.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawLossTypes {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<RawLossTypes> for LossTypes {
    type Error = CoreError;

    fn try_from(raw: RawLossTypes) -> Result<Self, Self::Error> {
        Ok(match raw {
            RawLossTypes::One(name) => Self::One(name.parse()?),
            RawLossTypes::Many(names) => {
                Self::Many(names.iter().map(|n| n.parse()).collect::<Result<_, _>>()?)
            }
        })
    }
}

impl LossTypes {
    /// The loss types as a slice.
    pub fn as_slice(&self) -> &[LossType] {
        match self {
            Self::One(t) => std::slice::from_ref(t),
            Self::Many(ts) => ts,
        }
    }
}

impl Default for LossTypes {
    fn default() -> Self {
        Self::One(LossType::Sdpo)
    }
}

/// The f-divergence that regularises the policy towards the reference (TRL's
/// `f_divergence_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FDivergenceType {
    /// Reverse KL: the standard DPO logits.
    #[default]
    ReverseKl,
    /// Jensen-Shannon divergence.
    JsDivergence,
    /// Alpha divergence with `f_alpha_divergence_coef`.
    AlphaDivergence,
}

/// The loss configuration, with TRL's `DPOConfig` names and defaults (except `loss_type`, whose
/// default here is `sdpo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
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
    /// Ignore the reference model (the implicit reference is uniform).
    pub reference_free: bool,
    /// The f-divergence for the sigmoid-family logits.
    pub f_divergence_type: FDivergenceType,
    /// The alpha of `alpha_divergence`; must be non-zero.
    pub f_alpha_divergence_coef: f64,
    /// The temperature of `discopop`; must be > 0.
    pub discopop_tau: f64,
    /// SDPO: the per-sequence quantile of the token scores below which tokens are dropped, in
    /// `[0, 1]`. 0 keeps every token (plain DPO); 0.6 keeps about the top 40 %.
    pub sdpo_threshold: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            loss_type: LossTypes::default(),
            loss_weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            reference_free: false,
            f_divergence_type: FDivergenceType::ReverseKl,
            f_alpha_divergence_coef: 1.0,
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
        if !self.f_alpha_divergence_coef.is_finite()
            || (self.f_divergence_type == FDivergenceType::AlphaDivergence
                && self.f_alpha_divergence_coef == 0.0)
        {
            return Err(invalid(
                "f_alpha_divergence_coef",
                self.f_alpha_divergence_coef,
                "must be finite and, for alpha_divergence, non-zero",
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
        Ok(())
    }

    /// Whether token selection is needed (the config has an `sdpo` term).
    pub fn uses_selection(&self) -> bool {
        self.loss_types().contains(&LossType::Sdpo)
    }
}
