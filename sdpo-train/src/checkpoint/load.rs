//! Loading what a checkpoint or a saved model holds: the policy (a full model, or a PEFT
//! adapter onto the run's base) and the optimizer state.

use std::path::Path;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, FloatDType};

use sdpo_models::{CausalLm, matrix_dtype, store_matrices_as};

use crate::error::TrainError;
use crate::startup::model_error;

/// Whether `dir` holds a PEFT adapter (a LoRA checkpoint or final output) rather than a full
/// model.
pub(crate) fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(sdpo_models::lora::ADAPTER_CONFIG_FILE).is_file()
}

/// The policy saved in `dir` on `device`: a full model (its matrices held in the dtype
/// `initial` holds its own in, `dtype`), or (when `dir` holds a PEFT adapter) the adapter
/// loaded onto the base of `initial` (the run's base model, adapters removed).
pub(crate) fn saved_policy(
    dir: &Path,
    initial: &CausalLm,
    device: &Device,
) -> Result<CausalLm, TrainError> {
    if is_adapter_dir(dir) {
        let policy = initial
            .without_adapters()
            .load_adapter(dir)
            .map_err(model_error(dir))?;
        Ok(policy.fork(device))
    } else {
        let model = CausalLm::from_pretrained(dir, device).map_err(model_error(dir))?;
        Ok(match matrix_dtype(initial) {
            FloatDType::F32 => model,
            dtype => store_matrices_as(model, dtype),
        })
    }
}

/// Loads the optimizer state of a checkpoint. burn's loader is not hardened against every
/// corrupted file (a checkpoint without a manifest is not verified first), so a panic inside it
/// is turned into an error naming the file.
pub(crate) fn load_optimizer(
    optimizer: ModuleOptimizer,
    path: &Path,
) -> Result<ModuleOptimizer, TrainError> {
    let bad = |reason: String| TrainError::Optimizer {
        path: path.to_path_buf(),
        reason,
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| optimizer.load(path))) {
        Ok(Ok(optimizer)) => Ok(optimizer),
        Ok(Err(source)) => Err(TrainError::OptimizerRecord {
            path: path.to_path_buf(),
            source,
        }),
        Err(panic) => Err(bad(format!(
            "unreadable ({})",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the loader panicked")
        ))),
    }
}
