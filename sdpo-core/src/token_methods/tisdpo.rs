//! TIS-DPO (arXiv 2410.04350): token importance weights from a contrastive pair of models.
//!
//! As the authors' code computes it (`exlaw/TIS-DPO`): two frozen models, `pi+` (DPO on the
//! data) and `pi-` (the same with chosen and rejected swapped), score every completion token
//! but the last (EOS): `raw_t = round(lm-_t - lm+_t, 2)` (Python's `round`, 2 decimals). That
//! is the dataset column the authors store (`chosen_weight`, `rejected_weight`). At load time
//! the chosen values are negated (`u = -raw` on chosen, `u = raw` on rejected: a larger `u` is
//! a token more typical of its side) and transformed per sequence ([`TisdpoTransform`]); EOS
//! gets weight 0. The loss is the sigmoid DPO loss on the weighted sums of the per-token
//! log-ratios, `-logsigmoid(beta * (S_c - S_r))`, `S_s = sum_t w_t (lp_t - lr_t)`.

use std::cmp::Ordering::Equal;

use super::{
    TokenColumns, TokenMethodOutput, TokenScorer, TokenWeights, WeightKind, check_finite,
    device_rows, host_mask, host_rows,
};
use crate::error::CoreError;
use crate::numerics::log_sigmoid;
use crate::selection::TokenLogps;

/// The method's `loss_type`.
pub const NAME: &str = "tisdpo";
/// The precomputed raw scores, `round(lm- - lm+, 2)` at every completion token but the last
/// (the authors' `chosen_weight` / `rejected_weight`, before negation and transform).
pub const RAW_WEIGHT_COLUMN: &str = "tisdpo_raw_weight";
/// The forward-DPO model's (`pi+`) per-token log-probs, for scoring live.
pub const POSITIVE_COLUMN: &str = "tisdpo_positive_logps";
/// The reverse-DPO model's (`pi-`) per-token log-probs, for scoring live.
pub const NEGATIVE_COLUMN: &str = "tisdpo_negative_logps";

/// How a sequence's scores `u` become weights (the code's `transform.method`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TisdpoTransform {
    /// `w = u`.
    Origin,
    /// 1 for the tokens whose value is among the top `top_percent` percent, `K = floor(n *
    /// top_percent / 100)`: `w_t = 1` when `#{j : u_j >= u_t} <= K` (a tie group across the
    /// cut gets 0 as a whole, as the code's value map does).
    Binary {
        /// The percentage kept (100: all ones).
        top_percent: f64,
    },
    /// `w = clip(u, lower, upper)`.
    Threshold {
        /// The upper clip.
        upper: f64,
        /// The lower clip.
        lower: f64,
    },
    /// `min_scale + (clip(u, min_val, max_val) - min_val) * (max_scale - min_scale) /
    /// (max_val - min_val)`.
    ThresholdAndScale {
        /// The lower clip.
        min_val: f64,
        /// The upper clip.
        max_val: f64,
        /// The weight at `min_val`.
        min_scale: f64,
        /// The weight at `max_val`.
        max_scale: f64,
    },
    /// `min_scale + rank_t / (n - 1) * (max_scale - min_scale)`, ranks of a stable ascending
    /// sort (ties: the earlier token ranks lower); 1 when `n = 1`. The README's setting.
    RankBased {
        /// The weight of the smallest `u`.
        min_scale: f64,
        /// The weight of the largest `u`.
        max_scale: f64,
    },
}

impl TisdpoTransform {
    /// The code's name of the transform.
    pub fn name(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Binary { .. } => "binary",
            Self::Threshold { .. } => "threshold",
            Self::ThresholdAndScale { .. } => "threshold_and_scale",
            Self::RankBased { .. } => "rank_based",
        }
    }

    /// The weights of one sequence's scores.
    pub fn apply(self, u: &[f64]) -> Vec<f64> {
        let n = u.len();
        match self {
            Self::Origin => u.to_vec(),
            Self::Binary { top_percent } => {
                let keep = (n as f64 * top_percent / 100.0).floor();
                u.iter()
                    .map(|&value| {
                        let at_least = u.iter().filter(|&&other| other >= value).count();
                        if at_least as f64 <= keep { 1.0 } else { 0.0 }
                    })
                    .collect()
            }
            Self::Threshold { upper, lower } => {
                u.iter().map(|&v| v.max(lower).min(upper)).collect()
            }
            Self::ThresholdAndScale {
                min_val,
                max_val,
                min_scale,
                max_scale,
            } => u
                .iter()
                .map(|&v| {
                    min_scale
                        + (v.max(min_val).min(max_val) - min_val) * (max_scale - min_scale)
                            / (max_val - min_val)
                })
                .collect(),
            Self::RankBased {
                min_scale,
                max_scale,
            } => {
                if n == 1 {
                    return vec![1.0];
                }
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| u[a].partial_cmp(&u[b]).unwrap_or(Equal));
                let mut weights = vec![0.0; n];
                for (rank, &t) in order.iter().enumerate() {
                    weights[t] = min_scale + rank as f64 / (n - 1) as f64 * (max_scale - min_scale);
                }
                weights
            }
        }
    }

    fn validate(self) -> Result<(), CoreError> {
        let values: Vec<(&'static str, f64)> = match self {
            Self::Origin => Vec::new(),
            Self::Binary { top_percent } => vec![("tisdpo_top_percent", top_percent)],
            Self::Threshold { upper, lower } => {
                vec![("tisdpo_upper", upper), ("tisdpo_lower", lower)]
            }
            Self::ThresholdAndScale {
                min_val,
                max_val,
                min_scale,
                max_scale,
            } => vec![
                ("tisdpo_min_val", min_val),
                ("tisdpo_max_val", max_val),
                ("tisdpo_min_scale", min_scale),
                ("tisdpo_max_scale", max_scale),
            ],
            Self::RankBased {
                min_scale,
                max_scale,
            } => vec![
                ("tisdpo_min_scale", min_scale),
                ("tisdpo_max_scale", max_scale),
            ],
        };
        for (field, value) in values {
            check_finite(field, value, false)?;
        }
        let ordered = |field: &'static str, low: f64, high: f64, strict: bool| {
            if low > high || (strict && low == high) {
                Err(CoreError::InvalidConfig {
                    field,
                    value: high.to_string(),
                    reason: format!(
                        "must be {} {low}",
                        if strict { "above" } else { "at least" }
                    ),
                })
            } else {
                Ok(())
            }
        };
        match self {
            Self::Binary { top_percent } if !(0.0..=100.0).contains(&top_percent) => {
                Err(CoreError::InvalidConfig {
                    field: "tisdpo_top_percent",
                    value: top_percent.to_string(),
                    reason: "a percentage must lie in [0, 100]".into(),
                })
            }
            Self::Threshold { upper, lower } => ordered("tisdpo_upper", lower, upper, false),
            Self::ThresholdAndScale {
                min_val, max_val, ..
            } => ordered("tisdpo_max_val", min_val, max_val, true),
            _ => Ok(()),
        }
    }
}

/// TIS-DPO's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TisdpoConfig {
    /// Inverse temperature (0.1).
    pub beta: f64,
    /// The transform (the README's `rank_based`, 0.7 to 1.3).
    pub transform: TisdpoTransform,
    /// Decimals the raw scores are rounded to when computed live (the code's 2); `None`: not
    /// rounded.
    pub round_decimals: Option<u32>,
}

impl Default for TisdpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            transform: TisdpoTransform::RankBased {
                min_scale: 0.7,
                max_scale: 1.3,
            },
            round_decimals: Some(2),
        }
    }
}

/// TIS-DPO: the scorer and its loss.
#[derive(Debug, Clone, Copy)]
pub struct Tisdpo {
    config: TisdpoConfig,
}

impl Tisdpo {
    /// Checks the hyperparameters.
    ///
    /// # Errors
    /// A non-finite or out-of-range value, naming its key.
    pub fn new(config: TisdpoConfig) -> Result<Self, CoreError> {
        check_finite("beta", config.beta, true)?;
        config.transform.validate()?;
        if let Some(decimals) = config.round_decimals
            && decimals > 15
        {
            return Err(CoreError::InvalidConfig {
                field: "tisdpo_round_decimals",
                value: decimals.to_string(),
                reason: "at most 15 decimals".into(),
            });
        }
        Ok(Self { config })
    }

    /// The loss on one batch.
    ///
    /// # Errors
    /// Neither the raw-weight column nor both contrastive models' columns, shapes that do not
    /// fit, or a non-finite score.
    pub fn forward(
        &self,
        inputs: &TokenLogps,
        columns: &TokenColumns,
    ) -> Result<TokenMethodOutput, CoreError> {
        let weights = self.score(inputs, columns)?;
        let (chosen, rejected) = weights.weighted_log_ratios(inputs);
        let beta = self.config.beta;
        let losses = log_sigmoid((chosen.clone() - rejected.clone()) * beta).neg();
        Ok(TokenMethodOutput::new(
            losses,
            chosen * beta,
            rejected * beta,
            weights,
        ))
    }

    /// The raw scores of one batch side: the precomputed column, or `round(lm- - lm+)` from
    /// the two models' columns.
    fn raw_scores(
        &self,
        columns: &TokenColumns,
        dims: [usize; 2],
        chosen: bool,
    ) -> Result<Vec<Vec<f64>>, CoreError> {
        let pick = |pair: &super::SidePair| {
            if chosen {
                pair.chosen.clone()
            } else {
                pair.rejected.clone()
            }
        };
        if columns.get(RAW_WEIGHT_COLUMN).is_some() {
            let raw = columns.require(NAME, RAW_WEIGHT_COLUMN, dims)?;
            return host_rows(pick(raw).detach(), RAW_WEIGHT_COLUMN);
        }
        let missing = |input| CoreError::MissingInput {
            loss_type: NAME,
            input,
        };
        if columns.get(POSITIVE_COLUMN).is_none() {
            return Err(missing(
                "tisdpo_raw_weight (or tisdpo_positive_logps and tisdpo_negative_logps)",
            ));
        }
        let positive = host_rows(
            pick(columns.require(NAME, POSITIVE_COLUMN, dims)?).detach(),
            POSITIVE_COLUMN,
        )?;
        let negative = host_rows(
            pick(columns.require(NAME, NEGATIVE_COLUMN, dims)?).detach(),
            NEGATIVE_COLUMN,
        )?;
        Ok(positive
            .iter()
            .zip(&negative)
            .map(|(positive, negative)| {
                positive
                    .iter()
                    .zip(negative)
                    .map(|(p, n)| match self.config.round_decimals {
                        Some(decimals) => python_round(n - p, decimals),
                        None => n - p,
                    })
                    .collect()
            })
            .collect())
    }
}

impl TokenScorer for Tisdpo {
    fn name(&self) -> &'static str {
        NAME
    }

    fn columns(&self) -> Vec<&'static str> {
        vec![RAW_WEIGHT_COLUMN]
    }

    fn uses_reference(&self) -> bool {
        true
    }

    fn score(
        &self,
        inputs: &TokenLogps,
        columns: &TokenColumns,
    ) -> Result<TokenWeights, CoreError> {
        let dims = inputs.check_shapes()?;
        let like = &inputs.policy_chosen_logps;
        let [chosen_side, rejected_side] = [
            (true, &inputs.chosen_loss_mask),
            (false, &inputs.rejected_loss_mask),
        ]
        .map(|(chosen, mask)| -> Result<_, CoreError> {
            let raw = self.raw_scores(columns, dims, chosen)?;
            let valid = host_mask(mask.clone(), "loss mask")?;
            let mut scores = Vec::with_capacity(raw.len());
            let mut weights = Vec::with_capacity(raw.len());
            for (pair, (raw, valid)) in raw.iter().zip(&valid).enumerate() {
                let positions: Vec<usize> = (0..valid.len()).filter(|&t| valid[t]).collect();
                // Every completion token but the last (EOS) has a score.
                let scored = &positions[..positions.len().saturating_sub(1)];
                let u: Vec<f64> = scored
                    .iter()
                    .map(|&t| if chosen { -raw[t] } else { raw[t] })
                    .collect();
                if let Some((i, value)) = u.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                    return Err(CoreError::InvalidConfig {
                        field: RAW_WEIGHT_COLUMN,
                        value: value.to_string(),
                        reason: format!(
                            "pair {pair}, {} completion, position {}: a token score must be finite",
                            if chosen { "chosen" } else { "rejected" },
                            scored[i]
                        ),
                    });
                }
                let w = self.config.transform.apply(&u);
                let mut score_row = vec![0.0; valid.len()];
                let mut weight_row = vec![0.0; valid.len()];
                for ((&t, &u), &w) in scored.iter().zip(&u).zip(&w) {
                    score_row[t] = u;
                    weight_row[t] = w;
                }
                scores.push(score_row);
                weights.push(weight_row);
            }
            Ok((device_rows(&scores, like), device_rows(&weights, like)))
        });
        let (chosen_scores, chosen) = chosen_side?;
        let (rejected_scores, rejected) = rejected_side?;
        Ok(TokenWeights {
            kind: WeightKind::Weight,
            chosen_scores,
            rejected_scores,
            chosen,
            rejected,
            chosen_normaliser: None,
            rejected_normaliser: None,
            pair_valid: None,
        })
    }
}

/// Python's `round(x, decimals)`: the decimal of `decimals` places nearest to the binary value
/// of `x` (ties, which only exactly representable halves are, to even), read back as f64.
pub fn python_round(x: f64, decimals: u32) -> f64 {
    if !x.is_finite() {
        return x;
    }
    // Rust's fixed-precision formatting rounds the exact binary value half to even, as
    // CPython's `round` does.
    format!("{x:.*}", decimals as usize).parse().unwrap_or(x)
}
