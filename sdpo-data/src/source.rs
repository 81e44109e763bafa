//! Data paths to data files: what `train_file` / `eval_file` may name, and how a split is chosen.
//!
//! A data path is one of
//!
//! * a file: JSON/JSONL, Parquet or Arrow IPC, by extension (`.json`, `.jsonl`, `.ndjson`, each
//!   optionally `.gz`; `.parquet`, `.pq`; `.arrow`, `.ipc`, `.feather`), else by its first
//!   bytes (`PAR1` is Parquet, `ARROW1` or an IPC stream header is Arrow, the gzip magic is
//!   gzipped JSON, anything else JSON/JSONL);
//! * a glob (`data/train-*.parquet`): every matching file, in name order;
//! * a `datasets` `save_to_disk` directory: a `Dataset` (`state.json` lists its Arrow files) or
//!   a `DatasetDict` (`dataset_dict.json` lists its splits, each a `Dataset` directory);
//! * a dataset directory laid out as on the Hub: the data files under `data/` (or the directory
//!   itself when there is no `data/`), where a file belongs to split `S` when a path component
//!   is `S` or starts with `S` followed by `-`, `_`, `.`, a space or a digit
//!   (`data/train-00000-of-00003.parquet`, `test/0000.parquet`), as `datasets` infers splits;
//! * a directory of shards whose names carry no split: all its data files, in path order.
//!
//! Files are always returned in a fixed order (sorted paths, or a manifest's order), so the same
//! path gives the same pairs in the same order, and so the same content hash, on every run.

use std::path::{Path, PathBuf};

use crate::error::DataError;

/// How a data file is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// JSON array or JSONL (the layout is sniffed when reading).
    Json,
    /// Gzip-compressed JSON array or JSONL (`.jsonl.gz`, `.json.gz`).
    JsonGzip,
    /// Apache Parquet.
    Parquet,
    /// Arrow IPC, stream (what `datasets` writes) or file format.
    ArrowIpc,
}

impl FileKind {
    /// The kind's name in messages: `JSON`, `Parquet`, `Arrow IPC`.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Json => "JSON",
            FileKind::JsonGzip => "gzipped JSON",
            FileKind::Parquet => "Parquet",
            FileKind::ArrowIpc => "Arrow IPC",
        }
    }

    /// The kind a file name's extension says, if it says one.
    pub(crate) fn from_extension(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        if ext == "gz" {
            let inner = Path::new(path.file_stem()?);
            return match Self::from_extension(inner)? {
                FileKind::Json => Some(FileKind::JsonGzip),
                _ => None,
            };
        }
        match ext.as_str() {
            "json" | "jsonl" | "ndjson" => Some(FileKind::Json),
            "parquet" | "pq" => Some(FileKind::Parquet),
            "arrow" | "ipc" | "feather" | "arrows" => Some(FileKind::ArrowIpc),
            _ => None,
        }
    }

    /// The kind of a file without a known extension, from its first bytes.
    fn sniff(path: &Path) -> Result<Self, DataError> {
        use std::io::Read;
        let mut head = [0u8; 8];
        let mut file = std::fs::File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut filled = 0;
        while filled < head.len() {
            match file.read(&mut head[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(source) => {
                    return Err(DataError::Io {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        }
        let head = &head[..filled];
        Ok(if head.starts_with(b"PAR1") {
            FileKind::Parquet
        } else if head.starts_with(&[0x1f, 0x8b]) {
            FileKind::JsonGzip
        } else if head.starts_with(b"ARROW1") || head.starts_with(&[0xFF, 0xFF, 0xFF, 0xFF]) {
            FileKind::ArrowIpc
        } else {
            FileKind::Json
        })
    }

    /// The kind of `path`: its extension, else its first bytes.
    ///
    /// # Errors
    /// [`DataError::Io`] when the extension is unknown and the file cannot be read.
    pub fn of_file(path: &Path) -> Result<Self, DataError> {
        match Self::from_extension(path) {
            Some(kind) => Ok(kind),
            None => Self::sniff(path),
        }
    }
}

/// One file to read and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataFile {
    /// The file.
    pub path: PathBuf,
    /// How to decode it.
    pub kind: FileKind,
}

/// Files `datasets` keeps next to the data that are not data.
const METADATA_FILES: [&str; 4] = [
    "dataset_info.json",
    "state.json",
    "dataset_dict.json",
    "dataset_infos.json",
];

/// Split names `datasets` recognises in file names (its `SPLIT_KEYWORDS`), used only to tell a
/// directory of split-named files (where a missing split is an error) from a directory of
/// shards (where every file is data).
const KNOWN_SPLITS: [&str; 10] = [
    "train",
    "training",
    "test",
    "testing",
    "eval",
    "evaluation",
    "validation",
    "valid",
    "val",
    "dev",
];

/// The files `path` stands for, in reading order, choosing `split` in dataset directories.
///
/// # Errors
/// [`DataError::Io`] when the path does not exist or cannot be listed, and
/// [`DataError::DataSource`] when it leads to no data file (a glob matching nothing, no file for
/// `split`, a broken `save_to_disk` manifest, Parquet and JSON files mixed in one split).
pub fn resolve_data_files(path: &Path, split: &str) -> Result<Vec<DataFile>, DataError> {
    if path.is_dir() {
        return resolve_dir(path, split);
    }
    if path.is_file() {
        return Ok(vec![DataFile {
            path: path.to_path_buf(),
            kind: FileKind::of_file(path)?,
        }]);
    }
    let text = path.to_string_lossy();
    if text.contains(['*', '?', '[']) {
        return resolve_glob(path, split);
    }
    Err(DataError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
    })
}

fn resolve_glob(pattern: &Path, split: &str) -> Result<Vec<DataFile>, DataError> {
    let bad = |reason: String| DataError::DataSource {
        path: pattern.to_path_buf(),
        reason,
    };
    let text = pattern.to_string_lossy();
    let paths = glob::glob(&text).map_err(|e| bad(format!("not a valid glob: {e}")))?;
    let mut matched = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| DataError::Io {
            path: e.path().to_path_buf(),
            source: std::io::Error::new(e.error().kind(), e.error().to_string()),
        })?;
        if is_metadata(&path) {
            continue;
        }
        matched.push(path);
    }
    matched.sort();
    if matched.is_empty() {
        return Err(bad("the glob matches no file".into()));
    }
    let mut files = Vec::new();
    for path in matched {
        if path.is_dir() {
            files.extend(resolve_dir(&path, split)?);
        } else {
            let kind = FileKind::of_file(&path)?;
            files.push(DataFile { path, kind });
        }
    }
    Ok(files)
}

pub(crate) fn is_metadata(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| METADATA_FILES.contains(&n))
}

fn read_manifest(path: &Path) -> Result<serde_json::Value, DataError> {
    let text = crate::error::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| DataError::DataSource {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// The splits of a dataset directory as its layout names them: a `DatasetDict`'s splits, `train`
/// for a `save_to_disk` `Dataset`, the split names of Hub-layout files, or `train` for a
/// directory of shards whose names carry no split.
///
/// # Errors
/// As [`resolve_data_files`] on a directory.
pub(crate) fn dir_split_names(dir: &Path) -> Result<Vec<String>, DataError> {
    let dict = dir.join("dataset_dict.json");
    if dict.is_file() {
        let manifest = read_manifest(&dict)?;
        return manifest
            .get("splits")
            .and_then(|s| s.as_array())
            .map(|s| {
                s.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .ok_or_else(|| DataError::DataSource {
                path: dict.clone(),
                reason: "has no `splits` list".into(),
            });
    }
    if dir.join("state.json").is_file() {
        return Ok(vec!["train".into()]);
    }
    let (_, found) = hub_layout_files(dir)?;
    let mut names: Vec<String> = found.iter().map(|rel| split_name(rel)).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() || !names_a_split(&names) {
        return Ok(vec!["train".into()]);
    }
    Ok(names)
}

/// Whether some of `names` read as split names (`train`, `test_prefs`, `validation-0`, ...).
fn names_a_split(names: &[String]) -> bool {
    names.iter().any(|name| {
        name.split(['-', '_', '.', ' '])
            .any(|word| KNOWN_SPLITS.contains(&word.to_ascii_lowercase().as_str()))
    })
}

pub(crate) fn resolve_dir(dir: &Path, split: &str) -> Result<Vec<DataFile>, DataError> {
    // `DatasetDict.save_to_disk`: {"splits": ["train", "test"]}, one directory per split.
    let dict = dir.join("dataset_dict.json");
    if dict.is_file() {
        let manifest = read_manifest(&dict)?;
        let mut splits: Vec<&str> = manifest
            .get("splits")
            .and_then(|s| s.as_array())
            .map(|s| s.iter().filter_map(|v| v.as_str()).collect())
            .ok_or_else(|| DataError::DataSource {
                path: dict.clone(),
                reason: "has no `splits` list".into(),
            })?;
        if !splits.contains(&split) {
            splits.sort_unstable();
            return Err(DataError::DataSource {
                path: dir.to_path_buf(),
                reason: format!(
                    "no split `{split}` in this DatasetDict (splits: {}); set dataset_train_split / dataset_test_split",
                    splits.join(", ")
                ),
            });
        }
        return resolve_dir(&dir.join(split), split);
    }
    // `Dataset.save_to_disk`: state.json lists the Arrow files in order.
    let state = dir.join("state.json");
    if state.is_file() {
        let manifest = read_manifest(&state)?;
        let bad = |reason: String| DataError::DataSource {
            path: state.clone(),
            reason,
        };
        let Some(entries) = manifest.get("_data_files").and_then(|f| f.as_array()) else {
            return Err(bad("field `_data_files`: missing or not a list".into()));
        };
        if entries.is_empty() {
            return Err(bad("field `_data_files`: lists no data file".into()));
        }
        return entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let field = format!("field `_data_files[{i}].filename`");
                let Some(name) = entry.get("filename").and_then(|n| n.as_str()) else {
                    return Err(bad(format!("{field}: missing or not a string")));
                };
                if !is_plain_file_name(name) || !dir.join(name).is_file() {
                    return Err(bad(format!(
                        "{field}: `{name}` is not the name of a file in the dataset directory"
                    )));
                }
                Ok(DataFile {
                    path: dir.join(name),
                    kind: FileKind::ArrowIpc,
                })
            })
            .collect();
    }
    let (root, found) = hub_layout_files(dir)?;
    if found.is_empty() {
        return Err(DataError::DataSource {
            path: root,
            reason: "holds no data file (.parquet, .arrow, .jsonl, .json)".into(),
        });
    }
    let in_split: Vec<PathBuf> = found
        .iter()
        .filter(|rel| split_name(rel) == split)
        .cloned()
        .collect();
    let chosen = if !in_split.is_empty() {
        in_split
    } else {
        let mut names: Vec<String> = found.iter().map(|rel| split_name(rel)).collect();
        names.sort_unstable();
        names.dedup();
        if names_a_split(&names) {
            return Err(DataError::DataSource {
                path: dir.to_path_buf(),
                reason: format!(
                    "no data file for split `{split}` (splits found: {}); set dataset_train_split / dataset_test_split, or name the files with a glob",
                    names.join(", ")
                ),
            });
        }
        found
    };
    let mut files = Vec::with_capacity(chosen.len());
    for rel in chosen {
        let path = root.join(&rel);
        let kind = FileKind::of_file(&path)?;
        files.push(DataFile { path, kind });
    }
    let mut kinds: Vec<FileKind> = files.iter().map(|f| f.kind).collect();
    kinds.dedup();
    if kinds.len() > 1 {
        let mut names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() > 1 {
            return Err(DataError::DataSource {
                path: dir.to_path_buf(),
                reason: format!(
                    "holds {} files for split `{split}`, likely the same data twice; name the ones to read with a glob",
                    names.join(" and ")
                ),
            });
        }
    }
    Ok(files)
}

/// The Hub layout's root (`dir/data` when it exists, else `dir`) and its data files, relative
/// to the root, sorted.
fn hub_layout_files(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>), DataError> {
    let root = if dir.join("data").is_dir() {
        dir.join("data")
    } else {
        dir.to_path_buf()
    };
    let mut found = Vec::new();
    collect_data_files(&root, &root, 0, &mut found)?;
    found.sort();
    Ok((root, found))
}

/// Data files under `dir`, as paths relative to `root`; hidden entries (`.cache`, `.git`) and
/// `datasets` metadata are skipped; at most 4 directory levels.
fn collect_data_files(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || is_metadata(&path) {
            continue;
        }
        if path.is_dir() {
            if depth < 4 {
                collect_data_files(root, &path, depth + 1, out)?;
            }
        } else if FileKind::from_extension(&path).is_some() {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.push(rel);
        }
    }
    Ok(())
}

/// The split a data file belongs to, from its path relative to the dataset root, as the Hub
/// lays splits out: the first directory (`train/0000.parquet`), else the file name without its
/// extensions and shard suffix (`train_prefs-00000-of-00002.parquet`: `train_prefs`;
/// `test-0.jsonl`: `test`; `validation.parquet`: `validation`).
fn split_name(rel: &Path) -> String {
    let mut parts = rel.components().filter_map(|c| c.as_os_str().to_str());
    let first = parts.next().unwrap_or_default();
    if parts.next().is_some() {
        return first.to_string();
    }
    let stem = first.split('.').next().unwrap_or_default();
    // `-00000-of-00003`
    let stem = match stem.rfind("-of-") {
        Some(of) if stem[of + 4..].chars().all(|c| c.is_ascii_digit()) && of + 4 < stem.len() => {
            stem[..of].trim_end_matches(|c: char| c.is_ascii_digit())
        }
        _ => stem.trim_end_matches(|c: char| c.is_ascii_digit()),
    };
    stem.trim_end_matches(['-', '_', ' ']).to_string()
}

/// Whether `name` names a file directly inside a directory: not empty, not absolute, no
/// directory part (`save_to_disk` writes its shards next to `state.json`).
fn is_plain_file_name(name: &str) -> bool {
    let path = Path::new(name);
    let mut components = path.components();
    matches!(
        (components.next(), components.next()),
        (Some(std::path::Component::Normal(_)), None)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_follow_the_hub_layout() {
        for (path, split) in [
            ("train-00000-of-00003.parquet", "train"),
            ("train_prefs-00001-of-00002.parquet", "train_prefs"),
            ("train/0000.parquet", "train"),
            ("test/part-1.parquet", "test"),
            ("train.jsonl", "train"),
            ("validation.parquet", "validation"),
            ("test-0.arrow", "test"),
            ("test_1.json", "test"),
            ("shard-0003.parquet", "shard"),
            ("data.parquet", "data"),
        ] {
            assert_eq!(split_name(Path::new(path)), split, "{path}");
        }
    }
}
