//! What the trackers are told about a run: its identity and configuration at the start, and
//! how it ended.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// One chart of the run report: a title and the metrics it draws (train names; the `eval_`
/// counterparts join them). TensorBoard's custom-scalars layout is built from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartGroup {
    /// The chart's title.
    pub title: String,
    /// The metrics, by their train names (`rewards/chosen`).
    pub metrics: Vec<String>,
}

/// The run being tracked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunInfo {
    /// The run's `output_dir`.
    pub output_dir: PathBuf,
    /// `run_name` (MLflow's run name; unset: the server picks one, as for transformers).
    pub run_name: Option<String>,
    /// `logging_dir`: where TensorBoard's files go (unset: see
    /// [`crate::tensorboard::logging_dir`]).
    pub logging_dir: Option<PathBuf>,
    /// The run's configuration, one flat key per option (TensorBoard's `args` text, MLflow's
    /// parameters).
    pub config: Map<String, Value>,
    /// The policy's `config.json`, when there is one (TensorBoard's `model_config` text; its
    /// keys join MLflow's parameters, the run's own keys winning, as transformers merges them).
    pub model_config: Option<Map<String, Value>>,
    /// The run report's charts, for TensorBoard's custom-scalars dashboard.
    pub chart_groups: Vec<ChartGroup>,
}

impl RunInfo {
    /// A run writing to `output_dir`, with nothing else known.
    pub fn new(output_dir: impl AsRef<Path>) -> Self {
        Self {
            output_dir: output_dir.as_ref().to_path_buf(),
            ..Self::default()
        }
    }
}

/// How a tracked run ended (MLflow's run status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Training completed.
    Finished,
    /// Training stopped with an error.
    Failed,
}

impl RunStatus {
    /// MLflow's name for the status.
    pub fn mlflow_name(self) -> &'static str {
        match self {
            Self::Finished => "FINISHED",
            Self::Failed => "FAILED",
        }
    }
}

/// A file to store with the run (an MLflow artifact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The local file.
    pub local: PathBuf,
    /// Its path among the run's artifacts (`model/config.json`, `report.html`).
    pub path: String,
}
