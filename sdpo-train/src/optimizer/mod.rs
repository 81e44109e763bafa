//! The optimizers as transformers' `Trainer` sets them up: decoupled weight decay on every weight
//! matrix and embedding, none on biases and normalisation weights (`get_decay_parameter_names`);
//! AdamW in float32 ([`adamw`]) or bitsandbytes' 8-bit AdamW ([`adamw_8bit`]).

mod adamw;
mod adamw_8bit;

pub use adamw::AdamW;

pub use adamw_8bit::{AdamW8bit, AdamW8bitState, MIN_8BIT_SIZE, Moments, STATE_BLOCK};

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::ModuleOptimizer;
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
    /// bitsandbytes' 8-bit AdamW (`adamw_8bit`; transformers' aliases `adamw_bnb_8bit` and
    /// `paged_adamw_8bit` are the same optimizer here: its states always live in host memory).
    #[serde(
        rename = "adamw_8bit",
        alias = "adamw_bnb_8bit",
        alias = "paged_adamw_8bit"
    )]
    Adamw8bit,
}

impl Optimizer {
    /// The name transformers gives the optimizer.
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::AdamwTorch => "adamw_torch",
            Optimizer::AdamwTorchFused => "adamw_torch_fused",
            Optimizer::Adamw8bit => "adamw_8bit",
        }
    }

    /// Whether two optimizers keep the same state (a checkpoint of one resumes the other).
    pub fn same_state(self, other: Optimizer) -> bool {
        (self == Optimizer::Adamw8bit) == (other == Optimizer::Adamw8bit)
    }
}

/// What the optimizers need to know of each parameter: whether transformers exempts it from
/// weight decay (every `bias`, and every parameter of a normalisation layer: burn's `RmsNorm` /
/// `LayerNorm`, HF's `*norm*` / `ln_*`), whether it is an embedding's (`nn.Embedding`, which
/// transformers gives 32-bit states in bitsandbytes' 8-bit optimizers), and whether burn holds
/// it transposed from its Hugging Face layout (a `Linear` weight, `[in, out]` here and
/// `[out, in]` in torch; LoRA's `A` and `B`), which decides the 8-bit optimizer's blocks.
#[derive(Default)]
struct ParamRoles {
    path: Vec<(String, String)>,
    params: Vec<ParamRole>,
}

struct ParamRole {
    id: ParamId,
    name: String,
    no_decay: bool,
    embedding: bool,
    transposed: bool,
}

impl ParamRoles {
    fn of<M: Module>(model: &M) -> Vec<ParamRole> {
        let mut roles = ParamRoles::default();
        model.visit(&mut roles);
        roles.params
    }

    fn inside(&self, kind: &str) -> bool {
        self.path.iter().any(|(_, k)| k == kind)
    }

    /// Whether the parameter is a matrix burn holds as `[in, out]` where torch holds `[out, in]`:
    /// the weight of a `Linear` (burn's, or ours with LoRA) or of its trained copy (but not of
    /// GPT-2's `Conv1D`, `[in, out]` in torch too), LoRA's `A` and `B`.
    fn is_transposed(&self) -> bool {
        // Each path element is a field name and the type of the struct that holds it.
        let [.., (_, grand_owner), (field, owner)] = self.path.as_slice() else {
            return false;
        };
        match (field.as_str(), owner.as_str()) {
            ("weight", "Struct:Linear" | "Struct:LoraLinear") => true,
            ("weight", "Struct:TrainedCopy") => grand_owner != "Struct:Conv1D",
            ("lora_a" | "lora_b", "Struct:LoraBranch") => true,
            _ => false,
        }
    }
}

impl ModuleVisitor for ParamRoles {
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
        let name = self
            .path
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(".");
        self.params.push(ParamRole {
            id: param.id,
            name,
            no_decay: is_bias || self.inside("Struct:RmsNorm") || self.inside("Struct:LayerNorm"),
            embedding: self.inside("Struct:Embedding"),
            transposed: D == 2 && self.is_transposed(),
        });
    }
}

/// The burn paths of the parameters without weight decay (biases and normalisation weights).
pub fn no_decay_parameter_names<M: Module>(model: &M) -> Vec<String> {
    ParamRoles::of(model)
        .into_iter()
        .filter(|p| p.no_decay)
        .map(|p| p.name)
        .collect()
}

/// The configuration's optimizer (`optim`) for `model`'s parameters.
pub fn optimizer<M: Module>(config: &TrainConfig, model: &M) -> ModuleOptimizer {
    match config.optim {
        Optimizer::AdamwTorch | Optimizer::AdamwTorchFused => adamw(config, model),
        Optimizer::Adamw8bit => adamw_8bit(config, model),
    }
}

/// AdamW with the configuration's hyper-parameters; weight decay applies to every parameter
/// except those of [`no_decay_parameter_names`].
pub fn adamw<M: Module>(config: &TrainConfig, model: &M) -> ModuleOptimizer {
    let group = |weight_decay: f64| AdamW {
        beta_1: config.adam_beta1,
        beta_2: config.adam_beta2,
        epsilon: config.adam_epsilon,
        weight_decay,
    };
    let optimizer = ModuleOptimizer::from(group(config.weight_decay));
    if config.weight_decay == 0.0 {
        return optimizer;
    }
    let no_decay = ParamRoles::of(model)
        .into_iter()
        .filter(|p| p.no_decay)
        .map(|p| p.id)
        .collect();
    optimizer.with_group(ParamGroup::from_ids(no_decay), group(0.0), None)
}

/// bitsandbytes' 8-bit AdamW as transformers builds it for `optim = "adamw_8bit"`: the decay
/// groups of [`adamw`], float32 moments for embedding weights, and every parameter's blocks
/// taken in its Hugging Face layout.
pub fn adamw_8bit<M: Module>(config: &TrainConfig, model: &M) -> ModuleOptimizer {
    let group = |role: &ParamRole| AdamW8bit {
        beta_1: config.adam_beta1,
        beta_2: config.adam_beta2,
        epsilon: config.adam_epsilon,
        weight_decay: if role.no_decay {
            0.0
        } else {
            config.weight_decay
        },
        float_moments: role.embedding,
        hf_transposed: role.transposed,
    };
    // One group per distinct setting; every parameter is in exactly one of them.
    let mut groups: Vec<(AdamW8bit, Vec<ParamId>)> = Vec::new();
    for role in ParamRoles::of(model) {
        let optim = group(&role);
        match groups.iter_mut().find(|(o, _)| *o == optim) {
            Some((_, ids)) => ids.push(role.id),
            None => groups.push((optim, vec![role.id])),
        }
    }
    // burn's optimizer wants a default for parameters in no group (there are none).
    let fallback = AdamW8bit {
        beta_1: config.adam_beta1,
        beta_2: config.adam_beta2,
        epsilon: config.adam_epsilon,
        weight_decay: config.weight_decay,
        float_moments: false,
        hf_transposed: false,
    };
    groups.into_iter().fold(
        ModuleOptimizer::from(fallback),
        |optimizer, (optim, ids)| optimizer.with_group(ParamGroup::from_ids(ids), optim, None),
    )
}
