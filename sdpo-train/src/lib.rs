//! SDPO / DPO training for sdpo-rs: the loop a user runs with `sdpo train`.
//!
//! [`Trainer::new`] starts a run (module `startup`): it reads and tokenizes the preference data
//! (`sdpo-data`), loads the policy and the reference (`sdpo-models`), checks every model against
//! the data and the reference's tokenizer against the policy's, verifies and compares a
//! checkpoint it resumes from, and with `precompute_ref_log_probs` fills a per-token reference
//! cache. [`Trainer::train`] runs chosen and rejected through the policy in one forward pass of
//! `2B` rows, computes the configured loss ([`objective`], `sdpo-core`), accumulates gradients
//! over micro-batches, refuses a step whose loss, gradient norm or log-probs are not finite,
//! clips by the global norm and steps AdamW ([`optimizer`]) on a schedule; it logs TRL's
//! metrics to `output_dir/metrics.jsonl`, evaluates, and writes atomic checkpoints with a
//! [`manifest`] that a later run verifies and resumes from exactly.
//!
//! Nothing here prints: progress goes to a [`TrainObserver`] (the CLI draws a progress bar).
#![warn(missing_docs)]

pub mod batch;
pub mod best;
pub mod cache;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod device;
pub mod engine;
pub mod error;
pub mod inspect;
pub mod layout;
pub mod manifest;
pub mod model_card;
pub mod objective;
pub mod observer;
pub mod optimizer;
pub mod precision;
pub mod ref_sync;
pub mod reference;
pub mod resume;
pub mod run_summary;
pub mod schedule;
mod startup;
pub mod steps;
pub mod trainer;

pub use config::{LrSchedulerType, Optimizer, RefDtype, TrainConfig};
pub use device::training_device;
pub use error::TrainError;
pub use observer::{MetricsRecord, SilentObserver, StepProgress, TrainObserver, read_metrics};
pub use steps::{IntervalStrategy, SaveStrategy, Steps};
pub use trainer::{MERGED_DIR, Start, Trainer};
