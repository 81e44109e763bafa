//! Resuming from a checkpoint: its files verified against the manifest, its configuration
//! compared with the current one, its policy loaded with the parameter ids its optimizer state is
//! keyed by. What a resumed run may change: the configuration saved with a checkpoint against
//! the current one. Keys that change the data, the model or the loss would make the resumed run a different
//! run than the one the checkpoint belongs to, so they are refused; the others (optimizer
//! hyper-parameters, step counts, logging, evaluation, saving) are reported and allowed.

use serde_json::Value;

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use sdpo_models::CausalLm;

use super::load::{is_adapter_dir, saved_policy};
use super::manifest::{ManifestStatus, verify_manifest};
use super::{TrainerState, assign_param_ids, list_checkpoints, read_trainer_state};
use crate::config::{OnResume, TrainConfig, key_effects};
use crate::error::TrainError;
use crate::observer::TrainObserver;
use crate::startup::RunData;

/// How the current configuration differs from a checkpoint's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// `key: saved -> current` for keys that change the data, the model or the loss.
    pub errors: Vec<String>,
    /// `key: saved -> current` for the other keys.
    pub warnings: Vec<String>,
}

/// Whether changing `key` on resume changes what the run trains on
/// ([`crate::config::OnResume::Refused`]; a key the configuration does not have is refused).
pub fn is_run_defining(key: &str) -> bool {
    key_effects(key).is_none_or(|effects| effects.on_resume == OnResume::Refused)
}

fn show(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "unset".into(),
        Some(v) => v.to_string(),
    }
}

/// Compares every key of the two configurations. `optim` may change between optimizers that
/// keep the same state (`adamw_torch` and `adamw_torch_fused`), not to or from `adamw_8bit`,
/// whose checkpointed state the other could not continue.
pub fn compare_configs(saved: &TrainConfig, current: &TrainConfig) -> ConfigDiff {
    let optim_state_changes = !saved.optim.same_state(current.optim);
    let (saved, current) = (saved.to_map(), current.to_map());
    let mut keys: Vec<&String> = saved.keys().chain(current.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut diff = ConfigDiff::default();
    for key in keys {
        let (a, b) = (saved.get(key), current.get(key));
        if a == b {
            continue;
        }
        let line = format!("`{key}`: {} -> {}", show(a), show(b));
        if is_run_defining(key) || (key == "optim" && optim_state_changes) {
            diff.errors.push(line);
        } else {
            diff.warnings.push(line);
        }
    }
    diff
}

/// A checkpoint the run resumes from, read and checked.
pub(crate) struct ResumePoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its `trainer_state.json`.
    pub state: TrainerState,
}

/// Verifies a checkpoint's files against its manifest (a warning when it predates manifests).
pub(crate) fn verify_checkpoint(
    dir: &Path,
    observer: &mut dyn TrainObserver,
) -> Result<(), TrainError> {
    if verify_manifest(dir)? == ManifestStatus::Missing {
        observer.on_message(&format!(
            "warning: `{}` has no manifest.json (written by sdpo-rs since checkpoints carry \
             one); its files cannot be verified",
            dir.display()
        ));
    }
    Ok(())
}

/// Reads and checks the checkpoint at `dir` for resuming with `config`: its files against the
/// manifest, its trainer state, and its configuration against the current one (keys that
/// change the data, the model or the loss are refused; others are reported).
pub(crate) fn resume_point(
    dir: &Path,
    config: &TrainConfig,
    total_steps: usize,
    observer: &mut dyn TrainObserver,
) -> Result<ResumePoint, TrainError> {
    verify_checkpoint(dir, observer)?;
    let state = read_trainer_state(dir)?;
    let diff = compare_configs(&state.config, config);
    if !diff.errors.is_empty() {
        return Err(TrainError::ConfigChanged {
            checkpoint: dir.to_path_buf(),
            differences: diff.errors,
        });
    }
    for warning in diff.warnings {
        observer.on_message(&format!(
            "warning: resuming `{}` with a changed setting: {warning}",
            dir.display()
        ));
    }
    if state.global_step > total_steps {
        return Err(TrainError::Config {
            key: "max_steps".into(),
            reason: format!(
                "the checkpoint is at step {} but the run has {total_steps} steps",
                state.global_step
            ),
        });
    }
    Ok(ResumePoint {
        dir: dir.to_path_buf(),
        state,
    })
}

/// Loads a checkpoint's policy on `device` with the parameter ids its optimizer state is keyed
/// by, checked against the data like any other model. A LoRA checkpoint's adapter is loaded
/// onto the base of `initial`.
pub(crate) fn resumed_policy(
    point: &ResumePoint,
    initial: &CausalLm,
    data: &RunData,
    config: &TrainConfig,
    device: &Device,
) -> Result<CausalLm, TrainError> {
    let dir = &point.dir;
    if config.use_peft != is_adapter_dir(dir) {
        return Err(TrainError::Config {
            key: "use_peft".into(),
            reason: format!(
                "is {} but the checkpoint `{}` holds {}",
                config.use_peft,
                dir.display(),
                if config.use_peft {
                    "a full model"
                } else {
                    "a LoRA adapter"
                }
            ),
        });
    }
    let policy = saved_policy(dir, initial, device)?;
    data.check_model(&policy, dir, config)?;
    assign_param_ids(policy, &point.state.param_ids, dir)
}

/// A warning when a fresh run starts in an `output_dir` that holds another run's checkpoints.
pub(crate) fn warn_existing_checkpoints(
    config: &TrainConfig,
    observer: &mut dyn TrainObserver,
) -> Result<(), TrainError> {
    let existing = list_checkpoints(&config.output_dir)?;
    if !existing.is_empty() {
        let names: Vec<String> = existing
            .iter()
            .map(|(_, dir)| {
                dir.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        observer.on_message(&format!(
            "warning: `{}` already holds checkpoints ({}) and this run starts from scratch: \
             each is replaced when this run saves the same step (use \
             --resume-from-checkpoint latest to continue instead)",
            config.output_dir.display(),
            names.join(", ")
        ));
    }
    Ok(())
}
