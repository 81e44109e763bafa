//! Repositories laid out for the test Hub server, settings that point at it, and a progress
//! recorder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sdpo_hub::{DownloadProgress, HubSettings};

/// Writes repository `id` of `kind` (`models` or `datasets`) under `root` with `files`.
pub fn make_repo(root: &Path, kind: &str, id: &str, files: &[(&str, Vec<u8>)]) {
    for (path, bytes) in files {
        let file = root.join(kind).join(id).join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }
}

/// Bytes that differ at every position (so a misplaced range is caught by the checksum).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// A small model repository: configuration, LFS weights, tokenizer, and files a model does not
/// need (an ONNX export, the README).
pub fn tiny_model_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("config.json", br#"{"model_type": "llama"}"#.to_vec()),
        ("model.safetensors", pattern(300_000, 7)),
        ("tokenizer.json", br#"{"version": "1.0"}"#.to_vec()),
        ("onnx/model.onnx", pattern(1000, 3)),
        ("README.md", b"# tiny\n".to_vec()),
    ]
}

/// Settings for a cache at `cache` and the server at `endpoint`.
pub fn settings(cache: &Path, endpoint: &str, token: Option<&str>, offline: bool) -> HubSettings {
    let mut vars: HashMap<&str, String> = HashMap::new();
    vars.insert("HF_HUB_CACHE", cache.to_string_lossy().into_owned());
    vars.insert("HF_ENDPOINT", endpoint.to_string());
    vars.insert("HOME", "/nonexistent-home-for-tests".into());
    vars.insert("HF_HUB_DOWNLOAD_TIMEOUT", "5".into());
    if let Some(token) = token {
        vars.insert("HF_TOKEN", token.to_string());
    }
    if offline {
        vars.insert("HF_HUB_OFFLINE", "1".into());
    }
    HubSettings::from_lookup(|name| vars.get(name).cloned())
}

/// Records what a resolution reported.
#[derive(Default, Debug)]
pub struct Recorder {
    /// `(file, total, resumed_from)` per start.
    pub started: Vec<(String, u64, u64)>,
    /// Bytes reported.
    pub bytes: u64,
    /// Retries reported.
    pub retries: Vec<String>,
    /// Notes.
    pub notes: Vec<String>,
    /// Files completed.
    pub done: Vec<String>,
}

impl DownloadProgress for Recorder {
    fn file_started(&mut self, file: &str, total: u64, resumed_from: u64) {
        self.started.push((file.to_string(), total, resumed_from));
    }
    fn bytes(&mut self, bytes: u64) {
        self.bytes += bytes;
    }
    fn retrying(&mut self, file: &str, attempt: usize, reason: &str) {
        self.retries.push(format!("{file} #{attempt}: {reason}"));
    }
    fn file_done(&mut self, file: &str) {
        self.done.push(file.to_string());
    }
    fn note(&mut self, message: &str) {
        self.notes.push(message.to_string());
    }
}

/// Every file under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}
