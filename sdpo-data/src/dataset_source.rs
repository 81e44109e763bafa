//! A dataset (`dataset_name`, or a mixture entry's `path`) to the data files of each split, as
//! `datasets.load_dataset(path, name)` finds them in a local directory:
//!
//! 1. a `README.md` whose YAML front matter has `configs:`: the config `name` (else the default
//!    one: the only config, the one called `default`, or the one with `default: true`); its
//!    `data_files` patterns per split, relative to the directory (and its `data_dir`), matched
//!    with globs (`*`, `?`, `[...]`, `**`), hidden files and `README.md`-like metadata skipped,
//!    each pattern's matches in path order; without `data_files`, the layout under `data_dir`;
//! 2. otherwise the layout: `save_to_disk` directories, the Hub's `data/{split}-*` files, or a
//!    directory of shards (one `train` split); see [`crate::resolve_data_files`];
//! 3. a single data file is a dataset with one `train` split (an extension: `datasets` wants
//!    `load_dataset("json", data_files=...)` for that).

use std::path::{Path, PathBuf};

use crate::card::{CardConfig, default_config, read_card_configs};
use crate::error::DataError;
use crate::source::{DataFile, FileKind, dir_split_names, is_metadata, resolve_dir};

/// Files `datasets` never reads as data (its `FILES_TO_IGNORE`).
const FILES_TO_IGNORE: [&str; 6] = [
    "README.md",
    "config.json",
    "dataset_info.json",
    "dataset_infos.json",
    "dummy_data.zip",
    "dataset_dict.json",
];

/// The split names of the dataset at `path` with config `config` (see the module docs).
///
/// # Errors
/// [`DataError::DataSource`] for an unknown config, a malformed card, a pattern that matches no
/// file; [`DataError::Io`] when the path cannot be read.
pub fn dataset_split_names(path: &Path, config: Option<&str>) -> Result<Vec<String>, DataError> {
    from_card(path, split_names(path, config))
}

fn split_names(path: &Path, config: Option<&str>) -> Result<Vec<String>, DataError> {
    match layout(path, config)? {
        Layout::File(_) => Ok(vec!["train".into()]),
        Layout::Patterns { splits, .. } => Ok(splits.into_iter().map(|(s, _)| s).collect()),
        Layout::Inferred(dir) => dir_split_names(&dir),
    }
}

/// The data files of split `split` of the dataset at `path` with config `config`.
///
/// # Errors
/// As [`dataset_split_names`], and [`DataError::DataSource`] listing the splits when there is
/// no split `split`.
pub fn resolve_dataset(
    path: &Path,
    config: Option<&str>,
    split: &str,
) -> Result<Vec<DataFile>, DataError> {
    from_card(path, resolve_split(path, config, split))
}

/// `result`, with an error that does not name the dataset card named after it when the
/// dataset directory `path` has one whose configs chose the files: a path the card got wrong
/// is the card's error.
fn from_card<T>(path: &Path, result: Result<T, DataError>) -> Result<T, DataError> {
    result.map_err(|error| {
        let card = path.join(crate::card::README);
        let text = error.to_string();
        let card_chose = read_card_configs(path).is_ok_and(|configs| !configs.is_empty());
        if !card_chose || text.contains(&*card.to_string_lossy()) {
            return error;
        }
        DataError::DataSource {
            path: card,
            reason: format!("the data files its `configs` name: {text}"),
        }
    })
}

fn resolve_split(
    path: &Path,
    config: Option<&str>,
    split: &str,
) -> Result<Vec<DataFile>, DataError> {
    let no_split = |names: Vec<String>| DataError::DataSource {
        path: path.to_path_buf(),
        reason: format!(
            "no split `{split}` (splits: {}); set dataset_train_split / dataset_test_split",
            names.join(", ")
        ),
    };
    match layout(path, config)? {
        Layout::File(file) if split == "train" => Ok(vec![file]),
        Layout::File(_) => Err(no_split(vec!["train".into()])),
        Layout::Patterns { base, splits } => {
            let names: Vec<String> = splits.iter().map(|(s, _)| s.clone()).collect();
            let Some((_, patterns)) = splits.into_iter().find(|(s, _)| s == split) else {
                return Err(no_split(names));
            };
            let mut files = Vec::new();
            for pattern in &patterns {
                files.extend(match_pattern(&base, pattern)?);
            }
            Ok(files)
        }
        Layout::Inferred(dir) => {
            let names = dir_split_names(&dir)?;
            if names.iter().any(|n| n == split) || names == ["train"] && split == "train" {
                resolve_dir(&dir, split)
            } else {
                Err(no_split(names))
            }
        }
    }
}

/// Whether the dataset at `path` (config `config`) has split `split`.
///
/// # Errors
/// As [`dataset_split_names`].
pub fn dataset_has_split(
    path: &Path,
    config: Option<&str>,
    split: &str,
) -> Result<bool, DataError> {
    Ok(dataset_split_names(path, config)?
        .iter()
        .any(|s| s == split))
}

enum Layout {
    File(DataFile),
    Patterns {
        base: PathBuf,
        splits: Vec<(String, Vec<String>)>,
    },
    Inferred(PathBuf),
}

fn layout(path: &Path, config: Option<&str>) -> Result<Layout, DataError> {
    let bad = |reason: String| DataError::DataSource {
        path: path.to_path_buf(),
        reason,
    };
    if path.is_file() {
        if let Some(name) = config {
            return Err(bad(format!(
                "dataset_config `{name}` names a config, but this is a single data file"
            )));
        }
        return Ok(Layout::File(DataFile {
            path: path.to_path_buf(),
            kind: FileKind::of_file(path)?,
        }));
    }
    if !path.is_dir() {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        });
    }
    let configs = read_card_configs(path)?;
    let chosen: Option<&CardConfig> = match config {
        Some(name) => match configs.iter().find(|c| c.name == name) {
            Some(found) => Some(found),
            None if configs.is_empty() && name == "default" => None,
            None => {
                let mut names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
                if names.is_empty() {
                    names.push("default");
                }
                return Err(bad(format!(
                    "no config `{name}` (configs: {}); set dataset_config to one of them",
                    names.join(", ")
                )));
            }
        },
        None => match default_config(&configs).map_err(bad)? {
            Some(found) => Some(found),
            None if configs.is_empty() => None,
            None => {
                let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
                return Err(bad(format!(
                    "the README's configs name no default; set dataset_config to one of: {}",
                    names.join(", ")
                )));
            }
        },
    };
    let Some(chosen) = chosen else {
        return Ok(Layout::Inferred(path.to_path_buf()));
    };
    let base = match &chosen.data_dir {
        Some(dir) => path.join(dir),
        None => path.to_path_buf(),
    };
    match &chosen.data_files {
        Some(splits) => Ok(Layout::Patterns {
            base,
            splits: splits.clone(),
        }),
        None => Ok(Layout::Inferred(base)),
    }
}

/// The files `pattern` (relative to `base`, or absolute) matches, in path order; hidden files
/// and folders are skipped unless the pattern names them, and so is `datasets`' metadata.
///
/// # Errors
/// [`DataError::DataSource`] when the pattern is not a glob or matches no data file, or matches
/// a file of a kind that cannot be read.
pub(crate) fn match_pattern(base: &Path, pattern: &str) -> Result<Vec<DataFile>, DataError> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let text = full.to_string_lossy().into_owned();
    let bad = |reason: String| DataError::DataSource {
        path: full.clone(),
        reason,
    };
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let entries =
        glob::glob_with(&text, options).map_err(|e| bad(format!("not a valid pattern: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let found = entry.map_err(|e| DataError::Io {
            path: e.path().to_path_buf(),
            source: std::io::Error::new(e.error().kind(), e.error().to_string()),
        })?;
        let name = found
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !found.is_file() || FILES_TO_IGNORE.contains(&name.as_str()) || is_metadata(&found) {
            continue;
        }
        match FileKind::from_extension(&found) {
            Some(kind) => files.push(DataFile { path: found, kind }),
            None => {
                return Err(bad(format!(
                    "matches `{}`, which is not a data file sdpo-data reads (.jsonl, .json, \
                     their .gz, .parquet, .arrow)",
                    found.display()
                )));
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        return Err(bad("matches no data file".into()));
    }
    Ok(files)
}
