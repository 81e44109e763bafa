//! PEFT's adapter files on a [`CausalLm`]: [`CausalLm::load_adapter`] and
//! [`CausalLm::save_adapter`] (`adapter_config.json` + `adapter_model.safetensors`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::prelude::*;

use super::adapter::{AttachedAdapter, PEFT_PREFIX, RequireGrad, name_matches, resolve};
use super::config::{
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, LoraConfig, TargetModules, default_target_modules,
};
use super::linear::{LoraBranch, TrainedCopy, base_dims, transpose};
use super::tensors::{HostTensor, host_f32, read_f32_tensors};
use crate::causal_lm::CausalLm;
use crate::checkpoint::{StoredTensor, check_tensors, read_header};
use crate::error::ModelError;

/// PEFT's key suffix for DoRA's magnitude (`<layer>.lora_magnitude_vector`, no `.weight`).
const MAGNITUDE: &str = "lora_magnitude_vector";

impl CausalLm {
    /// Loads a PEFT LoRA adapter directory (`adapter_config.json` +
    /// `adapter_model.safetensors`, as `PeftModel.save_pretrained` writes it) onto this base
    /// model, freezing the base.
    ///
    /// Strict: the file must hold exactly the `lora_A` / `lora_B` weights (and, with
    /// `use_dora`, the `lora_magnitude_vector` `[out]`) of every target layer
    /// (and the weight and bias of every `modules_to_save` layer) under PEFT's key names,
    /// with the shapes the config and the base imply; missing, unexpected and mis-shaped
    /// tensors are errors that list them. F32, BF16 and F16 are read as F32.
    pub fn load_adapter(self, dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let (config, _) = LoraConfig::from_adapter_config(dir)?;
        self.check_no_adapter()?;
        let config_file = dir.join(ADAPTER_CONFIG_FILE);
        let in_config = |e| crate::error::in_file(&config_file, e);
        let (adapted, trained) = resolve(&config, &self).map_err(in_config)?;

        // Every tensor the adapter must hold, under its PEFT name and PyTorch shape.
        let mut expected: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (name, layer) in self.adaptable_layers() {
            let [d_in, d_out] = base_dims(layer);
            if adapted.contains(&name) {
                let r = config.layer(&name).map_err(in_config)?.r;
                expected.insert(format!("{PEFT_PREFIX}{name}.lora_A.weight"), vec![r, d_in]);
                expected.insert(format!("{PEFT_PREFIX}{name}.lora_B.weight"), vec![d_out, r]);
                if config.use_dora {
                    expected.insert(format!("{PEFT_PREFIX}{name}.{MAGNITUDE}"), vec![d_out]);
                }
            } else if trained.contains(&name) {
                let shape = if layer.fan_in_fan_out() {
                    vec![d_in, d_out]
                } else {
                    vec![d_out, d_in]
                };
                expected.insert(format!("{PEFT_PREFIX}{name}.weight"), shape);
                if layer.bias().is_some() {
                    expected.insert(format!("{PEFT_PREFIX}{name}.bias"), vec![d_out]);
                }
            }
        }
        let path = dir.join(ADAPTER_WEIGHTS_FILE);
        if !path.is_file() {
            return Err(ModelError::NoWeights {
                dir: dir.to_path_buf(),
            });
        }
        let stored: BTreeMap<String, StoredTensor> = read_header(&path)?;
        check_tensors(dir, &expected, &stored, None)?;
        let mut values = read_f32_tensors(&path, expected.keys().cloned())?;
        let mut take = |key: String| values.remove(&key).unwrap_or_default();

        let mut model = self.map(&mut RequireGrad(false));
        for (name, layer) in model.adaptable_layers_mut() {
            let [d_in, d_out] = base_dims(layer);
            let device = layer.weight().device();
            if adapted.contains(&name) {
                let lora = config.layer(&name).map_err(in_config)?;
                let a = take(format!("{PEFT_PREFIX}{name}.lora_A.weight"));
                let b = take(format!("{PEFT_PREFIX}{name}.lora_B.weight"));
                let branch = LoraBranch::from_peft(
                    a,
                    b,
                    [lora.r, d_in, d_out],
                    lora.scale,
                    config.lora_dropout,
                    &device,
                );
                layer.set_lora(Some(if config.use_dora {
                    branch.with_magnitude(take(format!("{PEFT_PREFIX}{name}.{MAGNITUDE}")))
                } else {
                    branch
                }));
            } else if trained.contains(&name) {
                let w = take(format!("{PEFT_PREFIX}{name}.weight"));
                let w = if layer.fan_in_fan_out() {
                    w
                } else {
                    transpose(&w, d_out, d_in)
                };
                let weight = Tensor::<2>::from_data(TensorData::new(w, [d_in, d_out]), &device);
                let bias = layer.bias().map(|_| {
                    let b = take(format!("{PEFT_PREFIX}{name}.bias"));
                    Param::from_tensor(Tensor::<1>::from_data(TensorData::new(b, [d_out]), &device))
                });
                layer.set_trained(Some(TrainedCopy {
                    weight: Param::from_tensor(weight),
                    bias,
                }));
            }
        }
        model.set_adapter(Some(AttachedAdapter {
            config,
            adapted,
            trained,
        }));
        Ok(model)
    }

    /// Writes the attached adapter as PEFT does: `adapter_config.json` and
    /// `adapter_model.safetensors` (F32, `lora_A.weight` `[r, in]`, `lora_B.weight`
    /// `[out, r]`, DoRA's `lora_magnitude_vector` `[out]`, and the weight and bias of each `modules_to_save` layer, under
    /// `base_model.model.<layer>`). `base_model_name_or_path` is recorded in the config (PEFT
    /// and `sdpo merge` use it to find the base). Creates `dir`; replaces existing files.
    pub fn save_adapter(
        &self,
        dir: impl AsRef<Path>,
        base_model_name_or_path: Option<&str>,
    ) -> Result<(), ModelError> {
        let dir = dir.as_ref();
        let adapter = self.adapter().ok_or(ModelError::NoAdapter)?;
        let io = |path: &Path| {
            let path: PathBuf = path.to_path_buf();
            move |source| ModelError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;

        let mut tensors: BTreeMap<String, HostTensor> = BTreeMap::new();
        let mut fan_in_fan_out = false;
        for (name, layer) in self.adaptable_layers() {
            fan_in_fan_out |= layer.fan_in_fan_out();
            if let Some(lora) = layer.lora() {
                let [r, d_in, d_out] = lora.dims();
                let (a, b) = lora.to_peft();
                tensors.insert(
                    format!("{PEFT_PREFIX}{name}.lora_A.weight"),
                    HostTensor::new(host_f32(a), vec![r, d_in]),
                );
                tensors.insert(
                    format!("{PEFT_PREFIX}{name}.lora_B.weight"),
                    HostTensor::new(host_f32(b), vec![d_out, r]),
                );
                if let Some(magnitude) = &lora.magnitude {
                    tensors.insert(
                        format!("{PEFT_PREFIX}{name}.{MAGNITUDE}"),
                        HostTensor::new(host_f32(magnitude.val()), vec![d_out]),
                    );
                }
            }
            if let Some(copy) = layer.trained() {
                let [d_in, d_out] = copy.weight.dims();
                let weight = if layer.fan_in_fan_out() {
                    HostTensor::new(host_f32(copy.weight.val()), vec![d_in, d_out])
                } else {
                    HostTensor::new(host_f32(copy.weight.val().transpose()), vec![d_out, d_in])
                };
                tensors.insert(format!("{PEFT_PREFIX}{name}.weight"), weight);
                if let Some(bias) = &copy.bias {
                    tensors.insert(
                        format!("{PEFT_PREFIX}{name}.bias"),
                        HostTensor::new(host_f32(bias.val()), vec![d_out]),
                    );
                }
            }
        }
        let weights = dir.join(ADAPTER_WEIGHTS_FILE);
        let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(tensors.iter(), Some(metadata), &weights).map_err(|e| {
            ModelError::Store {
                path: weights.clone(),
                message: e.to_string(),
            }
        })?;

        // PEFT records the names it resolved: "all-linear" becomes the list of layer kinds.
        let targets = match &adapter.config.target_modules {
            Some(TargetModules::Regex(r)) => TargetModules::Regex(r.clone()),
            Some(TargetModules::Names(n)) => TargetModules::Names(n.clone()),
            Some(TargetModules::AllLinear) => TargetModules::Names(
                self.linear_layer_kinds()
                    .into_iter()
                    .filter(|k| adapter.adapted.iter().any(|n| name_matches(n, k)))
                    .collect(),
            ),
            None => TargetModules::Names(default_target_modules(self.config().architecture)?),
        };
        let json =
            adapter
                .config
                .to_adapter_json(&targets, fan_in_fan_out, base_model_name_or_path);
        let config_path = dir.join(ADAPTER_CONFIG_FILE);
        let text = serde_json::to_string_pretty(&json).map_err(|source| ModelError::Json {
            path: config_path.clone(),
            source,
        })?;
        std::fs::write(&config_path, text + "\n").map_err(io(&config_path))
    }
}
