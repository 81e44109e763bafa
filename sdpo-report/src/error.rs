//! The error type of `sdpo-report`.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that stops a report from being written; each variant names the file, line or
/// field involved.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The run directory does not exist or is not a directory.
    #[error("run directory `{path}` does not exist or is not a directory")]
    NoRunDir {
        /// The directory given.
        path: PathBuf,
    },
    /// The run directory has no `metrics.jsonl`.
    #[error(
        "no metrics file `{path}`: not a run's output_dir, or the run has not logged a step yet"
    )]
    NoMetrics {
        /// The missing file.
        path: PathBuf,
    },
    /// `metrics.jsonl` holds no record.
    #[error(
        "metrics file `{path}` has no records: the run has not logged a step yet (records are written every `logging_steps`)"
    )]
    EmptyMetrics {
        /// The file.
        path: PathBuf,
    },
    /// A line of `metrics.jsonl` is not a metrics record.
    #[error("metrics file `{path}` line {line}: {reason}")]
    BadMetricsLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSON file of the run (trainer state, data summary) is malformed.
    #[error("malformed {what} `{path}`: {reason}")]
    Malformed {
        /// What kind of file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A comparison needs at least two runs.
    #[error("a comparison needs at least two run directories, got {count}")]
    TooFewRuns {
        /// How many were given.
        count: usize,
    },
    /// An inspect report is inconsistent (lengths that do not match its thresholds, ...).
    #[error("inconsistent inspect report: {0}")]
    Inspect(String),
    /// A chart could not be drawn.
    #[error("cannot draw chart `{chart}`: {reason}")]
    Chart {
        /// The chart's title.
        chart: String,
        /// The plotting library's message.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Maps an I/O error to [`ReportError::Io`] for `path`.
pub(crate) fn io<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> ReportError + 'a {
    move |source| ReportError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl From<sdpo_run::RunDirError> for ReportError {
    fn from(err: sdpo_run::RunDirError) -> Self {
        match err {
            sdpo_run::RunDirError::Io {
                action,
                path,
                source,
            } => Self::Io {
                action,
                path,
                source,
            },
            sdpo_run::RunDirError::BadMetricsLine { path, line, reason } => {
                Self::BadMetricsLine { path, line, reason }
            }
            sdpo_run::RunDirError::Malformed { what, path, reason } => {
                Self::Malformed { what, path, reason }
            }
        }
    }
}
