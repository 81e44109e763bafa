//! The run's configuration (`run_config.json`) and data summary (`data_summary.json`), as the
//! trainer writes them when training starts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{RunDirError, io};
use crate::layout::{DATA_SUMMARY_FILE, RUN_CONFIG_FILE};

/// What happened to one data file: the counts of `sdpo-data`'s `DataReport`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// `train` or `eval`.
    pub split: String,
    /// The preference file.
    pub file: PathBuf,
    /// Records seen (valid or not).
    pub records_read: usize,
    /// Pairs in the dataset (valid records, less those dropped by truncation).
    pub pairs: usize,
    /// Records skipped as invalid.
    pub skipped_invalid: usize,
    /// Pairs dropped because truncation left no completion token; `None` when the file was not
    /// tokenized for this summary.
    #[serde(default)]
    pub dropped_truncated: Option<usize>,
    /// Pairs whose prompt was cut to `max_prompt_length`; `None` when not tokenized.
    #[serde(default)]
    pub prompts_truncated: Option<usize>,
    /// Pairs with a side longer than `max_length`; `None` when not tokenized.
    #[serde(default)]
    pub pairs_over_max_length: Option<usize>,
    /// The first reasons for skipped records, verbatim.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// The data of a run, one entry per split; `data_summary.json` holds this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSummary {
    /// Where the numbers come from, in words (shown in the report).
    #[serde(default)]
    pub source: String,
    /// The splits.
    pub splits: Vec<SplitSummary>,
    /// A file named in the configuration that could not be read, with the reason.
    #[serde(default)]
    pub unreadable: Vec<String>,
}

/// Reads a JSON file of the run; `what` names it in an error.
///
/// # Errors
/// The file cannot be read or is not JSON.
pub fn read_json(path: &Path, what: &'static str) -> Result<Value, RunDirError> {
    let text = std::fs::read_to_string(path).map_err(io("read", path))?;
    serde_json::from_str(&text).map_err(|e| RunDirError::Malformed {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes `value` as pretty JSON with a final newline, object keys in sorted order (as a
/// `serde_json::Value` holds them, whatever the field order of `value`'s type).
fn write_json(path: &Path, what: &'static str, value: &impl Serialize) -> Result<(), RunDirError> {
    let malformed = |e: serde_json::Error| RunDirError::Malformed {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let value = serde_json::to_value(value).map_err(malformed)?;
    let text = serde_json::to_string_pretty(&value).map_err(malformed)?;
    std::fs::write(path, text + "\n").map_err(io("write", path))
}

/// Writes `output_dir/run_config.json`: the configuration the run uses, as a JSON object of
/// flat keys.
///
/// # Errors
/// The file cannot be written.
pub fn write_run_config(
    output_dir: &Path,
    config: &serde_json::Map<String, Value>,
) -> Result<(), RunDirError> {
    write_json(
        &output_dir.join(RUN_CONFIG_FILE),
        "run configuration",
        config,
    )
}

/// Reads `output_dir/run_config.json`; `None` when the run wrote none.
///
/// # Errors
/// The file exists but cannot be read or is not JSON.
pub fn read_run_config(output_dir: &Path) -> Result<Option<Value>, RunDirError> {
    let path = output_dir.join(RUN_CONFIG_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    read_json(&path, "run configuration").map(Some)
}

/// Writes `output_dir/data_summary.json`.
///
/// # Errors
/// The file cannot be written.
pub fn write_data_summary(output_dir: &Path, summary: &DataSummary) -> Result<(), RunDirError> {
    write_json(&output_dir.join(DATA_SUMMARY_FILE), "data summary", summary)
}

/// Reads `output_dir/data_summary.json`; `None` when the run wrote none.
///
/// # Errors
/// The file exists but cannot be read or does not hold a [`DataSummary`].
pub fn read_data_summary(output_dir: &Path) -> Result<Option<DataSummary>, RunDirError> {
    let path = output_dir.join(DATA_SUMMARY_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let value = read_json(&path, "data summary")?;
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| RunDirError::Malformed {
            what: "data summary",
            path,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_files_read_back_what_was_written() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read_run_config(tmp.path()).unwrap().is_none());
        assert!(read_data_summary(tmp.path()).unwrap().is_none());
        let mut config = serde_json::Map::new();
        config.insert("beta".into(), Value::from(0.1));
        write_run_config(tmp.path(), &config).unwrap();
        let summary = DataSummary {
            source: "test".into(),
            splits: vec![SplitSummary {
                split: "train".into(),
                file: "pairs.jsonl".into(),
                records_read: 3,
                pairs: 2,
                skipped_invalid: 1,
                dropped_truncated: Some(0),
                prompts_truncated: None,
                pairs_over_max_length: None,
                reasons: vec!["line 2: no prompt".into()],
            }],
            unreadable: Vec::new(),
        };
        write_data_summary(tmp.path(), &summary).unwrap();
        assert_eq!(
            read_run_config(tmp.path()).unwrap(),
            Some(Value::Object(config))
        );
        assert_eq!(read_data_summary(tmp.path()).unwrap(), Some(summary));
        let text = std::fs::read_to_string(tmp.path().join(RUN_CONFIG_FILE)).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        std::fs::write(tmp.path().join(DATA_SUMMARY_FILE), "{\"splits\": 3}").unwrap();
        let err = read_data_summary(tmp.path()).unwrap_err().to_string();
        assert!(err.contains(DATA_SUMMARY_FILE), "{err}");
    }
}
