//! The repositories the server offers: directories under its root, laid out as
//! `models/<owner>/<name>/...` and `datasets/<owner>/<name>/...`, each file described as the Hub
//! describes it (size, git blob id, SHA-256, whether Git LFS would store it).

use std::path::{Path, PathBuf};

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A model or a dataset repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// `models/` under the root, URLs without a prefix.
    Model,
    /// `datasets/` under the root, URLs under `datasets/`.
    Dataset,
}

impl RepoKind {
    /// The folder under the root (and the API path segment): `models` or `datasets`.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// Extensions the Hub's default `.gitattributes` stores in Git LFS.
const LFS_EXTENSIONS: [&str; 9] = [
    "safetensors",
    "parquet",
    "arrow",
    "bin",
    "gguf",
    "pt",
    "h5",
    "onnx",
    "msgpack",
];

/// One file of a repository, as the Hub's headers describe it.
#[derive(Debug, Clone)]
pub struct RepoFile {
    /// The path inside the repository, `/`-separated.
    pub path: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes, lowercase hex (an LFS file's ETag).
    pub sha256: String,
    /// The git blob id `sha1("blob <len>\0" + bytes)`, lowercase hex (a git file's ETag).
    pub git_oid: String,
    /// Whether the Hub would keep it in Git LFS (served through a redirect to a CDN URL).
    pub lfs: bool,
}

impl RepoFile {
    fn read(root: &Path, file: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(file)?;
        let path = file
            .strip_prefix(root)
            .unwrap_or(file)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let sha256 = hex(&Sha256::digest(&bytes));
        let mut git = Sha1::new();
        git.update(format!("blob {}\0", bytes.len()).as_bytes());
        git.update(&bytes);
        let git_oid = hex(&git.finalize());
        let lfs = Path::new(&path)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| LFS_EXTENSIONS.contains(&e));
        Ok(Self {
            path,
            bytes,
            sha256,
            git_oid,
            lfs,
        })
    }

    /// The ETag the Hub sends for this file: the SHA-256 for LFS files, the git blob id else.
    pub fn etag(&self) -> &str {
        if self.lfs {
            &self.sha256
        } else {
            &self.git_oid
        }
    }
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A repository read from disk: its files and the commit id derived from them.
#[derive(Debug, Clone)]
pub struct Repo {
    /// `owner/name`.
    pub id: String,
    /// A 40-hex commit id, a hash of every file's path and content (stable across runs).
    pub commit: String,
    /// Every file, sorted by path.
    pub files: Vec<RepoFile>,
}

impl Repo {
    /// The file at `path`, if the repository has it.
    pub fn file(&self, path: &str) -> Option<&RepoFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// The root directory of served repositories.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Serves the repositories under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The repository `id` of `kind`, read now (so tests may change files between requests).
    pub fn repo(&self, kind: RepoKind, id: &str) -> Option<Repo> {
        let (owner, name) = id.split_once('/')?;
        if [owner, name]
            .iter()
            .any(|part| part.is_empty() || part.starts_with('.') || part.contains(['/', '\\']))
        {
            return None;
        }
        let dir = self.root.join(kind.plural()).join(owner).join(name);
        if !dir.is_dir() {
            return None;
        }
        let mut paths = Vec::new();
        collect_files(&dir, &mut paths).ok()?;
        let mut files: Vec<RepoFile> = paths
            .iter()
            .filter_map(|p| RepoFile::read(&dir, p).ok())
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut commit = Sha1::new();
        for file in &files {
            commit.update(file.path.as_bytes());
            commit.update(b"\0");
            commit.update(file.sha256.as_bytes());
            commit.update(b"\n");
        }
        Some(Repo {
            id: id.to_string(),
            commit: hex(&commit.finalize()),
            files,
        })
    }

    /// Every repository's file whose SHA-256 is `sha256` (what a CDN URL names).
    pub fn file_by_sha256(&self, sha256: &str) -> Option<(Repo, RepoFile)> {
        for kind in [RepoKind::Model, RepoKind::Dataset] {
            let Ok(owners) = std::fs::read_dir(self.root.join(kind.plural())) else {
                continue;
            };
            for owner in owners.flatten() {
                let Ok(names) = std::fs::read_dir(owner.path()) else {
                    continue;
                };
                for name in names.flatten() {
                    let id = format!(
                        "{}/{}",
                        owner.file_name().to_string_lossy(),
                        name.file_name().to_string_lossy()
                    );
                    if let Some(repo) = self.repo(kind, &id)
                        && let Some(file) = repo.files.iter().find(|f| f.sha256 == sha256)
                    {
                        let file = file.clone();
                        return Some((repo, file));
                    }
                }
            }
        }
        None
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}
