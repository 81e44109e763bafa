//! The error type of `sdpo-train`.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can stop training; each variant names the file, key or step involved.
#[derive(Debug, Error)]
pub enum TrainError {
    /// A configuration value is missing or out of range.
    #[error("invalid configuration: `{key}`: {reason}")]
    Config {
        /// The config key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The loss configuration is invalid.
    #[error("invalid loss configuration")]
    Loss(#[source] sdpo_core::CoreError),
    /// Computing the loss or reading its results back from the device failed.
    #[error("computing the loss")]
    Compute(#[source] sdpo_core::CoreError),
    /// Preference data could not be read or processed.
    #[error("preference data")]
    Data(#[from] sdpo_data::DataError),
    /// A model could not be loaded, run or saved.
    #[error("model `{path}`")]
    Model {
        /// The model directory.
        path: PathBuf,
        /// The model error.
        #[source]
        source: sdpo_models::ModelError,
    },
    /// Policy and reference do not share a tokenizer.
    #[error(
        "the reference model `{reference}` does not share the policy's tokenizer: {}",
        differences.join("; ")
    )]
    TokenizerMismatch {
        /// The reference model directory.
        reference: PathBuf,
        /// What differs.
        differences: Vec<String>,
    },
    /// A file could not be read or written.
    #[error("{action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (trainer state, cache header) is malformed.
    #[error("malformed {what} `{path}`: {reason}")]
    Malformed {
        /// What kind of file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A run-directory file (`metrics.jsonl`, `run_config.json`, `data_summary.json`, the
    /// `checkpoint-N` listing) could not be read or written, or is malformed.
    #[error(transparent)]
    RunDir(#[from] sdpo_run::RunDirError),
    /// The optimizer state's file could not be written or read (burn's record error).
    #[error("optimizer state `{path}`: {source}")]
    OptimizerRecord {
        /// The file.
        path: PathBuf,
        /// burn's error.
        #[source]
        source: burn::store::RecordError,
    },
    /// The optimizer state's loader gave up on a corrupted file (it panicked; the panic's
    /// message is kept).
    #[error("optimizer state `{path}`: {reason}")]
    Optimizer {
        /// The file.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// The precomputed reference cache does not fit the data.
    #[error("reference log-prob cache `{path}`: {reason}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// A quantity of a training step became NaN or infinite; the step was not applied.
    #[error(
        "{quantity} is {value} at step {step}: training diverged (lower learning_rate or beta?); \
         the step was not applied, the weights and the last checkpoint are untouched"
    )]
    NonFinite {
        /// The optimizer step that failed (1-based, as logged).
        step: usize,
        /// What was not finite: `loss`, `grad_norm`, `policy log-probs`, ...
        quantity: String,
        /// The value.
        value: f64,
    },
    /// The data file has no usable preference pair.
    #[error("no usable preference pairs in `{path}`")]
    NoData {
        /// The data file.
        path: PathBuf,
    },
    /// `--resume-from-checkpoint latest` found no checkpoint.
    #[error("no checkpoint to resume from in `{output_dir}`")]
    NoCheckpoint {
        /// Where checkpoints were looked for.
        output_dir: PathBuf,
    },
    /// A directory given as a checkpoint is not one.
    #[error("`{path}` is not a checkpoint (no {file})")]
    NotACheckpoint {
        /// The directory.
        path: PathBuf,
        /// The file that is missing.
        file: &'static str,
    },
    /// A checkpoint's files do not match its manifest (a flipped byte, a truncated file).
    #[error("checkpoint `{checkpoint}` is corrupted: `{file}` {reason}")]
    CorruptCheckpoint {
        /// The checkpoint directory.
        checkpoint: PathBuf,
        /// The file that does not match.
        file: String,
        /// How it differs.
        reason: String,
    },
    /// The configuration differs from the checkpoint's in keys that change the data, the model
    /// or the loss.
    #[error(
        "cannot resume from `{checkpoint}`: the configuration changes what the run trains on: {}",
        differences.join("; ")
    )]
    ConfigChanged {
        /// The checkpoint directory.
        checkpoint: PathBuf,
        /// `key: checkpoint value -> current value`, one per key.
        differences: Vec<String>,
    },
    /// The checkpoint's optimizer state does not fit the model.
    #[error(
        "checkpoint `{checkpoint}`: its optimizer state covers {saved} parameters, the model has {model}"
    )]
    ParameterCount {
        /// The checkpoint directory.
        checkpoint: PathBuf,
        /// Parameters in the checkpoint.
        saved: usize,
        /// Parameters in the model.
        model: usize,
    },
    /// An optimizer step had no batch (an empty sampler epoch).
    #[error("optimizer step {step} has no data")]
    EmptyStep {
        /// The step.
        step: usize,
    },
    /// A batch row the forward pass cannot lay out (rows must be right padded).
    #[error("batch row {row}: {reason}")]
    BatchLayout {
        /// The row (`0..2B`, chosen rows first).
        row: usize,
        /// What is wrong.
        reason: String,
    },
    /// Reading a tensor back from the device failed.
    #[error("reading {tensor} back from the device: {reason}")]
    DeviceRead {
        /// What was read.
        tensor: &'static str,
        /// The backend's message.
        reason: String,
    },
}

/// Shorthand for an I/O error on `path`.
pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io {
        action,
        path,
        source,
    }
}
