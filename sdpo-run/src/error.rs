//! The error type of `sdpo-run`.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// What can go wrong reading or writing a run directory; each variant names the file, and the
/// line where there is one.
#[derive(Debug, Error)]
pub enum RunDirError {
    /// A file or directory could not be read or written.
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
    /// A JSON file of the run is malformed (or a value cannot be written as JSON).
    #[error("malformed {what} `{path}`: {reason}")]
    Malformed {
        /// What kind of file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
}

/// Maps an I/O error to [`RunDirError::Io`] for `path`.
pub(crate) fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RunDirError + 'a {
    move |source| RunDirError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
