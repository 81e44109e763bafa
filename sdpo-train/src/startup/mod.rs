//! Starting a run: the data and the plan of its steps (modules `data` and `plan`), and the
//! policy's starting weights with their adapters. The reference is built by
//! [`crate::reference`], a checkpoint is checked and loaded by [`crate::checkpoint`].

mod data;
mod plan;

use std::path::Path;

use burn::tensor::{Device, FloatDType};

use sdpo_models::{CausalLm, MatmulPrecision, ModelConfig, store_matrices_as};

pub(crate) use data::RunData;
pub(crate) use plan::Plan;

use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::observer::TrainObserver;
use crate::precision::run_precision;
use crate::reference::{Reference, build_reference, sync};
use crate::scoring::ScoringModels;

/// The models a run starts from, on the plain device: the policy's starting weights (adapters
/// attached) and the reference, each checked against the data.
pub(crate) struct StartingModels {
    /// The policy's starting weights (the base of a LoRA run, with its adapters).
    pub initial: CausalLm,
    /// The reference (model, cache or none).
    pub reference: Reference,
    /// The token-level method's scoring models.
    pub scoring: ScoringModels,
    /// The precision the run's products use on this device.
    pub precision: MatmulPrecision,
}

impl StartingModels {
    /// Loads the starting policy and builds the reference (see
    /// [`crate::reference::build_reference`]). With `sync_ref_model`, the moving reference of
    /// `checkpoint` replaces the built one (it must hold one).
    pub fn load(
        config: &TrainConfig,
        device: &Device,
        data: &RunData,
        checkpoint: Option<&Path>,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        let (precision, warning) = run_precision(config, device);
        if let Some(warning) = warning {
            observer.on_message(&warning);
        }
        if let (_, Some(warning)) = base_storage(config, device)? {
            observer.on_message(&warning);
        }
        let initial = load_initial_policy(config, device)?.with_matmul_precision(precision);
        data.check_model(&initial, &config.model_name_or_path, config)?;
        let initial = attach_adapters(config, initial)?;
        let mut reference = build_reference(config, &initial, data, device, observer)?;
        if config.sync_ref_model {
            sync::check_reference(&reference, &initial)?;
            if let Some(dir) = checkpoint {
                reference = sync::load_reference(dir, &reference, device)?;
            }
        }
        let scoring = ScoringModels::build(config, &initial, data, device, observer)?;
        Ok(Self {
            initial,
            reference,
            scoring,
            precision,
        })
    }
}

/// Wraps a model error with the directory it concerns.
pub(crate) fn model_error(path: &Path) -> impl FnOnce(sdpo_models::ModelError) -> TrainError + '_ {
    move |source| TrainError::Model {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads the policy's starting weights (or builds them from the config) on `device`; with
/// `load_in_4bit`, its linear layers in 4 bits.
pub(crate) fn load_initial_policy(
    config: &TrainConfig,
    device: &Device,
) -> Result<CausalLm, TrainError> {
    let dir = &config.model_name_or_path;
    let model = match config.bnb_4bit_config().map_err(model_error(dir))? {
        // Read and quantized one layer at a time: the float model never is in memory whole.
        Some(bnb) if !config.init_from_config => {
            CausalLm::from_pretrained_4bit(dir, &bnb, device).map_err(model_error(dir))
        }
        Some(bnb) => load_float_base(config, device)?
            .quantize_4bit(&bnb)
            .map_err(model_error(dir)),
        None => load_float_base(config, device),
    }?;
    Ok(match base_storage(config, device)?.0 {
        Some(dtype) => store_matrices_as(model, dtype),
        None => model,
    })
}

/// The dtype the policy's matrices (linear weights, embeddings, the output head) are held in
/// (`dtype`; `None` = float32), and a warning when the backend cannot hold it. With `use_peft`
/// that is the frozen base (the adapters stay float32, PEFT's `autocast_adapter_dtype`), and a
/// backend without the dtype is an error naming `dtype` (the reference cache is keyed by the
/// base's dtype). Without it, the trained matrices themselves, their gradients and their AdamW
/// moments are in `dtype`, as transformers trains a model loaded in it; a backend without the
/// dtype trains float32 weights instead, with the warning.
pub(crate) fn base_storage(
    config: &TrainConfig,
    device: &Device,
) -> Result<(Option<FloatDType>, Option<String>), TrainError> {
    let Some(dtype) = config.dtype.resolve(&config.model_name_or_path)? else {
        return Ok((None, None));
    };
    let name = if dtype == FloatDType::BF16 {
        "bfloat16"
    } else {
        "float16"
    };
    if device.supports_dtype(dtype) {
        Ok((Some(dtype), None))
    } else if !config.use_peft {
        let warning = format!(
            "warning: dtype = \"{}\" ({name}): this backend cannot hold {name} tensors; the \
             trained weights, their gradients and the optimizer state stay float32",
            config.dtype.as_str()
        );
        Ok((None, Some(warning)))
    } else {
        // An error, not a float32 fallback: the reference cache is keyed by the base's dtype.
        Err(TrainError::Config {
            key: "dtype".into(),
            reason: format!(
                "\"{}\" ({name}): this backend cannot hold {name} tensors; set dtype = \
                 \"float32\" (or run on flex or LibTorch)",
                config.dtype.as_str()
            ),
        })
    }
}

/// The policy's starting weights in float, even with `load_in_4bit` (a QLoRA adapter is merged
/// into these).
pub(crate) fn load_float_base(
    config: &TrainConfig,
    device: &Device,
) -> Result<CausalLm, TrainError> {
    let dir = &config.model_name_or_path;
    if config.init_from_config {
        let model_config = ModelConfig::from_pretrained_dir(dir).map_err(model_error(dir))?;
        Ok(CausalLm::from_config(&model_config, config.seed, device))
    } else {
        CausalLm::from_pretrained(dir, device).map_err(model_error(dir))
    }
}

/// With `use_peft`, gives the base model its adapters: loaded from `peft_adapter_path`, or new
/// ones from the `lora_*` keys initialised from `seed`. The base is frozen either way (only the
/// adapters, and `lora_modules_to_save`, train). Without `use_peft`, returns `base` as it is.
pub(crate) fn attach_adapters(
    config: &TrainConfig,
    base: CausalLm,
) -> Result<CausalLm, TrainError> {
    if !config.use_peft {
        return Ok(base);
    }
    match &config.peft_adapter_path {
        Some(dir) => base.load_adapter(dir).map_err(model_error(dir)),
        None => base
            .attach_lora(&config.lora_config(), config.seed)
            .map_err(|e| TrainError::Config {
                key: match &e {
                    sdpo_models::ModelError::UnknownTargetModules { key, .. }
                        if key == "modules_to_save" =>
                    {
                        "lora_modules_to_save"
                    }
                    sdpo_models::ModelError::UnknownTargetModules { .. } => "lora_target_modules",
                    sdpo_models::ModelError::InvalidLoraConfig { key, .. }
                        if key == "modules_to_save" =>
                    {
                        "lora_modules_to_save"
                    }
                    _ => "use_peft",
                }
                .into(),
                reason: e.to_string(),
            }),
    }
}
