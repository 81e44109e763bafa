//! [`DataConfig`]: the data options, with TRL's names and defaults (TRL 0.28 `DPOConfig`).

use serde::{Deserialize, Serialize};

use crate::error::DataError;

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
        }
    }
}

impl DataConfig {
    /// Checks the values are usable: lengths and `pad_to_multiple_of` must be at least 1.
    pub fn validate(&self) -> Result<(), DataError> {
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
