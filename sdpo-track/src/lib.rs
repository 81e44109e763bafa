//! Experiment tracking for sdpo-rs, without burn: the run's metrics go where a TRL user's
//! `report_to` sends them, as transformers' callbacks write them.
//!
//! - [`ReportTo`]: the `report_to` setting (`"none"`, `"all"`, a name or a list; unknown and
//!   unavailable integrations are errors listing what is supported).
//! - [`tensorboard`]: event files as `TensorBoardCallback` writes them (tags `train/loss`,
//!   `eval/loss`, ... at the global step; the configuration as text), built on `prost` and
//!   `crc32c`.
//! - [`mlflow`]: a run on an MLflow tracking server through its REST API (parameters, metrics
//!   per step, artifacts), delivered by a background thread that buffers and retries, so a
//!   server that is down never stops or slows training.
//! - [`TrackingPlan`] / [`Trackers`]: the integrations of one run, decided before training and
//!   fed each log record.
//!
//! Nothing here prints: problems come back as errors (before training) or warning strings
//! (during and after it) for the caller to show.
#![warn(missing_docs)]

pub mod error;
pub mod mlflow;
pub mod report_to;
pub mod run;
pub mod tensorboard;
mod trackers;

pub use error::TrackError;
pub use mlflow::{DeliveryReport, MlflowRun, MlflowSettings};
pub use report_to::{Integration, ReportTo};
pub use run::{Artifact, ChartGroup, RunInfo, RunStatus};
pub use tensorboard::{TensorBoardWriter, read_event_file};
pub use trackers::{Trackers, TrackingPlan};
