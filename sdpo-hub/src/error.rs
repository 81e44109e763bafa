//! [`HubError`]: what can go wrong resolving a name, with the places looked at.

use std::path::PathBuf;

/// One place a name was looked for, and what was found there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Looked {
    /// The place: a local path, a cache folder, a Hub URL.
    pub place: String,
    /// What was there (or why it was not tried).
    pub outcome: String,
}

impl std::fmt::Display for Looked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.outcome)
    }
}

/// Errors of `sdpo-hub`.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A value that is neither a local path nor a valid Hub id.
    #[error("`{spec}` is not a valid Hugging Face Hub id: {reason}")]
    InvalidId {
        /// The value as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name that no place could provide; every place looked at is listed.
    #[error(
        "`{spec}` ({wanted}) was not found{offline_note}; looked at:\n{list}",
        offline_note = if *.offline { " (offline: HF_HUB_OFFLINE is set, the Hub was not asked)" } else { "" },
        list = .looked.iter().map(|l| format!("  - {l}")).collect::<Vec<_>>().join("\n")
    )]
    NotFound {
        /// The name as given.
        spec: String,
        /// What it was wanted as (`model`, `dataset`, ...).
        wanted: String,
        /// Every place looked at, in order.
        looked: Vec<Looked>,
        /// Whether the run is offline.
        offline: bool,
    },
    /// The Hub answered an error status.
    #[error("{url} answered {status}{code}: {message}{hint}",
        code = .code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default(),
        hint = .hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    Http {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The Hub's `X-Error-Code` (`RepoNotFound`, `GatedRepo`, ...), if sent.
        code: Option<String>,
        /// The Hub's `X-Error-Message`, else the status text.
        message: String,
        /// What the user can do about it.
        hint: Option<String>,
    },
    /// The Hub could not be reached, or a transfer broke off more often than it is retried.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// A transfer broke off and could not be completed after retries; the part already
    /// received is kept and the next run resumes it.
    #[error(
        "downloading `{file}` from {url} failed after {attempts} attempts ({received} of {expected} bytes received, kept in `{}` to resume): {reason}",
        partial.display()
    )]
    Interrupted {
        /// The repository file.
        file: String,
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: usize,
        /// Bytes in the partial file.
        received: u64,
        /// The file's size.
        expected: u64,
        /// The partial file (`blobs/<etag>.incomplete`).
        partial: PathBuf,
        /// The last transport error.
        reason: String,
    },
    /// A downloaded file whose size or checksum is not what the Hub's headers announced; it was
    /// deleted, nothing was put in the cache.
    #[error(
        "downloaded `{file}` is corrupt ({what}: expected {expected}, got {got}); it was deleted and nothing was cached"
    )]
    Corrupt {
        /// The repository file.
        file: String,
        /// `size` or `sha256` / `git blob id`.
        what: &'static str,
        /// The value the Hub announced.
        expected: String,
        /// The value of the received bytes.
        got: String,
    },
    /// The Hub's answer lacked what the file protocol promises (a header, a JSON field).
    #[error("{url}: malformed answer: {reason}")]
    Malformed {
        /// The URL asked.
        url: String,
        /// What was missing or wrong.
        reason: String,
    },
    /// A file system operation in the cache failed.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Wraps an I/O error with its path.
pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
    let path = path.into();
    move |source| HubError::Io { path, source }
}
