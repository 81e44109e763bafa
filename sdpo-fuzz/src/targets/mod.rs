//! The fuzz targets, one per parser a user's file reaches, grouped by the crate that owns it.

mod config;
mod data;
mod models;
mod run;
mod templates;

use std::sync::LazyLock;

use crate::Target;

/// Every target, in the order `sdpo-fuzz list` shows them.
pub static TARGETS: LazyLock<Vec<&'static Target>> = LazyLock::new(|| {
    data::TARGETS
        .iter()
        .chain(&templates::TARGETS)
        .chain(&config::TARGETS)
        .chain(&models::TARGETS)
        .chain(&run::TARGETS)
        .collect()
});

/// The target named `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}
