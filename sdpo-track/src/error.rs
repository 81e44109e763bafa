//! The error type of `sdpo-track`.

use std::path::PathBuf;

use thiserror::Error;

/// What can stop tracking from starting. Once a run is tracked, nothing here stops training:
/// a sink that fails later reports a warning instead (see [`crate::Trackers`]).
#[derive(Debug, Error)]
pub enum TrackError {
    /// `report_to` names something that is not a supported integration.
    #[error("report_to: {reason}")]
    ReportTo {
        /// What is wrong, with the supported names.
        reason: String,
    },
    /// An environment variable a requested integration reads has an unusable value.
    #[error("{variable}: {reason}")]
    Env {
        /// The variable.
        variable: &'static str,
        /// What is wrong with it and what it must be.
        reason: String,
    },
    /// A file or directory could not be created, written or read.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A TensorBoard event file is damaged (reading back).
    #[error("event file `{path}`: {reason}")]
    EventFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the byte offset.
        reason: String,
    },
}

/// A closure turning an I/O error into [`TrackError::Io`].
pub(crate) fn io(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> TrackError {
    let path = path.to_path_buf();
    move |source| TrackError::Io {
        action,
        path,
        source,
    }
}
