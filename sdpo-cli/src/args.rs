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

/// Flags of `sdpo` itself that take a value (everything else of the form `--key` is a TRL key).
const OWN_FLAGS_WITH_VALUE: [&str; 8] = [
    "--config",
    "-c",
    "--set",
    "--device",
    "--resume-from-checkpoint",
    "--checkpoint",
    "--shard",
    "--out",
];

/// Flags of `sdpo` itself without a value.
const OWN_SWITCHES: [&str; 5] = ["--help", "-h", "--version", "-V", "--merge"];

/// Splits the arguments of `sdpo train|eval|precompute-ref|export-pairs` into those clap parses and TRL-style
/// flags: `--key`, `--key value`, `--key v1 v2 ...` (values up to the next `--`) and
/// `--key=value`. Other subcommands are left alone.
pub fn split_trl_flags(args: Vec<String>) -> (Vec<String>, Vec<(String, Vec<String>)>) {
    let takes_trl = args
        .get(1)
        .is_some_and(|c| ["train", "eval", "precompute-ref", "export-pairs"].contains(&c.as_str()));
    if !takes_trl {
        return (args, Vec::new());
    }
    let mut own = args[..2].to_vec();
    let mut trl: Vec<(String, Vec<String>)> = Vec::new();
    let mut rest = args.into_iter().skip(2).peekable();
    while let Some(arg) = rest.next() {
        let name = arg.split('=').next().unwrap_or(&arg).to_string();
        if OWN_FLAGS_WITH_VALUE.contains(&name.as_str()) {
            let inline = arg.contains('=');
            own.push(arg);
            if !inline && let Some(value) = rest.next() {
                own.push(value);
            }
        } else if OWN_SWITCHES.contains(&arg.as_str()) || !arg.starts_with("--") {
            own.push(arg);
        } else if let Some((key, value)) = arg[2..].split_once('=') {
            trl.push((key.to_string(), vec![value.to_string()]));
        } else {
            let mut values = Vec::new();
            while let Some(next) = rest.next_if(|a| !a.starts_with("--")) {
                values.push(next);
            }
            trl.push((arg[2..].to_string(), values));
        }
    }
    (own, trl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trl_flags_are_split_from_sdpos_own() {
        let args: Vec<String> = "sdpo train --config run.yaml --learning_rate 5.0e-7 \
            --no_remove_unused_columns --lora_target_modules q_proj v_proj --set beta=0.2 \
            --output_dir=out --device flex --gradient_checkpointing"
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let (own, trl) = split_trl_flags(args);
        assert_eq!(
            own,
            [
                "sdpo", "train", "--config", "run.yaml", "--set", "beta=0.2", "--device", "flex"
            ]
        );
        let expected: Vec<(String, Vec<String>)> = [
            ("learning_rate", vec!["5.0e-7"]),
            ("no_remove_unused_columns", vec![]),
            ("lora_target_modules", vec!["q_proj", "v_proj"]),
            ("output_dir", vec!["out"]),
            ("gradient_checkpointing", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
        .collect();
        assert_eq!(trl, expected);
        let other: Vec<String> = ["sdpo", "report", "--x"].map(str::to_string).to_vec();
        assert_eq!(split_trl_flags(other.clone()).0, other);
    }
}
