//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Selective DPO (SDPO) and the DPO family for Hugging Face causal LMs, in Rust.
#[derive(Debug, Parser)]
#[command(name = "sdpo", version = crate::device::version_string(), about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a policy with the configured loss (SDPO by default).
    Train {
        /// Configuration and device.
        #[command(flatten)]
        common: CommonArgs,
        /// Continue from a `checkpoint-N` directory, or `latest` in `output_dir`.
        #[arg(long, value_name = "DIR|latest")]
        resume_from_checkpoint: Option<PathBuf>,
    },
    /// Evaluate a checkpoint (or any saved model) on `eval_file`; prints the metrics as JSON.
    Eval {
        /// Configuration and device.
        #[command(flatten)]
        common: CommonArgs,
        /// The model directory to evaluate (a `checkpoint-N` or a final `output_dir`).
        #[arg(long, value_name = "DIR")]
        checkpoint: PathBuf,
    },
    /// Compute the reference model's per-token log-probs for the train and eval files once and
    /// store them under `output_dir` (later `train` runs with `precompute_ref_log_probs = true`
    /// reuse them).
    PrecomputeRef {
        /// Configuration and device.
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Merge a LoRA adapter (PEFT format) into its base model and save a full checkpoint.
    Merge(crate::merge::MergeArgs),
    /// Write a run's report (charts of its metrics, its configuration and data) as one HTML file.
    Report(crate::report::ReportArgs),
    /// Show which completion tokens SDPO trains on, for real pairs, as HTML or terminal text.
    Inspect(crate::inspect::InspectArgs),
}

/// Options shared by every subcommand.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The TOML configuration file (TRL `DPOConfig` names; see docs/configuration.md).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a configuration key, e.g. `--set learning_rate=1e-5` (TOML values; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// The backend: flex (CPU), wgpu (Vulkan/Metal/DX12 GPUs) or tch (LibTorch CPU/CUDA),
    /// among those compiled in. Default: `BURN_DEVICE`, else the first compiled in.
    #[arg(long, env = "BURN_DEVICE", value_name = "BACKEND")]
    pub device: Option<String>,
}
