//! How a download reports progress. The library draws nothing: the `sdpo` command line draws
//! a bar from these calls.

/// Receives the progress of the files a resolution downloads.
pub trait DownloadProgress {
    /// A file starts (or resumes): its repository path, its size, and the bytes already on
    /// disk from an earlier, interrupted download.
    fn file_started(&mut self, _file: &str, _total_bytes: u64, _resumed_from: u64) {}
    /// `bytes` more bytes of the current file arrived.
    fn bytes(&mut self, _bytes: u64) {}
    /// A transfer broke off and is retried from where it stopped.
    fn retrying(&mut self, _file: &str, _attempt: usize, _reason: &str) {}
    /// The current file is complete and verified.
    fn file_done(&mut self, _file: &str) {}
    /// Something the user should know (a fallback to the cache, a cached copy used).
    fn note(&mut self, _message: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl DownloadProgress for NoProgress {}
