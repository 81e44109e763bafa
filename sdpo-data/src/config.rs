//! [`DataConfig`]: the data options, with TRL's names and defaults (TRL 0.28 `DPOConfig`).

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::record::ColumnNames;

/// Which end of a too-long sequence survives truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncationMode {
    /// Keep the end: a long prompt loses its first tokens, and a sequence longer than
    /// `max_length` loses tokens from its start (the prompt first). TRL's default.
    #[default]
    KeepEnd,
    /// Keep the start: a long prompt loses its last tokens, and a sequence longer than
    /// `max_length` loses tokens from its end (the completion first).
    KeepStart,
}

impl TruncationMode {
    /// The TRL spelling: `"keep_end"` or `"keep_start"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TruncationMode::KeepEnd => "keep_end",
            TruncationMode::KeepStart => "keep_start",
        }
    }
}

/// Options for reading, tokenizing, truncating and collating preference data.
///
/// Deserializes from the same keys as TRL's `DPOConfig`; unknown keys are rejected so a typo
/// does not silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Maximum length of prompt + completion, per sequence (`None`: no limit). Applied when a
    /// batch is collated, with `truncation_mode`. Default 1024.
    pub max_length: Option<usize>,
    /// Maximum prompt length, applied at tokenization with `truncation_mode` (`None`: no limit).
    /// Default 512 (TRL's historical default; TRL 0.28 deprecates it).
    pub max_prompt_length: Option<usize>,
    /// Which end survives truncation. Default `keep_end`.
    pub truncation_mode: TruncationMode,
    /// Pad the batch length up to a multiple of this (`None`: to the longest sequence).
    pub pad_to_multiple_of: Option<usize>,
    /// Skip records that fail validation, rendering, tokenization or truncation instead of
    /// stopping at the first one; skipped records are counted in the report. Default `false`.
    pub skip_invalid_records: bool,
    /// How many skip/drop reasons the report keeps verbatim. Default 10.
    pub max_reported_reasons: usize,
    /// The column (JSON key) holding the prompt. Default `"prompt"`. When a file has no such
    /// column (or key), the prompt is extracted from `chosen`/`rejected` (implicit prompt).
    pub prompt_column: String,
    /// The column (JSON key) holding the preferred completion. Default `"chosen"`.
    pub chosen_column: String,
    /// The column (JSON key) holding the dispreferred completion. Default `"rejected"`.
    pub rejected_column: String,
    /// The split read from a dataset directory by `train_file` (Hub layout
    /// `data/train-*.parquet`, or a `save_to_disk` `DatasetDict`). Default `"train"`, as TRL's
    /// `dataset_train_split`.
    pub dataset_train_split: String,
    /// The split read from a dataset directory by `eval_file`. Default `"test"`, as TRL's
    /// `dataset_test_split`.
    pub dataset_test_split: String,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            max_length: Some(1024),
            max_prompt_length: Some(512),
            truncation_mode: TruncationMode::KeepEnd,
            pad_to_multiple_of: None,
            skip_invalid_records: false,
            max_reported_reasons: 10,
            prompt_column: "prompt".into(),
            chosen_column: "chosen".into(),
            rejected_column: "rejected".into(),
            dataset_train_split: "train".into(),
            dataset_test_split: "test".into(),
        }
    }
}

impl DataConfig {
    /// The column mapping (`prompt_column`, `chosen_column`, `rejected_column`).
    pub fn columns(&self) -> ColumnNames {
        ColumnNames {
            prompt: self.prompt_column.clone(),
            chosen: self.chosen_column.clone(),
            rejected: self.rejected_column.clone(),
        }
    }

    /// Checks the values are usable: lengths and `pad_to_multiple_of` must be at least 1,
    /// column names non-empty and distinct, split names non-empty words.
    pub fn validate(&self) -> Result<(), DataError> {
        for (field, name) in [
            ("prompt_column", &self.prompt_column),
            ("chosen_column", &self.chosen_column),
            ("rejected_column", &self.rejected_column),
        ] {
            if name.is_empty() {
                return Err(DataError::Config {
                    field,
                    reason: "must name a column".into(),
                });
            }
        }
        if self.chosen_column == self.rejected_column
            || self.prompt_column == self.chosen_column
            || self.prompt_column == self.rejected_column
        {
            return Err(DataError::Config {
                field: "chosen_column",
                reason: format!(
                    "prompt_column `{}`, chosen_column `{}` and rejected_column `{}` must be three different columns",
                    self.prompt_column, self.chosen_column, self.rejected_column
                ),
            });
        }
        for (field, name) in [
            ("dataset_train_split", &self.dataset_train_split),
            ("dataset_test_split", &self.dataset_test_split),
        ] {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(DataError::Config {
                    field,
                    reason: format!(
                        "`{name}` is not a split name (letters, digits, `_`, `-`, `.`)"
                    ),
                });
            }
        }
        if self.max_length == Some(0) {
            return Err(DataError::Config {
                field: "max_length",
                reason: "must be at least 1 (or null for no limit)".into(),
            });
        }
        if self.max_prompt_length == Some(0) {
            return Err(DataError::Config {
                field: "max_prompt_length",
                reason: "must be at least 1 (or null for no limit)".into(),
            });
        }
        if self.pad_to_multiple_of == Some(0) {
            return Err(DataError::Config {
                field: "pad_to_multiple_of",
                reason: "must be at least 1 (or null)".into(),
            });
        }
        Ok(())
    }
}
