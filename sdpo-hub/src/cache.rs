//! The Hugging Face cache on disk, laid out exactly as `huggingface_hub` lays it out so Python
//! tools and sdpo-rs share it:
//!
//! ```text
//! <cache>/models--owner--name/
//!     refs/<revision>                  the commit id a branch or tag pointed at
//!     snapshots/<commit>/<file>        relative symlinks into blobs/
//!     blobs/<etag>                     file contents, named by their ETag
//!     blobs/<etag>.incomplete          a download in progress (resumed from its length)
//! <cache>/.locks/models--owner--name/<etag>.lock
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{HubError, io_error};
use crate::repo::{RepoRef, is_commit_id};

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    cache_dir: PathBuf,
    folder: String,
}

impl RepoCache {
    /// The folder of `repo` in the cache at `cache_dir`.
    pub fn new(cache_dir: &Path, repo: &RepoRef) -> Self {
        Self {
            cache_dir: cache_dir.to_path_buf(),
            folder: repo.folder_name(),
        }
    }

    /// `<cache>/<models--owner--name>`.
    pub fn dir(&self) -> PathBuf {
        self.cache_dir.join(&self.folder)
    }

    /// The commit a revision names: itself when it is a commit id, else what `refs/<revision>`
    /// holds.
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        if is_commit_id(revision) {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.dir().join("refs").join(revision)).ok()?;
        let commit = text.trim();
        is_commit_id(commit).then(|| commit.to_string())
    }

    /// `snapshots/<commit>`.
    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.dir().join("snapshots").join(commit)
    }

    /// `blobs/<etag>`.
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir().join("blobs").join(etag)
    }

    /// `blobs/<etag>.incomplete`, the partial download `huggingface_hub` resumes too.
    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.dir().join("blobs").join(format!("{etag}.incomplete"))
    }

    /// Records that `revision` (a branch or tag) points at `commit`; nothing for a commit id.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if is_commit_id(revision) {
            return Ok(());
        }
        let path = self.dir().join("refs").join(revision);
        if std::fs::read_to_string(&path).is_ok_and(|old| old.trim() == commit) {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        std::fs::write(&path, commit).map_err(io_error(&path))
    }

    /// Takes the lock `huggingface_hub` takes before writing a blob (an exclusive lock on
    /// `<cache>/.locks/<folder>/<etag>.lock`), held until the returned file is dropped.
    pub fn lock_blob(&self, etag: &str) -> Result<File, HubError> {
        let dir = self.cache_dir.join(".locks").join(&self.folder);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let path = dir.join(format!("{etag}.lock"));
        let file = File::create(&path).map_err(io_error(&path))?;
        file.lock().map_err(io_error(&path))?;
        Ok(file)
    }

    /// Points `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative symlink (a copy
    /// where the file system has no symlinks), as `huggingface_hub` does.
    pub fn link_snapshot_file(&self, commit: &str, file: &str, etag: &str) -> Result<(), HubError> {
        let pointer = self.snapshot_dir(commit).join(file);
        let parent = pointer.parent().unwrap_or(&pointer).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
        let depth = file.split('/').count() + 1;
        let relative: PathBuf = std::iter::repeat_n("..", depth)
            .collect::<PathBuf>()
            .join("blobs")
            .join(etag);
        if std::fs::symlink_metadata(&pointer).is_ok() {
            std::fs::remove_file(&pointer).map_err(io_error(&pointer))?;
        }
        link_or_copy(&relative, &self.blob(etag), &pointer)
    }
}

#[cfg(unix)]
fn link_or_copy(relative: &Path, blob: &Path, pointer: &Path) -> Result<(), HubError> {
    match std::os::unix::fs::symlink(relative, pointer) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::copy(blob, pointer)
            .map(|_| ())
            .map_err(io_error(pointer)),
    }
}

#[cfg(not(unix))]
fn link_or_copy(_relative: &Path, blob: &Path, pointer: &Path) -> Result<(), HubError> {
    std::fs::copy(blob, pointer)
        .map(|_| ())
        .map_err(io_error(pointer))
}
