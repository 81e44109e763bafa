//! [`DataConfig`]: the data options, with TRL's names; their defaults follow the TRL version
//! named by `trl_semantics` ([`TrlPipeline`]).

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::DataError;
use crate::mixture::DatasetMixture;
use crate::record::ColumnNames;

/// Which TRL version's data pipeline to reproduce (the `trl_semantics` key, shared with the
/// loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TrlPipeline {
    /// TRL 1.x (`DPOTrainer._prepare_dataset` and `DataCollatorForPreference` of TRL 1.16):
    /// the prompt, prompt + chosen and prompt + rejected tokenized as whole texts and split
    /// where they stop agreeing, `keep_start` by default, no `max_prompt_length`, records whose
    /// prompt fills `max_length` dropped. The default.
    #[default]
    #[serde(rename = "1.x")]
    V1,
    /// TRL 0.28: prompt and completions tokenized apart, `max_prompt_length` (512) and
    /// `keep_end` by default.
    #[serde(rename = "0.28")]
    V0_28,
}

impl TrlPipeline {
    /// The configuration value: `"1.x"` or `"0.28"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "1.x",
            Self::V0_28 => "0.28",
        }
    }

    /// The `truncation_mode` when none is set: `keep_start` (1.x) or `keep_end` (0.28).
    pub fn default_truncation_mode(self) -> TruncationMode {
        match self {
            Self::V1 => TruncationMode::KeepStart,
            Self::V0_28 => TruncationMode::KeepEnd,
        }
    }
}

/// The least default of [`DataConfig::max_text_bytes`]: 512 KiB, about 110,000 tokens of
/// English. The tokenizer spends hundreds of bytes of memory per token (the pre-tokenized
/// pieces, offsets and token strings), so an unbounded text could take gigabytes only to be
/// truncated to `max_length`.
pub const MIN_DEFAULT_MAX_TEXT_BYTES: usize = 512 << 10;

/// Text bytes per token of `max_length` in the default of [`DataConfig::max_text_bytes`]:
/// several times the 3 to 5 bytes a token of English or code takes, so a record `max_length`
/// keeps is never refused for its size.
pub const DEFAULT_TEXT_BYTES_PER_TOKEN: usize = 16;

/// TRL 0.28's `max_prompt_length` default.
pub const DEFAULT_MAX_PROMPT_LENGTH_V0_28: usize = 512;

/// Which end of a too-long sequence survives truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncationMode {
    /// Keep the end: a sequence longer than `max_length` loses tokens from its start (the
    /// prompt first); under TRL 0.28 a long prompt loses its first tokens.
    #[default]
    KeepEnd,
    /// Keep the start: a sequence longer than `max_length` loses tokens from its end (the
    /// completion first); under TRL 0.28 a long prompt loses its last tokens.
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

/// `Some(value)` for a present key, `null` included: `absent -> None`, `null -> Some(None)`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<usize>>, D::Error> {
    Option::<usize>::deserialize(deserializer).map(Some)
}

/// Options for reading, tokenizing, truncating and collating preference data.
///
/// Deserializes from the same keys as TRL's `DPOConfig` and `ScriptArguments`; unknown keys are
/// rejected so a typo does not silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Whose pipeline to reproduce: `"1.x"` (TRL 1.16, the default) or `"0.28"`. In a training
    /// configuration this is the same `trl_semantics` key that picks the loss.
    pub trl_semantics: TrlPipeline,
    /// Maximum length of prompt + completion, per sequence (`None`: no limit). Applied when a
    /// batch is collated, with the truncation mode. Default 1024.
    pub max_length: Option<usize>,
    /// TRL 0.28 only: maximum prompt length, applied at tokenization with the truncation mode.
    /// Unset (`None`): 512 under `"0.28"`; `Some(None)`: no limit (a `null`, or `0` in TOML).
    /// TRL 1.x has no such option, and setting it under `"1.x"` is an error.
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub max_prompt_length: Option<Option<usize>>,
    /// Which end survives truncation; unset: `keep_start` under `"1.x"`, `keep_end` under
    /// `"0.28"` (each version's default). Read it through [`Self::truncation_mode`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncation_mode: Option<TruncationMode>,
    /// Pad the batch length up to a multiple of this (`None`: to the longest sequence).
    pub pad_to_multiple_of: Option<usize>,
    /// Skip records that fail validation, rendering or tokenization instead of stopping at the
    /// first one; skipped records are counted in the report. Default `false`.
    pub skip_invalid_records: bool,
    /// How many skip/drop reasons the report keeps verbatim. Default 10.
    pub max_reported_reasons: usize,
    /// The longest text handed to the tokenizer, in bytes: a field, or a conversation as the
    /// chat template rendered it; a longer one is a record error (skippable). Unset: the
    /// larger of [`MIN_DEFAULT_MAX_TEXT_BYTES`] and [`DEFAULT_TEXT_BYTES_PER_TOKEN`] bytes per
    /// token of `max_length`. Read it through [`Self::max_text_bytes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_text_bytes: Option<usize>,
    /// The column (JSON key) holding the prompt. Default `"prompt"`. When a file has no such
    /// column (or key), the prompt is extracted from `chosen`/`rejected` (implicit prompt).
    pub prompt_column: String,
    /// The column (JSON key) holding the preferred completion. Default `"chosen"`.
    pub chosen_column: String,
    /// The column (JSON key) holding the dispreferred completion. Default `"rejected"`.
    pub rejected_column: String,
    /// A dataset to read both splits from (TRL's `ScriptArguments.dataset_name`): a local
    /// dataset directory (Hub layout, `save_to_disk`, or a directory of files) or a data file.
    /// Hub ids are resolved to a local snapshot before they reach this crate.
    pub dataset_name: Option<String>,
    /// The dataset configuration (`datasets`' `name`): picks the data files per split from the
    /// `configs:` block of the dataset directory's `README.md`. Unset: the config marked
    /// `default: true`, or the only one, or (no `configs:` block) the files by their names.
    pub dataset_config: Option<String>,
    /// The split read for training from a dataset directory. Default `"train"`.
    pub dataset_train_split: String,
    /// The split read for evaluation from a dataset directory. Default `"test"`.
    pub dataset_test_split: String,
    /// A mixture of datasets (TRL's `DatasetMixtureConfig.datasets`), read instead of
    /// `dataset_name`; see [`DatasetMixture`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datasets: Option<Vec<crate::mixture::MixtureEntry>>,
    /// With `datasets`: hold out this share (a fraction in `(0, 1)`) or number (an integer >= 1)
    /// of the mixed records as the test split (`DatasetMixtureConfig.test_split_size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_split_size: Option<f64>,
    /// `DatasetMixtureConfig.streaming` / `ScriptArguments.dataset_streaming`: accepted, and
    /// without effect here (files are always streamed).
    pub dataset_streaming: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            trl_semantics: TrlPipeline::V1,
            max_length: Some(1024),
            max_prompt_length: None,
            truncation_mode: None,
            pad_to_multiple_of: None,
            skip_invalid_records: false,
            max_reported_reasons: 10,
            max_text_bytes: None,
            prompt_column: "prompt".into(),
            chosen_column: "chosen".into(),
            rejected_column: "rejected".into(),
            dataset_name: None,
            dataset_config: None,
            dataset_train_split: "train".into(),
            dataset_test_split: "test".into(),
            datasets: None,
            test_split_size: None,
            dataset_streaming: false,
        }
    }
}

impl DataConfig {
    /// The default configuration of TRL 0.28's pipeline (`trl_semantics = "0.28"`).
    pub fn v0_28() -> Self {
        Self {
            trl_semantics: TrlPipeline::V0_28,
            ..Self::default()
        }
    }

    /// The truncation mode in effect: the configured one, else the version's default.
    pub fn truncation_mode(&self) -> TruncationMode {
        self.truncation_mode
            .unwrap_or_else(|| self.trl_semantics.default_truncation_mode())
    }

    /// The prompt limit in effect: TRL 0.28's `max_prompt_length` (512 when unset); always
    /// `None` under TRL 1.x, which has no such option.
    pub fn max_prompt_length(&self) -> Option<usize> {
        match self.trl_semantics {
            TrlPipeline::V1 => None,
            TrlPipeline::V0_28 => self
                .max_prompt_length
                .unwrap_or(Some(DEFAULT_MAX_PROMPT_LENGTH_V0_28)),
        }
    }

    /// The text length bound in effect: `max_text_bytes` when set, else the larger of
    /// [`MIN_DEFAULT_MAX_TEXT_BYTES`] and [`DEFAULT_TEXT_BYTES_PER_TOKEN`] x `max_length`.
    pub fn max_text_bytes(&self) -> usize {
        self.max_text_bytes.unwrap_or_else(|| {
            let per_length = self.max_length.map_or(0, |tokens| {
                tokens.saturating_mul(DEFAULT_TEXT_BYTES_PER_TOKEN)
            });
            per_length.max(MIN_DEFAULT_MAX_TEXT_BYTES)
        })
    }

    /// The column mapping (`prompt_column`, `chosen_column`, `rejected_column`).
    pub fn columns(&self) -> ColumnNames {
        ColumnNames {
            prompt: self.prompt_column.clone(),
            chosen: self.chosen_column.clone(),
            rejected: self.rejected_column.clone(),
            ..ColumnNames::default()
        }
    }

    /// The mixture of `datasets`, if one is configured.
    ///
    /// # Errors
    /// [`DataError::Config`] when an entry or `test_split_size` is out of range.
    pub fn mixture(&self) -> Result<Option<DatasetMixture>, DataError> {
        match &self.datasets {
            None => Ok(None),
            Some(entries) => DatasetMixture::new(entries.clone(), self.test_split_size).map(Some),
        }
    }

    /// Checks the values are usable: lengths and `pad_to_multiple_of` must be at least 1,
    /// column names non-empty and distinct, split names non-empty words, and no TRL 0.28 option
    /// under `"1.x"`.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |field: &'static str, reason: String| DataError::Config { field, reason };
        for (field, name) in [
            ("prompt_column", &self.prompt_column),
            ("chosen_column", &self.chosen_column),
            ("rejected_column", &self.rejected_column),
        ] {
            if name.is_empty() {
                return Err(bad(field, "must name a column".into()));
            }
        }
        if self.chosen_column == self.rejected_column
            || self.prompt_column == self.chosen_column
            || self.prompt_column == self.rejected_column
        {
            return Err(bad(
                "chosen_column",
                format!(
                    "prompt_column `{}`, chosen_column `{}` and rejected_column `{}` must be three different columns",
                    self.prompt_column, self.chosen_column, self.rejected_column
                ),
            ));
        }
        for (field, name) in [
            ("dataset_train_split", &self.dataset_train_split),
            ("dataset_test_split", &self.dataset_test_split),
        ] {
            check_split_name(field, name)?;
        }
        if self.max_text_bytes == Some(0) {
            return Err(bad("max_text_bytes", "must be at least 1".into()));
        }
        if self.max_length == Some(0) {
            return Err(bad(
                "max_length",
                "must be at least 1 (or null for no limit)".into(),
            ));
        }
        match (self.trl_semantics, self.max_prompt_length) {
            (TrlPipeline::V1, Some(_)) => {
                return Err(bad(
                    "max_prompt_length",
                    "is a TRL 0.28 option: TRL 1.x has none, and truncates prompt + completion \
                     together to max_length with truncation_mode; remove it, or set \
                     trl_semantics = \"0.28\""
                        .into(),
                ));
            }
            (TrlPipeline::V0_28, Some(Some(0))) => {
                return Err(bad(
                    "max_prompt_length",
                    "must be at least 1 (or null for no limit)".into(),
                ));
            }
            _ => {}
        }
        if self.pad_to_multiple_of == Some(0) {
            return Err(bad(
                "pad_to_multiple_of",
                "must be at least 1 (or null)".into(),
            ));
        }
        if let Some(name) = &self.dataset_config
            && name.trim().is_empty()
        {
            return Err(bad("dataset_config", "must not be empty".into()));
        }
        if self.test_split_size.is_some() && self.datasets.is_none() {
            return Err(bad(
                "test_split_size",
                "only applies to a `datasets` mixture".into(),
            ));
        }
        self.mixture()?;
        Ok(())
    }
}

/// A split name must be a non-empty word (letters, digits, `_`, `-`, `.`).
pub(crate) fn check_split_name(field: &'static str, name: &str) -> Result<(), DataError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(DataError::Config {
            field,
            reason: format!("`{name}` is not a split name (letters, digits, `_`, `-`, `.`)"),
        });
    }
    Ok(())
}
