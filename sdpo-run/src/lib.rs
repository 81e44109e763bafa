//! The run directory of sdpo-rs (`output_dir`), described once: what `sdpo-train` writes and
//! `sdpo-report` (or any other tool) reads. Serde only, no burn.
//!
//! ```text
//! output_dir/
//!   metrics.jsonl          one MetricsRecord per line (TRL's metric names)
//!   run_config.json        the configuration the run uses (flat keys)
//!   data_summary.json      what reading the data did (DataSummary)
//!   checkpoint-N/          trainer_state.json, optimizer.bpk, the model, manifest.json
//!   model.safetensors ...  the final model (or adapter), tokenizer files, README.md
//! ```
//!
//! - [`layout`]: the names, [`checkpoint_dir`] and the one scanner of `checkpoint-N` folders,
//!   [`list_checkpoints`].
//! - [`metrics`]: [`MetricsRecord`], [`MetricsFile`] (the trainer's appending writer, safe
//!   against kills) and [`read_metrics_records`] / [`read_metrics_lines`].
//! - [`summary`]: [`DataSummary`] and the run's configuration file, read and written.

#![warn(missing_docs)]

mod error;
pub mod layout;
pub mod metrics;
pub mod summary;

pub use error::RunDirError;
pub use layout::{
    CHECKPOINT_PREFIX, DATA_SUMMARY_FILE, MANIFEST_FILE, METRICS_FILE, OPTIMIZER_FILE,
    RUN_CONFIG_FILE, TRAINER_STATE_FILE, checkpoint_dir, list_checkpoints,
};
pub use metrics::{
    MetricsFile, MetricsLines, MetricsRecord, parse_metrics_line, read_metrics_lines,
    read_metrics_records,
};
pub use summary::{
    DataSummary, SplitSummary, read_data_summary, read_json, read_run_config, write_data_summary,
    write_run_config,
};
