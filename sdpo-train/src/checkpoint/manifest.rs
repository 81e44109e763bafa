//! The checkpoint manifest: the SHA-256 of every file of a checkpoint, written as the last file
//! before the checkpoint is committed by its atomic rename. Resume and evaluation verify it, so a
//! flipped byte or a truncated file is refused by name instead of training on silently.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use sdpo_run::MANIFEST_FILE;

use crate::error::{TrainError, io};

/// `manifest.json`: file name -> size and SHA-256 (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format.
    pub format: String,
    /// Every other file of the checkpoint directory.
    pub files: BTreeMap<String, FileDigest>,
}

/// Size and SHA-256 of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// What [`verify_manifest`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestStatus {
    /// Every file matches.
    Verified,
    /// The checkpoint predates manifests; nothing could be checked.
    Missing,
}

const FORMAT: &str = "sdpo-rs checkpoint manifest v1";

fn digest(path: &Path) -> Result<FileDigest, TrainError> {
    let mut file = std::fs::File::open(path).map_err(io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(FileDigest { size, sha256 })
}

/// The regular files of `dir` other than the manifest, by name.
fn files(dir: &Path) -> Result<Vec<String>, TrainError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != MANIFEST_FILE && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Hashes every file of `dir` and writes `dir/manifest.json`.
pub fn write_manifest(dir: &Path) -> Result<(), TrainError> {
    let mut manifest = Manifest {
        format: FORMAT.into(),
        files: BTreeMap::new(),
    };
    for name in files(dir)? {
        manifest
            .files
            .insert(name.clone(), digest(&dir.join(&name))?);
    }
    crate::checkpoint::write_json(&dir.join(MANIFEST_FILE), &manifest)
}

/// Checks every file listed in `dir/manifest.json` (files added later are not checked).
pub fn verify_manifest(dir: &Path) -> Result<ManifestStatus, TrainError> {
    let path = dir.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(ManifestStatus::Missing);
    }
    let corrupt = |file: &str, reason: String| TrainError::CorruptCheckpoint {
        checkpoint: dir.to_path_buf(),
        file: file.to_string(),
        reason,
    };
    let bytes = std::fs::read(&path).map_err(io("read", &path))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(MANIFEST_FILE, format!("is malformed: {e}")))?;
    for (name, expected) in &manifest.files {
        // Only files inside the checkpoint: a manifest must not make us read (or block on)
        // anything else on the machine.
        let inside = !name.is_empty()
            && Path::new(name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(corrupt(
                name,
                format!("{MANIFEST_FILE} lists a path outside the checkpoint directory"),
            ));
        }
        let file = dir.join(name);
        if !file.is_file() {
            return Err(corrupt(name, "is missing".into()));
        }
        let actual = digest(&file)?;
        if actual.size != expected.size {
            return Err(corrupt(
                name,
                format!(
                    "has {} bytes, the manifest says {}",
                    actual.size, expected.size
                ),
            ));
        }
        if actual.sha256 != expected.sha256 {
            return Err(corrupt(
                name,
                format!(
                    "has SHA-256 {}, the manifest says {}",
                    actual.sha256, expected.sha256
                ),
            ));
        }
    }
    Ok(ManifestStatus::Verified)
}
