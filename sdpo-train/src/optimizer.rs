//! AdamW as transformers' `Trainer` sets it up: decoupled weight decay on every weight matrix and
//! embedding, none on biases and normalisation weights (`get_decay_parameter_names`).

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::tensor::Tensor;

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;

/// The optimizer (`optim`), by transformers' name. Other transformers optimizers are refused by
/// the command line with the reason (docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// `torch.optim.AdamW`: this crate's AdamW (decoupled weight decay).
    AdamwTorch,
    /// The fused kernel of the same AdamW (transformers 5's default): the same update here.
    AdamwTorchFused,
}

/// Finds the parameters transformers exempts from weight decay: every `bias`, and every
/// parameter of a normalisation layer (burn's `RmsNorm` / `LayerNorm`, HF's `*norm*` / `ln_*`).
#[derive(Default)]
struct NoDecayCollector {
    path: Vec<(String, String)>,
    ids: Vec<ParamId>,
    names: Vec<String>,
}

impl NoDecayCollector {
    fn in_norm(&self) -> bool {
        self.path
            .iter()
            .any(|(_, kind)| kind == "Struct:RmsNorm" || kind == "Struct:LayerNorm")
    }

    fn name(&self) -> String {
        self.path
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl ModuleVisitor for NoDecayCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // The last path element is the parameter's own field name (`weight`, `bias`, `gamma`).
        let is_bias = self.path.last().is_some_and(|(n, _)| n == "bias");
        if is_bias || self.in_norm() {
            self.ids.push(param.id);
            self.names.push(self.name());
        }
    }
}

/// The burn paths of the parameters without weight decay (biases and normalisation weights).
pub fn no_decay_parameter_names<M: Module>(model: &M) -> Vec<String> {
    let mut collector = NoDecayCollector::default();
    model.visit(&mut collector);
    collector.names
}

/// AdamW with the configuration's hyper-parameters; weight decay applies to every parameter
/// except those of [`no_decay_parameter_names`].
pub fn adamw<M: Module>(config: &TrainConfig, model: &M) -> ModuleOptimizer {
    let base = AdamWConfig::new()
        .with_beta_1(config.adam_beta1 as f32)
        .with_beta_2(config.adam_beta2 as f32)
        .with_epsilon(config.adam_epsilon as f32);
    let optimizer = base
        .clone()
        .with_weight_decay(config.weight_decay as f32)
        .init();
    if config.weight_decay == 0.0 {
        return optimizer;
    }
    let mut collector = NoDecayCollector::default();
    model.visit(&mut collector);
    optimizer.with_group(
        ParamGroup::from_ids(collector.ids),
        base.with_weight_decay(0.0).build(),
        None,
    )
}
