//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use crate::common_args::CommonArgs;

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
    /// store them under `output_dir/ref_logps_cache/` (later `train` runs with
    /// `precompute_ref_log_probs = true` reuse them): whole, one shard of several, or a merge of
    /// a complete set of shards.
    PrecomputeRef {
        /// Configuration and device.
        #[command(flatten)]
        common: CommonArgs,
        /// Compute only shard K of N (0 <= K < N): a contiguous 1/N of each split's batches,
        /// into its own file. A killed shard restarts after its last whole batch. Training
        /// reads a complete set directly.
        #[arg(long, value_name = "K/N", conflicts_with = "merge")]
        shard: Option<sdpo_train::reference::cache::Shard>,
        /// Write one file per split from its complete set of shards (the shards are kept).
        #[arg(long)]
        merge: bool,
    },
    /// Write the exact token rows of every pair (`OUT/train.jsonl`, `OUT/eval.jsonl`) for another
    /// engine to compute the reference's log-probs of (`tools/ref_logps.py`).
    ExportPairs {
        /// Configuration and device.
        #[command(flatten)]
        common: CommonArgs,
        /// The directory to write the files into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Merge a LoRA adapter (PEFT format) into its base model and save a full checkpoint.
    Merge(crate::merge::MergeArgs),
    /// Write a run's report (charts of its metrics, its configuration and data) as one HTML file.
    Report(crate::report::ReportArgs),
    /// Show which completion tokens SDPO trains on, for real pairs, as HTML or terminal text.
    Inspect(crate::inspect::InspectArgs),
}
