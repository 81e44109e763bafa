//! Adapters on a [`CausalLm`]: target resolution, attach, disable, merge (reading and writing
//! PEFT's files is in `peft_files`).

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;

use super::config::{LoraConfig, TargetModules, default_target_modules};
use super::linear::{Adaptable, LoraBranch, TrainedCopy, base_dims, dense_base};
use crate::causal_lm::CausalLm;
use crate::error::ModelError;
use crate::init::SplitMix64;

/// The prefix PEFT puts before the model's own module names in an adapter file
/// (`base_model.model.` + `model.layers.0.self_attn.q_proj` + `.lora_A.weight`).
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The adapter attached to a model: its settings and the layers they resolved to.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachedAdapter {
    /// The LoRA settings (rank, alpha, targets as requested, ...).
    pub config: LoraConfig,
    /// Full names of the layers that carry a LoRA branch, in model order.
    pub adapted: Vec<String>,
    /// Full names of the layers trained in full (`modules_to_save`), in model order.
    pub trained: Vec<String>,
}

/// Sets every float parameter's `require_grad`: `false` freezes the base under an adapter,
/// `true` makes a merged model an ordinary trainable one again.
pub(super) struct RequireGrad(pub(super) bool);

impl ModuleMapper for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.set_require_grad(self.0)
    }
}

/// Whether a layer name is selected by a PEFT-style list entry: equal, or a `.`-suffix.
pub(super) fn name_matches(name: &str, entry: &str) -> bool {
    name == entry || name.ends_with(&format!(".{entry}"))
}

/// The layers selected by `config` (targets and `modules_to_save`), checked against the
/// model's linear layers.
pub(super) fn resolve(
    config: &LoraConfig,
    model: &CausalLm,
) -> Result<(Vec<String>, Vec<String>), ModelError> {
    let names = model.linear_layer_names();
    let available = || model.linear_layer_kinds();
    let default_targets;
    let targets = match &config.target_modules {
        Some(t) => t,
        None => {
            default_targets =
                TargetModules::Names(default_target_modules(model.config().architecture)?);
            &default_targets
        }
    };
    // PEFT matches `target_modules` entries at a `.` boundary but `modules_to_save` entries as
    // plain suffixes (`_set_trainable`); both are kept.
    let select_list = |entries: &[String], key: &str| -> Result<Vec<String>, ModelError> {
        let matches = |n: &str, e: &str| {
            if key == "modules_to_save" {
                n.ends_with(e)
            } else {
                name_matches(n, e)
            }
        };
        let unmatched: Vec<String> = entries
            .iter()
            .filter(|e| !names.iter().any(|n| matches(n, e)))
            .cloned()
            .collect();
        if !unmatched.is_empty() {
            return Err(ModelError::UnknownTargetModules {
                key: key.into(),
                unknown: unmatched,
                available: available(),
            });
        }
        Ok(names
            .iter()
            .filter(|n| entries.iter().any(|e| matches(n, e)))
            .cloned()
            .collect())
    };
    let adapted = match targets {
        TargetModules::AllLinear => names.clone(),
        TargetModules::Names(entries) => select_list(entries, "target_modules")?,
        TargetModules::Regex(pattern) => {
            let regex = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                ModelError::InvalidLoraConfig {
                    key: "target_modules".into(),
                    reason: format!("`{pattern}` is not a regular expression: {e}"),
                }
            })?;
            let selected: Vec<String> = names
                .iter()
                .filter(|n| regex.is_match(n))
                .cloned()
                .collect();
            if selected.is_empty() {
                return Err(ModelError::UnknownTargetModules {
                    key: "target_modules".into(),
                    unknown: vec![pattern.clone()],
                    available: available(),
                });
            }
            selected
        }
    };
    let trained = match &config.modules_to_save {
        Some(entries) => select_list(entries, "modules_to_save")?,
        None => Vec::new(),
    };
    let quantized: Vec<&String> = model
        .adaptable_layers()
        .into_iter()
        .filter(|(_, layer)| layer.quantized().is_some())
        .map(|(name, _)| name)
        .filter_map(|name| trained.iter().find(|t| **t == name))
        .collect();
    if let Some(name) = quantized.first() {
        return Err(ModelError::InvalidLoraConfig {
            key: "modules_to_save".into(),
            reason: format!(
                "`{name}` is held in 4 bits (load_in_4bit); a quantized layer cannot be \
                 trained in full (PEFT cannot either): adapt it with target_modules instead"
            ),
        });
    }
    if let Some(both) = trained.iter().find(|n| adapted.contains(n)) {
        return Err(ModelError::InvalidLoraConfig {
            key: "modules_to_save".into(),
            reason: format!(
                "`{both}` is also a LoRA target; a layer is either adapted or trained in full"
            ),
        });
    }
    Ok((adapted, trained))
}

impl CausalLm {
    /// Full names of the linear layers that can carry an adapter, in model order
    /// (`model.layers.0.self_attn.q_proj`, ..., `transformer.h.0.attn.c_attn`, ...). The
    /// output head and the embeddings are not among them.
    pub fn linear_layer_names(&self) -> Vec<String> {
        self.adaptable_layers()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    /// The distinct short names of [`CausalLm::linear_layer_names`] (`q_proj`, `k_proj`, ...):
    /// what `target_modules` entries usually are.
    pub fn linear_layer_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = Vec::new();
        for name in self.linear_layer_names() {
            let kind = name.rsplit('.').next().unwrap_or(&name).to_string();
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds
    }

    /// Every LoRA branch with the full name of its layer, in model order: the trainable
    /// factors (`branch.lora_a.id` / `lora_b.id` key their gradients and optimizer state).
    pub fn lora_branches(&self) -> Vec<(String, &LoraBranch)> {
        self.adaptable_layers()
            .into_iter()
            .filter_map(|(name, layer)| layer.lora().map(|l| (name, l)))
            .collect()
    }

    /// Every trainable copy of a `modules_to_save` layer with the layer's full name.
    pub fn trained_copies(&self) -> Vec<(String, &TrainedCopy)> {
        self.adaptable_layers()
            .into_iter()
            .filter_map(|(name, layer)| layer.trained().map(|c| (name, c)))
            .collect()
    }

    /// The adapter attached to this model, if any.
    pub fn adapter(&self) -> Option<&AttachedAdapter> {
        self.decoder().adapter()
    }

    pub(super) fn set_adapter(&mut self, adapter: Option<AttachedAdapter>) {
        self.decoder_mut().set_adapter(adapter);
    }

    /// Attaches new LoRA adapters: freezes every base parameter, then gives each target layer
    /// a branch initialised as PEFT does (A Kaiming-uniform, B zero, unless
    /// `init_lora_weights` says otherwise) from `seed`, and each `modules_to_save` layer a
    /// trainable copy. With the default init the model's output is unchanged.
    ///
    /// With `use_dora` each branch also gets DoRA's magnitude, initialised as PEFT does to
    /// `‖W + scale · B A‖` per output row (`‖W‖` with the default init).
    ///
    /// Errors: an adapter is already attached; invalid or unsupported settings;
    /// target names that match no linear layer ([`ModelError::UnknownTargetModules`] lists the
    /// model's linear layers).
    pub fn attach_lora(self, config: &LoraConfig, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        self.check_no_adapter()?;
        let (adapted, trained) = resolve(config, &self)?;
        let mut model = self.map(&mut RequireGrad(false));
        let mut rng = SplitMix64(seed);
        for (name, layer) in model.adaptable_layers_mut() {
            if adapted.contains(&name) {
                let lora = config.layer(&name)?;
                let [d_in, d_out] = base_dims(layer);
                let device = layer.weight().device();
                let branch = LoraBranch::init(
                    [lora.r, d_in, d_out],
                    lora.scale,
                    config.lora_dropout,
                    config.init_lora_weights,
                    &mut rng,
                    &device,
                );
                layer.set_lora(Some(if config.use_dora {
                    branch.with_initial_magnitude(dense_base(layer))
                } else {
                    branch
                }));
            } else if trained.contains(&name) {
                // Trained in float32 even over a base held in a lower dtype.
                let f32 = |t: Tensor<2>| t.detach().cast(FloatDType::F32);
                layer.set_trained(Some(TrainedCopy {
                    weight: Param::from_tensor(f32(layer.weight().val())),
                    bias: layer.bias().map(|b| Param::from_tensor(b.val().detach())),
                }));
            }
        }
        model.set_adapter(Some(AttachedAdapter {
            config: config.clone(),
            adapted,
            trained,
        }));
        Ok(model)
    }

    /// The same model with its adapters removed: the frozen base, sharing every weight buffer
    /// with `self` (no copy). Its logits are exactly the base model's (PEFT's
    /// `disable_adapter()`), which makes it the DPO reference of a LoRA run: build it once
    /// from the policy (`policy.valid().without_adapters()` or, before training, from the
    /// plain-device model) and evaluate it without autodiff.
    pub fn without_adapters(&self) -> Self {
        let mut model = self.clone();
        for (_, layer) in model.adaptable_layers_mut() {
            layer.set_lora(None);
            layer.set_trained(None);
        }
        model.set_adapter(None);
        model
    }

    /// Folds the adapters into the base weights (`W + scale · (B A)ᵀ`, scaled per output by
    /// `m / ‖W + scale · B A‖` for DoRA, and the trained copies of
    /// `modules_to_save` replacing their originals; PEFT's `merge_and_unload`) and returns a
    /// plain float32 model with every parameter trainable again, ready for
    /// [`CausalLm::save_pretrained`]. Without an adapter, returns the model unchanged.
    pub fn merge_adapters(self) -> Self {
        if self.adapter().is_none() {
            return self;
        }
        let mut model = self;
        for (_, layer) in model.adaptable_layers_mut() {
            let trained = layer.trained().map(|copy| {
                (
                    Param::from_tensor(copy.weight.val().detach()),
                    copy.bias
                        .as_ref()
                        .map(|b| Param::from_tensor(b.val().detach())),
                )
            });
            if let Some((weight, bias)) = trained {
                layer.set_base(weight, bias);
            }
            let merged = layer.lora().map(|lora| lora.merged(dense_base(layer)));
            if let Some(merged) = merged {
                let bias = layer.bias().cloned();
                layer.set_base(Param::from_tensor(merged), bias);
            }
            layer.set_lora(None);
            layer.set_trained(None);
        }
        model.set_adapter(None);
        let model = model.map(&mut RequireGrad(true));
        // A base held in a lower dtype (an embedding, an untouched head) comes back in float32:
        // the merged model is an ordinary float32 one.
        crate::precision::store_matrices_as(model, FloatDType::F32)
    }

    pub(super) fn check_no_adapter(&self) -> Result<(), ModelError> {
        match self.adapter() {
            Some(adapter) => Err(ModelError::AdapterAlreadyAttached {
                layers: adapter.adapted.len() + adapter.trained.len(),
            }),
            None => Ok(()),
        }
    }

    /// Every LoRA-capable layer with its full Hugging Face module name, in model order.
    pub(crate) fn adaptable_layers(&self) -> Vec<(String, &dyn Adaptable)> {
        self.decoder().linear_layers()
    }

    /// [`CausalLm::adaptable_layers`], mutable.
    pub(crate) fn adaptable_layers_mut(&mut self) -> Vec<(String, &mut dyn Adaptable)> {
        self.decoder_mut().linear_layers_mut()
    }
}
