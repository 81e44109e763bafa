//! The arguments every run-shaped subcommand shares (`train`, `eval`, `precompute-ref`,
//! `inspect`): the configuration file, `--set` overrides, the backend, and the TRL-style flags.

use std::path::PathBuf;

use clap::Args;

/// Options shared by every subcommand.
#[derive(Debug, Args)]
#[command(
    after_help = "Any TRL flag sets the key of that name, as `trl dpo` reads it: \
    `--learning_rate 5e-7`, `--gradient_checkpointing` (true), `--no_remove_unused_columns` \
    (false), `--lora_target_modules q_proj v_proj` (a list). Flags win over the file, `--set` \
    over both. docs/configuration.md lists every TRL key and what sdpo does with it."
)]
pub struct CommonArgs {
    /// The configuration file: TOML, or TRL's YAML (`.yaml`/`.yml`, as `trl dpo --config`).
    /// Optional when the keys come as flags.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a configuration key, e.g. `--set learning_rate=1e-5` (TOML values; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// The backend: flex (CPU), wgpu (Vulkan/Metal/DX12 GPUs) or tch (LibTorch CPU/CUDA),
    /// among those compiled in. Default: `BURN_DEVICE`, else the first compiled in.
    #[arg(long, env = "BURN_DEVICE", value_name = "BACKEND")]
    pub device: Option<String>,
    /// TRL-style flags (`--key value...`), taken out of the command line before clap parses it
    /// ([`crate::args::split_trl_flags`]).
    #[arg(skip)]
    pub trl_flags: Vec<(String, Vec<String>)>,
}
