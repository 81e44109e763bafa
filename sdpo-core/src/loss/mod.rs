//! The DPO loss family and SDPO: configuration, per-type losses, the combined objective.

pub mod bco;
pub mod config;
pub mod family;
pub mod objective;
pub mod trl1;
pub mod weighting;

use crate::error::CoreError;
use config::LossType;

/// The error of a DPO-family loss function asked for a token-level method, whose loss is its
/// own (`PreferenceLoss` routes it to `TokenMethod::forward`).
pub(crate) fn not_a_family_term(loss_type: LossType) -> CoreError {
    CoreError::InvalidConfig {
        field: "loss_type",
        value: loss_type.name().into(),
        reason: "a token-level method has its own loss (`PreferenceLoss` or \
                 `TokenMethod::forward`), not a term of the DPO family"
            .into(),
    }
}
