//! The token-level methods as `loss_type` values: [`LossConfig::token_method`] builds the
//! configured method from the flat keys, refusing the DPO-family options it would ignore.

use super::types::{CtReductionName, FDivergenceType, LossType, TisdpoTransformName};
use super::{LossConfig, invalid};
use crate::error::CoreError;
use crate::token_methods::TokenMethod;
use crate::token_methods::confpo::{Confpo, ConfpoConfig};
use crate::token_methods::critical_token::{CriticalToken, CriticalTokenConfig, CtReduction};
use crate::token_methods::sepo::{Sepo, SepoConfig};
use crate::token_methods::tgdpo::{Tgdpo, TgdpoConfig};
use crate::token_methods::tisdpo::{Tisdpo, TisdpoConfig, TisdpoTransform};

impl LossConfig {
    /// The configured token-level method, or `None` when `loss_type` is of the DPO family.
    ///
    /// A token-level method stands alone in `loss_type` (its loss is not a term of the DPO
    /// family's weighted sum) and follows its authors' code, so the DPO-family options that
    /// would change it (`loss_weights`, `ld_alpha`, `use_weighting`, an f-divergence other than
    /// `reverse_kl`, and `label_smoothing` except for ConfPO) are refused rather than ignored,
    /// and so is `reference_free` for the methods that read the reference.
    ///
    /// # Errors
    /// A method combined with another loss type, a refused option, or a hyperparameter out of
    /// range, naming its key.
    pub fn token_method(&self) -> Result<Option<TokenMethod>, CoreError> {
        let types = self.loss_types();
        let Some(&method) = types.iter().find(|t| t.is_token_method()) else {
            return Ok(None);
        };
        if types.len() != 1 {
            return Err(invalid(
                "loss_type",
                format!("{:?}", types.iter().map(|t| t.name()).collect::<Vec<_>>()),
                &format!(
                    "`{method}` is a token-level method with its own loss; it cannot be combined \
                     with other loss types"
                ),
            ));
        }
        self.refuse_family_options(method)?;
        let built = match method {
            LossType::Confpo => TokenMethod::Confpo(Confpo::new(ConfpoConfig {
                beta: self.beta,
                simpo_gamma: self.simpo_gamma,
                label_smoothing: self.label_smoothing,
            })?),
            LossType::Sepo => TokenMethod::Sepo(Sepo::new(SepoConfig {
                sepo_ratio: self.sepo_ratio,
                sepo_rejected_ratio: self.sepo_rejected_ratio,
                sepo_scale: self.sepo_scale,
            })?),
            LossType::Tisdpo => TokenMethod::Tisdpo(Tisdpo::new(TisdpoConfig {
                beta: self.beta,
                transform: self.tisdpo_transform(),
                round_decimals: self.tisdpo_round_decimals,
            })?),
            LossType::CriticalToken => {
                if !(self.ct_ce_gamma.is_finite() && self.ct_ce_gamma >= 0.0) {
                    return Err(invalid(
                        "ct_ce_gamma",
                        self.ct_ce_gamma,
                        "must be a finite number >= 0",
                    ));
                }
                TokenMethod::CriticalToken(CriticalToken::new(CriticalTokenConfig {
                    beta: self.beta,
                    only_neg: self.ct_only_neg,
                    reduction: match self.ct_dpo_reduction {
                        CtReductionName::Position => CtReduction::Position {
                            denominator: self.ct_position_denominator,
                        },
                        CtReductionName::Sequence => CtReduction::Sequence,
                    },
                })?)
            }
            LossType::Tgdpo => TokenMethod::Tgdpo(Tgdpo::new(TgdpoConfig {
                beta: self.beta,
                alpha: self.tgdpo_alpha,
            })?),
            other => {
                return Err(invalid("loss_type", other, "not a token-level method"));
            }
        };
        Ok(Some(built))
    }

    /// TIS-DPO's transform with its parameters from the `tisdpo_*` keys.
    pub fn tisdpo_transform(&self) -> TisdpoTransform {
        match self.tisdpo_transform {
            TisdpoTransformName::Origin => TisdpoTransform::Origin,
            TisdpoTransformName::Binary => TisdpoTransform::Binary {
                top_percent: self.tisdpo_top_percent,
            },
            TisdpoTransformName::Threshold => TisdpoTransform::Threshold {
                upper: self.tisdpo_upper,
                lower: self.tisdpo_lower,
            },
            TisdpoTransformName::ThresholdAndScale => TisdpoTransform::ThresholdAndScale {
                min_val: self.tisdpo_min_val,
                max_val: self.tisdpo_max_val,
                min_scale: self.tisdpo_min_scale,
                max_scale: self.tisdpo_max_scale,
            },
            TisdpoTransformName::RankBased => TisdpoTransform::RankBased {
                min_scale: self.tisdpo_min_scale,
                max_scale: self.tisdpo_max_scale,
            },
        }
    }

    /// The DPO-family options a token-level method does not read, refused when set.
    fn refuse_family_options(&self, method: LossType) -> Result<(), CoreError> {
        let unread = |field: &'static str, value: String| {
            invalid(
                field,
                value,
                &format!(
                    "`{method}` follows its authors' loss and does not read it; remove the key"
                ),
            )
        };
        if let Some(weights) = &self.loss_weights {
            return Err(unread("loss_weights", format!("{weights:?}")));
        }
        if let Some(ld_alpha) = self.ld_alpha {
            return Err(unread("ld_alpha", ld_alpha.to_string()));
        }
        if self.use_weighting {
            return Err(unread("use_weighting", "true".into()));
        }
        if self.f_divergence_type != FDivergenceType::ReverseKl {
            return Err(unread(
                "f_divergence_type",
                self.f_divergence_type.name().into(),
            ));
        }
        if method != LossType::Confpo && self.label_smoothing != 0.0 {
            return Err(unread("label_smoothing", self.label_smoothing.to_string()));
        }
        if self.reference_free && !matches!(method, LossType::Confpo | LossType::Sepo) {
            return Err(invalid(
                "reference_free",
                true,
                &format!("`{method}` reads the reference model's log-probs"),
            ));
        }
        Ok(())
    }
}
