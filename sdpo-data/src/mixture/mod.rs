//! [`DatasetMixture`]: TRL's `datasets:` mixture (`DatasetMixtureConfig` and `get_dataset`):
//! each entry is loaded as `datasets.load_dataset(path, name, data_dir, data_files, split)`,
//! narrowed to `columns`, cut to its `fraction` of the mixture, and the entries are concatenated;
//! with `test_split_size` a share of the result is held out as the `test` split.
//!
//! `split` takes `datasets`' split syntax: `train`, `train+test`, `train[:1000]`,
//! `train[10%:20%]`. The held-out test records are drawn with a fixed seed
//! ([`MIXTURE_SPLIT_SEED`]), so every run holds out the same ones (TRL's `train_test_split` is
//! unseeded and draws differently on every run).

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::dataset_source::{match_pattern, resolve_dataset};
use crate::error::DataError;
use crate::reader::{RecordReader, read_file};
use crate::record::{ColumnNames, PreferenceRecord, TEMPLATE_FIELDS};
use crate::source::DataFile;
use split_spec::{SplitPart, parse_split};

mod split_spec;

/// The seed of the held-out test split of a mixture.
pub const MIXTURE_SPLIT_SEED: u64 = 42;

/// `data_files` of a mixture entry: one pattern, a list, or patterns per split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DataFilesArg {
    /// One pattern (the `train` split).
    One(String),
    /// Several patterns (the `train` split).
    Many(Vec<String>),
    /// Patterns per split.
    Splits(std::collections::BTreeMap<String, PatternList>),
}

/// One pattern or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PatternList {
    /// One pattern.
    One(String),
    /// Several patterns.
    Many(Vec<String>),
}

impl PatternList {
    fn patterns(&self) -> Vec<String> {
        match self {
            PatternList::One(p) => vec![p.clone()],
            PatternList::Many(ps) => ps.clone(),
        }
    }
}

/// One dataset of a mixture, with TRL's `DatasetConfig` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureEntry {
    /// The dataset: a local directory or data file (Hub ids are resolved before this crate).
    pub path: String,
    /// The config (`README.md` `configs:`), as `dataset_config` for `dataset_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A folder under `path` the data files are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Data file patterns relative to `path` (then the card's configs are not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_files: Option<DataFilesArg>,
    /// The split, in `datasets`' split syntax. Default `train`.
    #[serde(default = "default_split")]
    pub split: String,
    /// The columns kept (`select_columns`); unset: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Share of the mixture (set for all entries or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
}

fn default_split() -> String {
    "train".into()
}

/// A validated mixture.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetMixture {
    entries: Vec<MixtureEntry>,
    splits: Vec<Vec<SplitPart>>,
    test_split_size: Option<f64>,
}

impl DatasetMixture {
    /// Checks the entries (at least one; `fraction` on all or none, each >= 0 with a positive
    /// sum; valid split expressions) and `test_split_size` (a fraction in `(0, 1)` or a whole
    /// number >= 1).
    ///
    /// # Errors
    /// [`DataError::Config`] naming the entry and what is wrong.
    pub fn new(
        entries: Vec<MixtureEntry>,
        test_split_size: Option<f64>,
    ) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::Config {
            field: "datasets",
            reason,
        };
        if entries.is_empty() {
            return Err(bad("lists no dataset".into()));
        }
        let with_fraction = entries.iter().filter(|e| e.fraction.is_some()).count();
        if with_fraction != 0 && with_fraction != entries.len() {
            return Err(bad(
                "`fraction` must be set for either all datasets in the mixture or none of them"
                    .into(),
            ));
        }
        if with_fraction > 0 {
            let fractions: Vec<f64> = entries.iter().filter_map(|e| e.fraction).collect();
            if fractions.iter().any(|f| !f.is_finite() || *f < 0.0)
                || fractions.iter().sum::<f64>() <= 0.0
            {
                return Err(bad("each `fraction` must be >= 0, and their sum > 0".into()));
            }
        }
        let mut splits = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            if entry.path.trim().is_empty() {
                return Err(bad(format!("datasets[{i}]: `path` is empty")));
            }
            splits.push(
                parse_split(&entry.split).map_err(|e| bad(format!("datasets[{i}]: split {e}")))?,
            );
            if let Some(columns) = &entry.columns
                && columns.is_empty()
            {
                return Err(bad(format!("datasets[{i}]: `columns` is empty")));
            }
        }
        if let Some(size) = test_split_size {
            let whole = size >= 1.0 && size.fract() == 0.0;
            if !(size.is_finite() && (size > 0.0 && size < 1.0 || whole)) {
                return Err(DataError::Config {
                    field: "test_split_size",
                    reason: format!(
                        "must be a fraction in (0, 1) or a whole number >= 1, got {size}"
                    ),
                });
            }
        }
        Ok(Self {
            entries,
            splits,
            test_split_size,
        })
    }

    /// The splits the mixture has: `train`, and `test` with `test_split_size`.
    pub fn split_names(&self) -> Vec<&'static str> {
        if self.test_split_size.is_some() {
            vec!["train", "test"]
        } else {
            vec!["train"]
        }
    }

    /// The entries.
    pub fn entries(&self) -> &[MixtureEntry] {
        &self.entries
    }

    /// Hands every record of split `split` to `on_record`, entry after entry, and returns the
    /// files read.
    ///
    /// # Errors
    /// [`DataError::Config`] for a split the mixture lacks, a column selection without the
    /// chosen/rejected columns, or a test split that leaves no record on one side; reading
    /// errors of the entries.
    pub fn read(
        &self,
        split: &str,
        columns: &ColumnNames,
        on_record: &mut RecordReader<'_>,
    ) -> Result<Vec<PathBuf>, DataError> {
        if !self.split_names().contains(&split) {
            return Err(DataError::Config {
                field: "datasets",
                reason: format!(
                    "the mixture has no split `{split}` (splits: {}); set test_split_size to hold out a test split",
                    self.split_names().join(", ")
                ),
            });
        }
        let plans: Vec<EntryPlan> = self
            .entries
            .iter()
            .zip(&self.splits)
            .enumerate()
            .map(|(i, (entry, parts))| EntryPlan::new(i, entry, parts, columns))
            .collect::<Result<_, _>>()?;
        let keep = self.rows_kept(&plans)?;
        let held_out = match self.test_split_size {
            Some(_) => self.held_out(keep.iter().sum())?,
            None => None,
        };
        let mut files = Vec::new();
        let mut global = 0usize;
        for (plan, keep) in plans.iter().zip(keep) {
            let mut taken = 0usize;
            for (part_files, range) in &plan.parts {
                let mut row = 0usize;
                let mut forward = |record: Result<PreferenceRecord, DataError>| {
                    let index = row;
                    row += 1;
                    if index < range.0 || index >= range.1 || taken >= keep {
                        return Ok(());
                    }
                    taken += 1;
                    let is_test = held_out.as_ref().is_some_and(|h| h[global]);
                    global += 1;
                    if is_test == (split == "test") {
                        on_record(record)
                    } else {
                        Ok(())
                    }
                };
                for file in part_files {
                    read_file(file, &plan.columns, &mut forward)?;
                    files.push(file.path.clone());
                }
            }
        }
        Ok(files)
    }

    /// Rows each entry contributes: all of its (sliced) split, or with fractions the first
    /// `round(weight * total)` rows, `total` the largest mixture size that oversamples nothing.
    fn rows_kept(&self, plans: &[EntryPlan]) -> Result<Vec<usize>, DataError> {
        let fractions_set = self.entries.iter().any(|e| e.fraction.is_some());
        if !fractions_set && self.test_split_size.is_none() {
            return Ok(vec![usize::MAX; plans.len()]);
        }
        let lengths: Vec<usize> = plans.iter().map(EntryPlan::len).collect::<Result<_, _>>()?;
        let fractions: Vec<f64> = self.entries.iter().filter_map(|e| e.fraction).collect();
        if fractions.is_empty() {
            return Ok(lengths);
        }
        let sum: f64 = fractions.iter().sum();
        let weights: Vec<f64> = fractions.iter().map(|f| f / sum).collect();
        let total = lengths
            .iter()
            .zip(&weights)
            .filter(|(_, w)| **w > 0.0)
            .map(|(len, w)| *len as f64 / w)
            .fold(f64::INFINITY, f64::min);
        Ok(weights
            .iter()
            .map(|w| (w * total).round_ties_even() as usize)
            .collect())
    }

    /// With `test_split_size`, which of the `total` mixed records are held out.
    fn held_out(&self, total: usize) -> Result<Option<Vec<bool>>, DataError> {
        let Some(size) = self.test_split_size else {
            return Ok(None);
        };
        let n_test = if size < 1.0 {
            (size * total as f64).ceil() as usize
        } else {
            size as usize
        };
        if n_test == 0 || n_test >= total {
            return Err(DataError::Config {
                field: "test_split_size",
                reason: format!(
                    "holds out {n_test} of the mixture's {total} records, leaving an empty split"
                ),
            });
        }
        let mut order: Vec<usize> = (0..total).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            MIXTURE_SPLIT_SEED,
        ));
        let mut held = vec![false; total];
        for &i in &order[..n_test] {
            held[i] = true;
        }
        Ok(Some(held))
    }
}

/// One entry, resolved: its files per split part with the row range, and its columns.
struct EntryPlan {
    parts: Vec<(Vec<DataFile>, (usize, usize))>,
    columns: ColumnNames,
}

impl EntryPlan {
    fn new(
        index: usize,
        entry: &MixtureEntry,
        parts: &[SplitPart],
        columns: &ColumnNames,
    ) -> Result<Self, DataError> {
        let columns = select_columns(index, entry, columns)?;
        let root = match &entry.data_dir {
            Some(dir) => Path::new(&entry.path).join(dir),
            None => PathBuf::from(&entry.path),
        };
        let mut resolved = Vec::with_capacity(parts.len());
        for part in parts {
            let files = match &entry.data_files {
                Some(arg) => files_from_patterns(&root, arg, &part.name)?,
                None if entry.data_dir.is_some() => resolve_dataset(&root, None, &part.name)?,
                None => resolve_dataset(Path::new(&entry.path), entry.name.as_deref(), &part.name)?,
            };
            let range = match (part.start, part.end) {
                (None, None) => (0, usize::MAX),
                (start, end) => {
                    let len = count_rows(&files, &columns)?;
                    (
                        start.map_or(0, |b| b.resolve(len)),
                        end.map_or(len, |b| b.resolve(len)),
                    )
                }
            };
            resolved.push((files, range));
        }
        Ok(Self {
            parts: resolved,
            columns,
        })
    }

    /// Rows of the entry after slicing.
    fn len(&self) -> Result<usize, DataError> {
        let mut total = 0;
        for (files, (start, end)) in &self.parts {
            let rows = if *end == usize::MAX {
                count_rows(files, &self.columns)?
            } else {
                *end
            };
            total += rows.min(*end).saturating_sub(*start);
        }
        Ok(total)
    }
}

/// The column mapping narrowed to an entry's `columns` (`select_columns`): the prompt and the
/// template fields only when selected; chosen and rejected must be.
fn select_columns(
    index: usize,
    entry: &MixtureEntry,
    columns: &ColumnNames,
) -> Result<ColumnNames, DataError> {
    let Some(selected) = &entry.columns else {
        return Ok(columns.clone());
    };
    for needed in [&columns.chosen, &columns.rejected] {
        if !selected.contains(needed) {
            return Err(DataError::Config {
                field: "datasets",
                reason: format!("datasets[{index}]: `columns` leaves out `{needed}`"),
            });
        }
    }
    let mut narrowed = columns.clone();
    if !selected.contains(&columns.prompt) {
        narrowed.prompt = String::new();
    }
    narrowed.template_fields = TEMPLATE_FIELDS
        .iter()
        .filter(|f| {
            columns.template_fields.iter().any(|c| c == *f) && selected.iter().any(|c| c == *f)
        })
        .map(|f| f.to_string())
        .collect();
    Ok(narrowed)
}

fn files_from_patterns(
    root: &Path,
    arg: &DataFilesArg,
    split: &str,
) -> Result<Vec<DataFile>, DataError> {
    let patterns = match arg {
        DataFilesArg::One(p) if split == "train" => vec![p.clone()],
        DataFilesArg::Many(ps) if split == "train" => ps.clone(),
        DataFilesArg::Splits(map) if map.contains_key(split) => map[split].patterns(),
        _ => {
            return Err(DataError::DataSource {
                path: root.to_path_buf(),
                reason: format!("`data_files` names no files for split `{split}`"),
            });
        }
    };
    let mut files = Vec::new();
    for pattern in &patterns {
        files.extend(match_pattern(root, pattern)?);
    }
    Ok(files)
}

/// Rows in `files` (valid or not: an invalid record is still a row of the dataset).
fn count_rows(files: &[DataFile], columns: &ColumnNames) -> Result<usize, DataError> {
    let mut rows = 0usize;
    for file in files {
        read_file(file, columns, &mut |_record: Result<
            PreferenceRecord,
            DataError,
        >| {
            rows += 1;
            Ok(())
        })?;
    }
    Ok(rows)
}
