//! Checks a checkpoint's optimizer state against the model before burn loads it. burn's loader
//! re-initialises, without a word, every state it cannot rebuild (a missing leaf, a wrong
//! dtype), and a state of the wrong size would only fail inside the next update; so every
//! state tensor is checked here first, by its shape and dtype against the parameter it belongs
//! to, and every parameter's state for completeness.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};

use crate::error::TrainError;
use crate::optimizer::{Optimizer, STATE_BLOCK};

/// The leaves one parameter's state has, per kind of state: AdamW's (burn's `AdamWState`) and
/// the 8-bit optimizer's two layouts (float32 moments, or blockwise codes with their maxima).
const ADAMW_LEAVES: &[&[&str]] = &[&["momentum.moment_1", "momentum.moment_2"]];
const ADAMW_8BIT_LEAVES: &[&[&str]] =
    &[&["m", "v"], &["m_absmax", "m_codes", "v_absmax", "v_codes"]];

/// A parameter of the model: its dotted path and shape.
struct ParamShape {
    name: String,
    dims: Vec<usize>,
}

#[derive(Default)]
struct ParamShapes {
    path: Vec<String>,
    params: HashMap<u64, ParamShape>,
}

impl ModuleVisitor for ParamShapes {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.params.insert(
            param.id.val(),
            ParamShape {
                name: self.path.join("."),
                dims: param.shape().to_vec(),
            },
        );
    }
}

/// Checks the optimizer state file `path` of an `optim` run against `model`'s parameters: each
/// state belongs to a parameter of the model, has every leaf its optimizer writes, and each
/// leaf has the parameter's size (an 8-bit state's maxima one per block of
/// [`STATE_BLOCK`]) and the dtype the optimizer keeps it in. A file that cannot be read is left
/// to the loader, which names the problem.
pub(crate) fn check_optimizer_state<M: Module>(
    model: &M,
    optim: Optimizer,
    path: &Path,
) -> Result<(), TrainError> {
    let Ok(reader) = burn_pack::Reader::from_file(path) else {
        return Ok(());
    };
    let scalars = reader.scalars().clone();
    let Ok(tensors) = reader.into_tensors() else {
        return Ok(());
    };
    let bad = |reason: String| TrainError::Optimizer {
        path: path.to_path_buf(),
        reason,
    };
    let mut shapes = ParamShapes::default();
    model.visit(&mut shapes);
    let mut leaves: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for tensor in &tensors {
        let Some(id) = tensor.param_id else {
            return Err(bad(format!("state `{}` names no parameter", tensor.name)));
        };
        let Some(param) = shapes.params.get(&id) else {
            return Err(bad(format!(
                "state `{}` is for parameter id {id}, which the model does not have (the \
                 checkpoint's parameter ids are in its trainer_state.json)",
                tensor.name
            )));
        };
        let leaf = tensor
            .name
            .strip_prefix(&format!("{id}."))
            .unwrap_or(&tensor.name)
            .to_string();
        let dims = tensor.shape.to_vec();
        let values: usize = param.dims.iter().product();
        let (expected_dims, dtype_ok) = match leaf.as_str() {
            "m_absmax" | "v_absmax" => (
                vec![values.div_ceil(STATE_BLOCK)],
                tensor.dtype == DType::F32,
            ),
            "m_codes" | "v_codes" => (vec![values], tensor.dtype == DType::U8),
            "m" | "v" => (vec![values], tensor.dtype == DType::F32),
            _ => (param.dims.clone(), tensor.dtype.is_float()),
        };
        if dims != expected_dims {
            return Err(bad(format!(
                "state `{leaf}` of parameter `{}` has shape {dims:?}; the parameter's shape \
                 {:?} needs {expected_dims:?}",
                param.name, param.dims
            )));
        }
        if !dtype_ok {
            return Err(bad(format!(
                "state `{leaf}` of parameter `{}` is {:?}, not a dtype {} keeps it in",
                param.name,
                tensor.dtype,
                optim.name()
            )));
        }
        leaves.entry(id).or_default().push(leaf);
    }
    let (layouts, step_scalar) = match optim {
        Optimizer::Adamw8bit => (ADAMW_8BIT_LEAVES, "step"),
        Optimizer::AdamwTorch | Optimizer::AdamwTorchFused => (ADAMW_LEAVES, "momentum.time"),
    };
    for (id, mut found) in leaves {
        found.sort();
        if !scalars.contains_key(&format!("{id}.{step_scalar}")) {
            let name = shapes.params.get(&id).map_or("?", |p| p.name.as_str());
            return Err(bad(format!(
                "the state of parameter `{name}` has no step count (`{step_scalar}`)"
            )));
        }
        if !layouts.iter().any(|layout| *layout == found.as_slice()) {
            let name = shapes.params.get(&id).map_or("?", |p| p.name.as_str());
            return Err(bad(format!(
                "the state of parameter `{name}` has the leaves {found:?}, which is no state \
                 {} writes ({layouts:?})",
                optim.name()
            )));
        }
    }
    Ok(())
}
