//! Checkpoints: `output_dir/checkpoint-N/` with the model in Hugging Face layout, the
//! tokenizer files, the optimizer state, `trainer_state.json` and, written last,
//! `manifest.json` with the SHA-256 of every file. Written to a temporary directory and renamed,
//! so a crash never leaves half a checkpoint. The learning-rate schedule is a function of the
//! configuration and the step, both in `trainer_state.json`, so it needs no file of its own.

//!
//! - `manifest`: the SHA-256 of every file, written last and verified before a checkpoint is
//!   read.
//! - `resume`: the checks of a resume (manifest, configuration) and the resumed policy.
//! - `load`: a saved policy (full model or PEFT adapter) and the optimizer state.

mod load;
pub mod manifest;
mod optimizer_state;
mod resume;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use sdpo_core::RunningMoments;

pub(crate) use load::{load_optimizer, saved_policy};
pub(crate) use optimizer_state::check_optimizer_state;
pub use resume::{ConfigDiff, compare_configs, is_run_defining};
pub(crate) use resume::{
    resume_point, resumed_policy, verify_checkpoint, warn_existing_checkpoints,
};
pub use sdpo_run::{OPTIMIZER_FILE, TRAINER_STATE_FILE, checkpoint_dir, list_checkpoints};

use crate::best::BestState;
use crate::config::TrainConfig;
use crate::error::{TrainError, io};

/// Tokenizer files copied into checkpoints and the final model, when present.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// `trainer_state.json`: where training stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub global_step: usize,
    /// Fractional epoch.
    pub epoch: f64,
    /// Steps of the whole run.
    pub max_steps: usize,
    /// The `bco_pair` running mean.
    pub running_moments: RunningMoments,
    /// The policy's parameter ids in visiting order (the optimizer state is keyed by them).
    pub param_ids: Vec<u64>,
    /// The configuration of the run.
    pub config: TrainConfig,
    /// The best checkpoint so far (`metric_for_best_model`).
    #[serde(flatten)]
    pub best: BestState,
}

/// Resolves `--resume-from-checkpoint`: a directory, or `latest` for the newest complete
/// checkpoint under `output_dir`.
pub fn resolve_checkpoint(output_dir: &Path, spec: &Path) -> Result<PathBuf, TrainError> {
    if spec.as_os_str() == "latest" {
        return list_checkpoints(output_dir)?
            .pop()
            .map(|(_, dir)| dir)
            .ok_or_else(|| TrainError::NoCheckpoint {
                output_dir: output_dir.to_path_buf(),
            });
    }
    if spec.join(TRAINER_STATE_FILE).is_file() {
        Ok(spec.to_path_buf())
    } else {
        Err(TrainError::NotACheckpoint {
            path: spec.to_path_buf(),
            file: TRAINER_STATE_FILE,
        })
    }
}

/// Reads `trainer_state.json`.
pub fn read_trainer_state(dir: &Path) -> Result<TrainerState, TrainError> {
    let path = dir.join(TRAINER_STATE_FILE);
    let bytes = std::fs::read(&path).map_err(io("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Malformed {
        what: "trainer state",
        path,
        reason: e.to_string(),
    })
}

/// Writes a JSON file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Malformed {
        what: "json output",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(io("write", path))
}

/// Copies the tokenizer files that exist in `from` into `to`.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<(), TrainError> {
    for name in TOKENIZER_FILES {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name)).map_err(io("copy", &src))?;
        }
    }
    Ok(())
}

/// The generation settings transformers keeps next to a model's `config.json`.
pub const GENERATION_CONFIG: &str = "generation_config.json";

/// Copies the base model's `generation_config.json` (when it has one) into `to`, as
/// transformers' `save_pretrained` writes the model's generation settings with its weights.
pub fn copy_generation_config(base: &Path, to: &Path) -> Result<(), TrainError> {
    let src = base.join(GENERATION_CONFIG);
    if src.is_file() {
        std::fs::copy(&src, to.join(GENERATION_CONFIG)).map_err(io("copy", &src))?;
    }
    Ok(())
}

/// Makes `tmp` the checkpoint `dir` (replacing an older one of the same step).
pub fn commit_dir(tmp: &Path, dir: &Path) -> Result<(), TrainError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("remove old", dir))?;
    }
    std::fs::rename(tmp, dir).map_err(io("rename into place", dir))
}

struct CollectIds(Vec<u64>);

impl ModuleVisitor for CollectIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.id.val());
    }
}

/// The parameter ids of `module` in visiting order.
pub fn param_ids<M: Module>(module: &M) -> Vec<u64> {
    let mut v = CollectIds(Vec::new());
    module.visit(&mut v);
    v.0
}

struct AssignIds<'a> {
    ids: &'a [u64],
    next: usize,
}

impl ModuleMapper for AssignIds<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let id = match self.ids.get(self.next) {
            Some(&saved) => ParamId::from(saved),
            None => id,
        };
        self.next += 1;
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Gives `module`'s parameters the ids saved with the checkpoint at `checkpoint`, so the saved
/// optimizer state (keyed by id) applies to them.
pub fn assign_param_ids<M: Module>(
    module: M,
    ids: &[u64],
    checkpoint: &Path,
) -> Result<M, TrainError> {
    let count = param_ids(&module).len();
    if count != ids.len() {
        return Err(TrainError::ParameterCount {
            checkpoint: checkpoint.to_path_buf(),
            saved: ids.len(),
            model: count,
        });
    }
    Ok(module.map(&mut AssignIds { ids, next: 0 }))
}

/// Writes `output_dir/checkpoint-N` (`N` = `state.global_step`) atomically: `write_model` fills
/// a temporary directory with the model and whatever else the run keeps with it (TR-DPO's
/// moving reference), then come the optimizer state, `trainer_state.json` and, last, the
/// manifest; only then is the directory renamed into place, so a crash never leaves half a
/// checkpoint. A stale temporary directory of an earlier crash is removed first.
pub fn write_checkpoint(
    output_dir: &Path,
    optimizer: &ModuleOptimizer,
    state: &TrainerState,
    write_model: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<PathBuf, TrainError> {
    let step = state.global_step;
    let dir = checkpoint_dir(output_dir, step);
    let tmp = output_dir.join(format!(".tmp-checkpoint-{step}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io("remove stale", &tmp))?;
    }
    write_model(&tmp)?;
    let opt_path = tmp.join(OPTIMIZER_FILE);
    optimizer
        .save(&opt_path)
        .map_err(|source| TrainError::OptimizerRecord {
            path: opt_path.clone(),
            source,
        })?;
    write_json(&tmp.join(TRAINER_STATE_FILE), state)?;
    manifest::write_manifest(&tmp)?;
    commit_dir(&tmp, &dir)?;
    Ok(dir)
}
