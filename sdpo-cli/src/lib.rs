//! The configuration layer of the `sdpo` command, as a library: a run's TOML or TRL YAML file,
//! TRL-style flags and `--set` overrides read into a [`sdpo_train::TrainConfig`]
//! ([`config_file::load_config`]), and the command line split into `sdpo`'s own arguments and
//! TRL's ([`flags::split_trl_flags`]). The `sdpo` binary and the fuzz targets
//! (`sdpo-fuzz`) call the same functions.
#![warn(missing_docs)]

pub mod config_file;
pub mod flags;
mod trl_config;
mod trl_keys;
mod yaml;
