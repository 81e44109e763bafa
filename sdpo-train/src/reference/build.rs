//! Building the reference of a run: none (`reference_free`), the model at
//! `ref_model_name_or_path` (its tokenizer checked against the policy's), or a frozen copy of
//! the initial policy; stored in `ref_dtype`; with `precompute_ref_log_probs` its log-probs
//! ([`super::precompute`]).

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use sdpo_data::{PreferenceTokenizer, TokenizerInfo};
use sdpo_models::{CausalLm, MatmulPrecision, store_matrices_as, store_product_weights_as};

use super::Reference;
use super::precompute::{cached_or_computed, weights_fingerprint};
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::observer::TrainObserver;
use crate::startup::{RunData, model_error};

/// The reference side of the loss. With `reference_free` none is loaded or run; otherwise the
/// model at `ref_model_name_or_path` or a frozen copy of `initial` (with `use_peft`: `initial`
/// with its adapters disabled, sharing the base weights with the policy), or (with
/// `precompute_ref_log_probs`) their log-probs, cached under `output_dir`.
pub(crate) fn build_reference(
    config: &TrainConfig,
    initial: &CausalLm,
    data: &RunData,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<Reference, TrainError> {
    if config.loss.reference_free {
        if let Some(dir) = &config.ref_model_name_or_path {
            observer.on_message(&format!(
                "warning: reference_free = true: the reference `{}` is not loaded",
                dir.display()
            ));
        }
        return Ok(Reference::None);
    }
    let model = match &config.ref_model_name_or_path {
        Some(dir) => {
            if let Some(warning) = check_reference_tokenizer(dir, &data.tokenizer)? {
                observer.on_message(&warning);
            }
            let model = CausalLm::from_pretrained(dir, device).map_err(model_error(dir))?;
            data.check_model(&model, dir, config)?;
            model.with_matmul_precision(initial.config().matmul_precision)
        }
        None => initial.valid().without_adapters(),
    };
    let model = match config.ref_dtype {
        Some(dtype) if !device.supports_dtype(dtype.dtype()) => {
            observer.on_message(&format!(
                "warning: ref_dtype = \"{}\", but this backend cannot hold {} tensors: the \
                 reference stays float32",
                dtype.as_str(),
                dtype.as_str()
            ));
            model
        }
        Some(dtype) => store_matrices_as(model, dtype.dtype()),
        // The reference's products run in the low dtype already; holding their weights there
        // changes no bit and saves the casts and half their memory. A LoRA reference shares
        // its base weights with the policy, so a copy would add memory instead.
        None if model.config().matmul_precision != MatmulPrecision::F32 && !config.use_peft => {
            let dtype = model.config().matmul_precision.dtype();
            store_product_weights_as(model, dtype)
        }
        None => model,
    };
    if !config.precompute_ref_log_probs {
        return Ok(Reference::Model(Box::new(model)));
    }
    let (ref_dir, seed) = match &config.ref_model_name_or_path {
        Some(dir) => (dir.clone(), None),
        None => (
            config.model_name_or_path.clone(),
            config.init_from_config.then_some(config.seed),
        ),
    };
    let fingerprint = weights_fingerprint(&ref_dir, seed)?;
    let train = cached_or_computed(
        config,
        "train",
        &data.train,
        fingerprint,
        &model,
        data,
        device,
        observer,
    )?;
    let eval = match &data.eval {
        Some(eval) => Some(cached_or_computed(
            config,
            "eval",
            eval,
            fingerprint,
            &model,
            data,
            device,
            observer,
        )?),
        None => None,
    };
    Ok(Reference::Precomputed { train, eval })
}

/// The reference must use the policy's tokenizer: same vocabulary and special tokens. Returns a
/// warning when the reference directory has no tokenizer to compare.
fn check_reference_tokenizer(
    dir: &Path,
    policy: &TokenizerInfo,
) -> Result<Option<String>, TrainError> {
    if !dir.join("tokenizer.json").is_file() {
        // Nothing to compare beyond the vocabulary size, checked when the model is loaded.
        return Ok(Some(format!(
            "warning: reference `{}` has no tokenizer.json; only its vocabulary size is checked",
            dir.display()
        )));
    }
    let reference = PreferenceTokenizer::from_dir(dir)?;
    let differences = policy.differences(reference.info());
    if differences.is_empty() {
        Ok(None)
    } else {
        Err(TrainError::TokenizerMismatch {
            reference: dir.to_path_buf(),
            differences,
        })
    }
}
