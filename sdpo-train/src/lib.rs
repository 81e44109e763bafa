//! SDPO / DPO training for sdpo-rs: the loop a user runs with `sdpo train`.
//!
//! Three ways in:
//!
//! - **A whole run**: [`Trainer::new`] reads and tokenizes the preference data (`sdpo-data`),
//!   loads the policy and the reference (`sdpo-models`), checks each against the data, verifies a
//!   checkpoint it resumes from and (with `precompute_ref_log_probs`) fills the reference cache;
//!   [`Trainer::train`] runs the optimizer steps, logs TRL's metrics, evaluates and writes
//!   checkpoints. Progress goes to a [`TrainObserver`]; nothing here prints.
//! - **One step in your own loop**: [`micro_step`] is one micro-batch: the reference's
//!   log-probs ([`Reference::logps`]), then the policy's forward and backward on the run's
//!   [`LogpsPath`] (whole graph or the memory-bounded engine) through [`policy_gradients`],
//!   with the configured loss of `sdpo-core` ([`objective`]). [`policy_gradients`] takes any
//!   loss on the per-token log-probs.
//! - **Reading a run**: everything a run writes to `output_dir` is described once in
//!   [`run_dir`] (the `sdpo-run` crate): [`read_metrics_records`], the checkpoint folders, the
//!   configuration and data summary.
//!
//! The modules, in the order a step runs through them (docs/training-internals.md has the
//! map): [`config`] → `startup` (data, plan, starting models) → [`reference`] → [`logps`] →
//! [`objective`] → `trainer` (accumulation, the finiteness checks, [`clip`], AdamW on a
//! [`schedule`]) → [`steps`] (when to log, evaluate, save) → [`checkpoint`] and [`best`].
#![warn(missing_docs)]

pub mod best;
pub mod checkpoint;
pub mod clip;
pub mod config;
mod device;
mod error;
pub mod inspect;
pub mod logps;
mod model_card;
pub mod objective;
mod observer;
pub mod optimizer;
pub mod precision;
pub mod reference;
pub mod run_summary;
pub mod schedule;
pub mod scoring;
mod startup;
pub mod steps;
mod trainer;

pub use config::{LrSchedulerType, ModelDtype, Optimizer, RefDtype, TrainConfig};
pub use device::training_device;
pub use error::TrainError;
pub use inspect::{Inspection, Inspector};
pub use logps::{DeviceBatch, LogpsPath, MemoryMode, RowLayout, SidedLogps, policy_gradients};
pub use objective::{MicroStep, micro_step};
pub use observer::{MetricsFile, MetricsRecord, SilentObserver, StepProgress, TrainObserver};
pub use reference::{
    PrecomputeJob, Reference, ReferenceLogps, Split, export_pairs, precompute_reference,
};
pub use scoring::ScoringModels;
/// The run directory's names, records, readers and writers (the `sdpo-run` crate).
pub use sdpo_run as run_dir;
pub use sdpo_run::read_metrics_records;
pub use steps::{IntervalStrategy, SaveStrategy, Steps};
pub use trainer::{MERGED_DIR, Start, Trainer};
