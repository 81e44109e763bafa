//! The DPO loss family and SDPO: configuration, per-type losses, the combined objective.

pub mod bco;
pub mod config;
pub mod family;
pub mod objective;
pub mod trl1;
pub mod weighting;
