//! The choices of the loss configuration, with TRL's names: [`LossType`] (and [`LossTypes`], one
//! or a list of them, as `loss_type` takes), [`FDivergenceType`] and [`TrlSemantics`].

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
    /// Length-normalised sigmoid (TRL 1.x only): `-logsigmoid(beta * (chosen_score / chosen_len
    /// - rejected_score / rejected_len))`.
    SigmoidNorm,
    /// ConfPO: SimPO over the policy's low-confidence tokens (a token-level method, alone).
    Confpo,
    /// SePO: an oracle's token rewards select the tokens of a reference-free contrastive loss.
    Sepo,
    /// TIS-DPO: DPO on importance-weighted token sums.
    Tisdpo,
    /// cDPO (critical tokens): rejected tokens weighted by `1 - p_CE` of two tuned models.
    CriticalToken,
    /// TGDPO: DPO with a per-token beta from a token reward.
    Tgdpo,
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
            Self::SigmoidNorm => "sigmoid_norm",
            Self::Confpo => "confpo",
            Self::Sepo => "sepo",
            Self::Tisdpo => "tisdpo",
            Self::CriticalToken => "critical_token",
            Self::Tgdpo => "tgdpo",
        }
    }

    /// The token-level methods with their own loss ([`crate::TokenMethod`]); each stands alone
    /// in `loss_type`.
    pub const TOKEN_METHODS: [LossType; 5] = [
        Self::Confpo,
        Self::Sepo,
        Self::Tisdpo,
        Self::CriticalToken,
        Self::Tgdpo,
    ];

    /// Whether this is one of [`Self::TOKEN_METHODS`].
    pub fn is_token_method(self) -> bool {
        Self::TOKEN_METHODS.contains(&self)
    }

    /// Every loss type, in TRL's documentation order (`sigmoid_norm`, new in TRL 1.x, after
    /// `sdpo`).
    pub const ALL: [LossType; 16] = [
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
        Self::SigmoidNorm,
    ];

    /// Whether TRL 1.x lets an f-divergence other than `reverse_kl` change this loss: the losses
    /// built on the chosen-minus-rejected score difference (and `sft`, which ignores it). `sdpo`
    /// is the sigmoid loss on the kept-token sums, so it belongs here too.
    pub fn accepts_f_divergence(self) -> bool {
        matches!(
            self,
            Self::Sigmoid
                | Self::SigmoidNorm
                | Self::Hinge
                | Self::Ipo
                | Self::ExoPair
                | Self::Robust
                | Self::Discopop
                | Self::Sft
                | Self::Sdpo
        )
    }

    /// Whether this loss reads `label_smoothing` under TRL 1.x semantics (`sdpo` keeps the cDPO
    /// smoothing of SDPO's reference implementation in both versions).
    pub fn reads_label_smoothing_v1(self) -> bool {
        matches!(
            self,
            Self::ExoPair | Self::Robust | Self::Aot | Self::AotUnpaired | Self::Sdpo
        )
    }
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
            .chain(Self::TOKEN_METHODS)
            .find(|t| t.name() == s)
            .ok_or_else(|| CoreError::InvalidConfig {
                field: "loss_type",
                value: s.to_string(),
                reason: format!(
                    "unknown loss type; known: {}, and the token-level methods {}",
                    Self::ALL.map(LossType::name).join(", "),
                    Self::TOKEN_METHODS.map(LossType::name).join(", ")
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
    /// Forward KL (TRL 1.x only): each log-ratio `r` becomes `1 - exp(-r)`.
    ForwardKl,
    /// Jensen-Shannon divergence.
    JsDivergence,
    /// Alpha divergence with `f_alpha_divergence_coef`.
    AlphaDivergence,
}

impl FDivergenceType {
    /// The TRL name of this f-divergence.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReverseKl => "reverse_kl",
            Self::ForwardKl => "forward_kl",
            Self::JsDivergence => "js_divergence",
            Self::AlphaDivergence => "alpha_divergence",
        }
    }
}

/// Which TRL version's loss semantics to reproduce (`trl_semantics`).
///
/// TRL 1.x rewrote the DPO loss; the same configuration gives different numbers in TRL 0.28 and
/// TRL 1.x (`ipo` and the f-divergences, `bco_pair`'s running mean, `sigmoid`'s label smoothing,
/// the default `f_alpha_divergence_coef`, ...). `docs/sdpo.md` lists every difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TrlSemantics {
    /// TRL 1.x (`_compute_loss` of TRL 1.16): the default, what new users run.
    #[default]
    #[serde(rename = "1.x")]
    V1,
    /// TRL 0.28 (`DPOTrainer.dpo_loss`, the last version with that method).
    #[serde(rename = "0.28")]
    V0_28,
}

impl TrlSemantics {
    /// The configuration value: `"1.x"` or `"0.28"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "1.x",
            Self::V0_28 => "0.28",
        }
    }
}

/// TIS-DPO's weight transform by name (`tisdpo_transform`); its parameters are the
/// `tisdpo_*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TisdpoTransformName {
    /// `w = u`.
    Origin,
    /// 1 for the top `tisdpo_top_percent` percent, else 0.
    Binary,
    /// `clip(u, tisdpo_lower, tisdpo_upper)`.
    Threshold,
    /// Clipped to `[tisdpo_min_val, tisdpo_max_val]`, mapped onto `[tisdpo_min_scale,
    /// tisdpo_max_scale]`.
    ThresholdAndScale,
    /// By rank onto `[tisdpo_min_scale, tisdpo_max_scale]` (the authors' README setting).
    #[default]
    RankBased,
}

/// How the critical-token loss reduces its per-token terms (`ct_dpo_reduction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtReductionName {
    /// The authors' code: one term per aligned completion position.
    #[default]
    Position,
    /// The paper: one term per pair, on the weighted sums.
    Sequence,
}
