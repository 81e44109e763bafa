//! One file into the cache: its metadata, then its bytes into `blobs/<etag>.incomplete`
//! (resumed from what an earlier, killed run left there), checked against the size and the
//! checksum the Hub announced, and only then renamed to `blobs/<etag>` and linked from the
//! snapshot. A broken transfer is retried from where it stopped; a corrupt file is deleted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::cache::RepoCache;
use crate::checksum::EtagHasher;
use crate::client::{FileMeta, HubClient};
use crate::error::{HubError, io_error};
use crate::progress::DownloadProgress;
use crate::repo::RepoRef;

/// Transfer attempts per file before giving up (`huggingface_hub` retries a broken transfer 5
/// times).
pub const MAX_ATTEMPTS: usize = 6;

/// How one transfer attempt ended, when it did not complete.
enum Stop {
    /// Worth another attempt from where it stopped (a broken connection, a 5xx, a timeout).
    Retry(String),
    /// Not worth another attempt.
    Fatal(HubError),
}

/// The file `file` of `repo` at `commit`, into `cache` and linked from `snapshots/<commit>/`.
pub fn download_file(
    client: &HubClient,
    cache: &RepoCache,
    repo: &RepoRef,
    commit: &str,
    file: &str,
    progress: &mut dyn DownloadProgress,
) -> Result<(), HubError> {
    let meta = client.file_meta(repo, commit, file)?;
    if !cache.blob(&meta.etag).is_file() {
        let _lock = cache.lock_blob(&meta.etag)?;
        if !cache.blob(&meta.etag).is_file() {
            fetch_blob(client, cache, repo, file, &meta, progress)?;
        }
    }
    cache.link_snapshot_file(commit, file, &meta.etag)?;
    progress.file_done(file);
    Ok(())
}

fn fetch_blob(
    client: &HubClient,
    cache: &RepoCache,
    repo: &RepoRef,
    file: &str,
    meta: &FileMeta,
    progress: &mut dyn DownloadProgress,
) -> Result<(), HubError> {
    let partial = cache.incomplete(&meta.etag);
    if let Some(parent) = partial.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match transfer(client, repo, file, meta, &partial, progress) {
            Ok(()) => break,
            Err(Stop::Fatal(err)) => return Err(err),
            Err(Stop::Retry(reason)) if attempt < MAX_ATTEMPTS => {
                progress.retrying(file, attempt + 1, &reason);
                std::thread::sleep(Duration::from_millis(200 * attempt as u64));
            }
            Err(Stop::Retry(reason)) => {
                return Err(HubError::Interrupted {
                    file: file.to_string(),
                    url: meta.data_url.clone(),
                    attempts: attempt,
                    received: file_len(&partial),
                    expected: meta.size,
                    partial,
                    reason,
                });
            }
        }
    }
    if let Err(err) = verify(&partial, file, meta) {
        let _ = std::fs::remove_file(&partial);
        return Err(err);
    }
    let blob = cache.blob(&meta.etag);
    std::fs::rename(&partial, &blob).map_err(io_error(&blob))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Empties the partial file (a fresh start).
fn restart(partial: &Path) -> Result<(), Stop> {
    File::create(partial)
        .map(|_| ())
        .map_err(|e| Stop::Fatal(io_error(partial)(e)))
}

/// One attempt: from the partial file's length to the end.
fn transfer(
    client: &HubClient,
    repo: &RepoRef,
    file: &str,
    meta: &FileMeta,
    partial: &Path,
    progress: &mut dyn DownloadProgress,
) -> Result<(), Stop> {
    let mut have = file_len(partial);
    if have > meta.size {
        restart(partial)?;
        have = 0;
    }
    if have == meta.size && have > 0 {
        return Ok(());
    }
    let response = match client.get_from(&meta.data_url, have, repo, file) {
        Ok(response) => response,
        Err(HubError::Http { status: 416, .. }) => {
            restart(partial)?;
            return Err(Stop::Retry("the server refused the resume range".into()));
        }
        Err(HubError::Http { status, .. }) if status == 429 || status >= 500 => {
            return Err(Stop::Retry(format!("the server answered {status}")));
        }
        Err(HubError::Unreachable { reason, .. }) => return Err(Stop::Retry(reason)),
        Err(other) => return Err(Stop::Fatal(other)),
    };
    if have > 0 {
        let resumed_at = response
            .header("Content-Range")
            .and_then(|r| r.trim().strip_prefix("bytes "))
            .and_then(|r| r.split('-').next())
            .and_then(|start| start.parse::<u64>().ok());
        if response.status() != 206 || resumed_at != Some(have) {
            // The server sent the file from its start (no range support): start over.
            restart(partial)?;
            have = 0;
        }
    }
    progress.file_started(file, meta.size, have);
    let mut out = OpenOptions::new()
        .append(true)
        .create(true)
        .open(partial)
        .map_err(|e| Stop::Fatal(io_error(partial)(e)))?;
    let mut reader = response.into_reader();
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = have;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => {
                let _ = out.flush();
                return Err(Stop::Retry(err.to_string()));
            }
        };
        received += n as u64;
        if received > meta.size {
            return Err(Stop::Fatal(HubError::Corrupt {
                file: file.to_string(),
                what: "size",
                expected: meta.size.to_string(),
                got: format!("more than {}", meta.size),
            }));
        }
        out.write_all(&buffer[..n])
            .map_err(|e| Stop::Fatal(io_error(partial)(e)))?;
        progress.bytes(n as u64);
    }
    out.flush().map_err(|e| Stop::Fatal(io_error(partial)(e)))?;
    if received < meta.size {
        return Err(Stop::Retry(format!(
            "the connection closed after {received} of {} bytes",
            meta.size
        )));
    }
    Ok(())
}

/// Checks the completed partial file's size and checksum against the Hub's headers.
fn verify(partial: &Path, file: &str, meta: &FileMeta) -> Result<(), HubError> {
    let size = file_len(partial);
    if size != meta.size {
        return Err(HubError::Corrupt {
            file: file.to_string(),
            what: "size",
            expected: meta.size.to_string(),
            got: size.to_string(),
        });
    }
    let mut hasher = EtagHasher::for_etag(&meta.etag, meta.size);
    let mut input = File::open(partial).map_err(io_error(partial))?;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = input.read(&mut buffer).map_err(io_error(partial))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    match hasher.finish() {
        Some((what, got)) if !got.eq_ignore_ascii_case(&meta.etag) => Err(HubError::Corrupt {
            file: file.to_string(),
            what,
            expected: meta.etag.clone(),
            got,
        }),
        _ => Ok(()),
    }
}
