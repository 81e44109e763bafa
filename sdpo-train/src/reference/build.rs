//! Building the reference of a run: none (`reference_free`), the model at
//! `ref_model_name_or_path` (its tokenizer checked against the policy's), or a frozen copy of
//! the initial policy; stored in `ref_dtype`; with `precompute_ref_log_probs` its log-probs
//! ([`super::precompute`]).

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use sdpo_data::{PreferenceTokenizer, TokenizerInfo};
use sdpo_models::{
    CausalLm, MatmulPrecision, StreamedLm, WeightStorage, store_matrices_as,
    store_product_weights_as,
};

use super::Reference;
use super::cache::reference_identity;
use super::compute::{ComputingReference, LazyReference};
use super::precompute::{SplitJob, cached_or_computed};
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::observer::TrainObserver;
use crate::precision::{run_computation, run_precision};
use crate::startup::{RunData, base_storage, load_initial_policy, model_error};

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
    if !config.needs_reference_logps() {
        if let Some(dir) = &config.ref_model_name_or_path {
            observer.on_message(&format!(
                "warning: {}: the reference `{}` is not loaded",
                if config.loss.reference_free {
                    "reference_free = true".to_string()
                } else {
                    format!(
                        "loss_type = \"{}\" reads no reference",
                        config.loss.loss_type.as_slice()[0]
                    )
                },
                dir.display()
            ));
        }
        return Ok(Reference::None);
    }
    build_frozen_model(config, initial, data, device, observer)
}

/// The frozen model at `ref_model_name_or_path` (or the initial policy's copy) as a
/// reference: the model in memory, or with `precompute_ref_log_probs` its log-probs, cached
/// under `output_dir` by its weight files. The token-level methods' scoring models are built
/// through it too ([`crate::scoring`]).
pub(crate) fn build_frozen_model(
    config: &TrainConfig,
    initial: &CausalLm,
    data: &RunData,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<Reference, TrainError> {
    if !config.precompute_ref_log_probs {
        let model = reference_model(config, Some(initial), data, device, observer)?;
        return Ok(Reference::Model(Box::new(model)));
    }
    let (computation, _) = run_computation(config, device);
    let mut model = LazyReference::new(|observer: &mut dyn TrainObserver| {
        computing_reference(config, Some(initial), data, device, observer)
    });
    let jobs = SplitJob::of_run(config, data, computation)?;
    precomputed(config, data, jobs, &mut model, device, observer)
}

/// The caches of `jobs` (train, then eval) as a precomputed reference: each read, or computed
/// with `model` (loaded only then).
pub(crate) fn precomputed(
    config: &TrainConfig,
    data: &RunData,
    jobs: Vec<SplitJob<'_>>,
    model: &mut LazyReference<'_>,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<Reference, TrainError> {
    let mut caches = Vec::new();
    for job in jobs {
        caches.push(Box::new(cached_or_computed(
            config, &job, model, device, observer,
        )?));
    }
    let mut caches = caches.into_iter();
    let train = caches.next().ok_or(TrainError::NoData {
        path: data.train_source.clone(),
    })?;
    Ok(Reference::Precomputed {
        train,
        eval: caches.next(),
    })
}

/// The reference that computes a run's cache: streamed from its weight files with
/// `ref_layer_streaming`, else [`reference_model`] in memory.
pub(crate) fn computing_reference(
    config: &TrainConfig,
    initial: Option<&CausalLm>,
    data: &RunData,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<ComputingReference, TrainError> {
    if !config.ref_layer_streaming {
        observer.on_message("loading the reference model to compute its log-probs");
        return reference_model(config, initial, data, device, observer)
            .map(|model| ComputingReference::Model(Box::new(model)));
    }
    let dir = match &config.ref_model_name_or_path {
        Some(dir) => {
            if let Some(warning) = check_reference_tokenizer(dir, &data.tokenizer)? {
                observer.on_message(&warning);
            }
            dir
        }
        None if config.init_from_config => {
            return Err(TrainError::Config {
                key: "ref_layer_streaming".into(),
                reason: "streams the reference's weight files, but the reference is the \
                         policy's random initialisation (init_from_config) and has none"
                    .into(),
            });
        }
        None => &config.model_name_or_path,
    };
    let starting_weights_dtype = match config.ref_model_name_or_path {
        Some(_) => None,
        None => base_storage(config, device)?.0,
    };
    let (precision, _) = run_precision(config, device);
    let model = StreamedLm::open(dir, device)
        .map_err(model_error(dir))?
        .with_matmul_precision(precision);
    data.check_model(model.model(), dir, config)?;
    let storage = match (config.ref_dtype, starting_weights_dtype) {
        (Some(dtype), _) if !device.supports_dtype(dtype.dtype()) => {
            observer.on_message(&format!(
                "warning: ref_dtype = \"{}\", but this backend cannot hold {} tensors: the \
                 reference stays float32",
                dtype.as_str(),
                dtype.as_str()
            ));
            WeightStorage::F32
        }
        (Some(dtype), _) => WeightStorage::Matrices(dtype.dtype()),
        // The policy's own starting weights, held as the policy holds them (`dtype`).
        (None, Some(dtype)) => WeightStorage::Matrices(dtype),
        (None, None) if precision != MatmulPrecision::F32 && !config.use_peft => {
            WeightStorage::ProductWeights(precision.dtype())
        }
        (None, None) => WeightStorage::F32,
    };
    observer.on_message(&format!(
        "streaming the reference `{}` one layer at a time ({} layers) to compute its log-probs",
        dir.display(),
        model.config().num_hidden_layers
    ));
    Ok(ComputingReference::Streamed(Box::new(
        model.with_weight_storage(storage),
    )))
}

/// The reference model of a run, in its dtype: the model at `ref_model_name_or_path` (its
/// tokenizer checked against the policy's), else a frozen copy of `initial` with its adapters
/// disabled (loaded from `model_name_or_path` when `initial` is not given).
pub(crate) fn reference_model(
    config: &TrainConfig,
    initial: Option<&CausalLm>,
    data: &RunData,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<CausalLm, TrainError> {
    let (precision, _) = run_precision(config, device);
    let model = match (&config.ref_model_name_or_path, initial) {
        (Some(dir), _) => {
            if let Some(warning) = check_reference_tokenizer(dir, &data.tokenizer)? {
                observer.on_message(&warning);
            }
            let model = CausalLm::from_pretrained(dir, device).map_err(model_error(dir))?;
            data.check_model(&model, dir, config)?;
            model.with_matmul_precision(precision)
        }
        (None, Some(initial)) => initial.valid().without_adapters(),
        (None, None) => {
            let model = load_initial_policy(config, device)?.with_matmul_precision(precision);
            data.check_model(&model, &config.model_name_or_path, config)?;
            model
        }
    };
    Ok(match config.ref_dtype {
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
    })
}

/// The `reference` part of the cache key of `config`'s reference: its weight files, or the
/// policy's config and seed when it is a randomly initialised copy of the policy.
/// A reference that is the policy's 4-bit base adds its quantization settings, one held in a
/// lower `dtype` (a LoRA base, or the starting weights of full fine-tuning) that dtype.
pub(crate) fn reference_identity_of(config: &TrainConfig) -> Result<String, TrainError> {
    match &config.ref_model_name_or_path {
        Some(dir) => reference_identity(dir, None),
        None => {
            let files = reference_identity(
                &config.model_name_or_path,
                config.init_from_config.then_some(config.seed),
            )?;
            let dir = &config.model_name_or_path;
            let files = match config.bnb_4bit_config().map_err(model_error(dir))? {
                Some(bnb) => format!(
                    "{files};load_in_4bit={},double_quant={},compute_dtype={}",
                    bnb.quant_type,
                    bnb.double_quant,
                    bnb.compute_dtype.name()
                ),
                None => files,
            };
            // A base (LoRA) or starting policy (full fine-tuning) held in a lower dtype is a
            // reference with rounded weights.
            Ok(match config.dtype.resolve(dir)? {
                Some(dtype) => format!("{files};dtype={dtype:?}"),
                None => files,
            })
        }
    }
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
