//! The names of a run directory's files and its `checkpoint-N` folders.

use std::path::{Path, PathBuf};

use crate::error::{RunDirError, io};

/// The metrics log under `output_dir`: one [`crate::MetricsRecord`] per line.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// The configuration the run uses, as flat JSON keys, written when training starts.
pub const RUN_CONFIG_FILE: &str = "run_config.json";

/// What reading the data did ([`crate::DataSummary`]), written when training starts.
pub const DATA_SUMMARY_FILE: &str = "data_summary.json";

/// The prefix of a checkpoint folder's name: `checkpoint-N` for optimizer step `N`.
pub const CHECKPOINT_PREFIX: &str = "checkpoint-";

/// Where training stands, inside a checkpoint folder (its configuration included).
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";

/// The optimizer state inside a checkpoint folder (burn's burnpack).
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";

/// The SHA-256 of every file of a checkpoint folder, written last.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The folder of the checkpoint at optimizer step `step`.
pub fn checkpoint_dir(output_dir: &Path, step: usize) -> PathBuf {
    output_dir.join(format!("{CHECKPOINT_PREFIX}{step}"))
}

/// The complete checkpoints under `output_dir` (folders `checkpoint-N` that hold a
/// `trainer_state.json`), by step; none when `output_dir` does not exist.
///
/// # Errors
/// [`RunDirError::Io`] when `output_dir` exists but cannot be listed.
pub fn list_checkpoints(output_dir: &Path) -> Result<Vec<(usize, PathBuf)>, RunDirError> {
    if !output_dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(output_dir).map_err(io("list", output_dir))? {
        let entry = entry.map_err(io("list", output_dir))?;
        let name = entry.file_name();
        if let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CHECKPOINT_PREFIX))
            .and_then(|n| n.parse::<usize>().ok())
            && entry.path().join(TRAINER_STATE_FILE).is_file()
        {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_complete_checkpoints_in_step_order() {
        let tmp = tempfile::tempdir().unwrap();
        for step in [10, 2, 7] {
            let dir = checkpoint_dir(tmp.path(), step);
            std::fs::create_dir_all(&dir).unwrap();
            if step != 7 {
                std::fs::write(dir.join(TRAINER_STATE_FILE), "{}").unwrap();
            }
        }
        std::fs::create_dir_all(tmp.path().join("checkpoint-x")).unwrap();
        std::fs::create_dir_all(tmp.path().join(".tmp-checkpoint-12")).unwrap();
        let steps: Vec<usize> = list_checkpoints(tmp.path())
            .unwrap()
            .into_iter()
            .map(|(step, _)| step)
            .collect();
        assert_eq!(steps, [2, 10]);
        assert!(
            list_checkpoints(&tmp.path().join("absent"))
                .unwrap()
                .is_empty()
        );
    }
}
