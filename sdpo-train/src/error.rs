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
    Loss(#[from] sdpo_core::CoreError),
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
    /// The optimizer state could not be saved or loaded.
    #[error("optimizer state `{path}`: {reason}")]
    Optimizer {
        /// The file.
        path: PathBuf,
        /// The record error.
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
    /// The loss became NaN or infinite.
    #[error("the loss is {value} at step {step}: training diverged (lower learning_rate or beta?)")]
    NonFinite {
        /// The optimizer step.
        step: usize,
        /// The value.
        value: f64,
    },
    /// Nothing to do: no data, or a checkpoint to resume from is missing.
    #[error("{0}")]
    Nothing(String),
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
