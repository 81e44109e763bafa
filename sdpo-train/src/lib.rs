//! SDPO / DPO training for sdpo-rs: the loop a user runs with `sdpo train`.
//!
//! [`Trainer::new`] reads and tokenizes the preference data (`sdpo-data`), loads the policy
//! and the reference (`sdpo-models`), checks that they share a tokenizer, and with
//! `precompute_ref_log_probs` fills a per-token reference cache. [`Trainer::train`] runs
//! chosen and rejected through the policy in one forward pass of `2B` rows, computes the
//! configured loss (`sdpo-core`), accumulates gradients over micro-batches, clips them by
//! their global norm and steps AdamW on a schedule; it logs TRL's metrics to
//! `output_dir/metrics.jsonl`, evaluates, and writes atomic checkpoints that a later run
//! resumes from exactly.
//!
//! Nothing here prints: progress goes to a [`TrainObserver`] (the CLI draws a progress bar).
#![warn(missing_docs)]

pub mod batch;
pub mod cache;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod engine;
pub mod error;
pub mod observer;
pub mod reference;
pub mod schedule;
pub mod trainer;

pub use config::{LrSchedulerType, TrainConfig};
pub use error::TrainError;
pub use observer::{MetricsRecord, SilentObserver, StepProgress, TrainObserver, read_metrics};
pub use trainer::{Start, Trainer};
