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

/// The models a run starts from, on the plain device: the policy's starting weights (adapters
/// attached) and the reference, each checked against the data.
pub(crate) struct StartingModels {
    /// The policy's starting weights (the base of a LoRA run, with its adapters).
    pub initial: CausalLm,
    /// The reference (model, cache or none).
    pub reference: Reference,
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
        Ok(Self {
            initial,
            reference,
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

/// The dtype the frozen base of a `use_peft` run is held in (`dtype`; `None` = float32), and
/// a warning when `dtype` asks full fine-tuning for a lower one (the trained weights stay
/// float32 master weights). A backend that cannot store the dtype is an error naming `dtype`.
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
    if !config.use_peft {
        let warning = format!(
            "warning: dtype = \"{}\" ({name}): full fine-tuning keeps the trained weights in \
             float32 (master weights); bf16/fp16 set the products' precision and ref_dtype the \
             reference's storage",
            config.dtype.as_str()
        );
        Ok((None, Some(warning)))
    } else if !device.supports_dtype(dtype) {
        // An error, not a float32 fallback: the reference cache is keyed by the base's dtype.
        Err(TrainError::Config {
            key: "dtype".into(),
            reason: format!(
                "\"{}\" ({name}): this backend cannot hold {name} tensors; set dtype = \
                 \"float32\" (or run on flex or LibTorch)",
                config.dtype.as_str()
            ),
        })
    } else {
        Ok((Some(dtype), None))
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
