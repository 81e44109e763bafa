//! TR-DPO (`sync_ref_model`, Gorbatovski et al., arXiv 2404.09656): every
//! `ref_model_sync_steps` optimizer steps the reference moves toward the policy,
//! `ref ← α · policy + (1 − α) · ref` on every parameter, as TRL's `SyncRefModelCallback`
//! (`ref.mul_(1 - α).add_(policy, alpha=α)` after the optimizer step, before that step's
//! logging and evaluation). SDPO's selection then follows the moving reference.
//!
//! The mix is computed in float32 and stored in the reference's own dtype (a `ref_dtype` or
//! `bf16` reference is rounded after each mix, as a bfloat16 reference in PyTorch would be).
//! A LoRA policy is mixed as its merged weights (`W + scale · B A`, PEFT's
//! `merge_and_unload`) into a separate reference of the same shapes.

use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, FloatDType, Tensor};

use sdpo_models::CausalLm;

use super::Reference;
use crate::checkpoint::manifest::{ManifestStatus, verify_manifest, write_manifest};
use crate::error::TrainError;
use crate::startup::model_error;

/// The shape of every parameter of `model`, in visiting order.
pub fn param_shapes(model: &CausalLm) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl ModuleVisitor for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().dims().to_vec());
        }
    }
    let mut shapes = Shapes(Vec::new());
    model.visit(&mut shapes);
    shapes.0
}

/// Why `reference` cannot follow `policy` (a LoRA policy given merged): a different number of
/// parameters or a different shape, named by its position. `None` when every parameter pairs.
pub fn incompatibility(policy: &CausalLm, reference: &CausalLm) -> Option<String> {
    let (ours, theirs) = (param_shapes(policy), param_shapes(reference));
    if ours.len() != theirs.len() {
        return Some(format!(
            "the policy has {} parameter tensors and the reference {}",
            ours.len(),
            theirs.len()
        ));
    }
    ours.iter().zip(&theirs).position(|(a, b)| a != b).map(|i| {
        format!(
            "parameter tensor {i} is {:?} in the policy and {:?} in the reference",
            ours[i], theirs[i]
        )
    })
}

/// Whether the reference is synchronised after optimizer step `step` (1-based): every
/// `every` steps, as TRL's `state.global_step % ref_model_sync_steps == 0`.
pub fn syncs_after(step: usize, every: usize) -> bool {
    every > 0 && step.is_multiple_of(every)
}

/// `reference` with every parameter replaced by `(1 − alpha) · reference + alpha · policy`
/// (parameter ids kept). `policy` must be a plain-device model without adapters whose
/// parameters pair with the reference's ([`incompatibility`] is `None`).
pub fn mix_toward(reference: CausalLm, policy: &CausalLm, alpha: f64) -> CausalLm {
    struct Flatten(Vec<Tensor<1>>);
    impl ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            let n = value.shape().num_elements();
            self.0.push(value.cast(FloatDType::F32).reshape([n]));
        }
    }
    struct Mix {
        policy: std::vec::IntoIter<Tensor<1>>,
        alpha: f64,
    }
    impl ModuleMapper for Mix {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let Some(theirs) = self.policy.next() else {
                return param;
            };
            let alpha = self.alpha;
            param.map(|reference| {
                let dtype = FloatDType::from(reference.dtype());
                let dims = reference.dims();
                let mixed = reference.cast(FloatDType::F32).mul_scalar(1.0 - alpha)
                    + theirs.reshape(dims).mul_scalar(alpha);
                mixed.cast(dtype)
            })
        }
    }
    let mut flat = Flatten(Vec::new());
    policy.visit(&mut flat);
    reference.map(&mut Mix {
        policy: flat.0.into_iter(),
        alpha,
    })
}

/// The directory inside a checkpoint that holds a synchronised reference (its
/// `model.safetensors`, `config.json` and its own `manifest.json`).
pub const REFERENCE_DIR: &str = "reference";

/// `dir` when it holds a moving reference (a TR-DPO checkpoint evaluated or inspected).
pub fn sync_reference_of(dir: &std::path::Path) -> Option<&std::path::Path> {
    dir.join(REFERENCE_DIR).is_dir().then_some(dir)
}

/// Moves the reference model toward `policy` (the training policy; a LoRA policy's adapters
/// are merged into a copy first).
pub fn synchronise(reference: &mut Reference, policy: &CausalLm, alpha: f64) {
    if let Reference::Model(model) = reference {
        let merged = policy.valid().merge_adapters();
        let current = std::mem::replace(model.as_mut(), merged.clone());
        **model = mix_toward(current, &merged, alpha);
    }
}

/// Checks that `sync_ref_model` can work with this reference: a reference model (not
/// precomputed log-probs, not `reference_free`) whose parameters pair with the policy's.
pub fn check_reference(reference: &Reference, initial: &CausalLm) -> Result<(), TrainError> {
    let refuse = |reason: String| TrainError::Config {
        key: "sync_ref_model".into(),
        reason,
    };
    match reference {
        Reference::Model(model) => {
            let policy = initial.valid().merge_adapters();
            match incompatibility(&policy, model) {
                None => Ok(()),
                Some(why) => Err(refuse(format!(
                    "mixes the policy into the reference parameter by parameter, so the \
                     reference needs the policy's architecture and shapes: {why}"
                ))),
            }
        }
        Reference::Precomputed { .. } => Err(refuse(
            "cannot move a precomputed reference (precompute_ref_log_probs = true)".into(),
        )),
        Reference::None => Err(refuse(
            "has no reference to move with reference_free = true".into(),
        )),
    }
}

/// Writes the reference model into `checkpoint/reference` (with its own manifest), so that a
/// resumed run continues from the synchronised reference rather than the initial one.
pub fn save_reference(reference: &Reference, checkpoint: &Path) -> Result<(), TrainError> {
    let Reference::Model(model) = reference else {
        return Ok(());
    };
    let dir = checkpoint.join(REFERENCE_DIR);
    model.save_pretrained(&dir).map_err(model_error(&dir))?;
    write_manifest(&dir)
}

/// Reads the synchronised reference a checkpoint holds, verified against its manifest, in the
/// dtype layout of `like` (the reference as a fresh run builds it).
pub fn load_reference(
    checkpoint: &Path,
    like: &Reference,
    device: &Device,
) -> Result<Reference, TrainError> {
    let dir = checkpoint.join(REFERENCE_DIR);
    if verify_manifest(&dir)? == ManifestStatus::Missing {
        return Err(TrainError::NotACheckpoint {
            path: dir,
            file: sdpo_run::MANIFEST_FILE,
        });
    }
    let loaded = CausalLm::from_pretrained(&dir, device).map_err(model_error(&dir))?;
    let Reference::Model(fresh) = like else {
        return Ok(Reference::Model(Box::new(loaded)));
    };
    let loaded = loaded.with_matmul_precision(fresh.config().matmul_precision);
    // The same storage dtype per parameter as the freshly built reference.
    struct Dtypes(Vec<FloatDType>);
    impl ModuleVisitor for Dtypes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(FloatDType::from(param.val().dtype()));
        }
    }
    struct CastEach(std::vec::IntoIter<FloatDType>);
    impl ModuleMapper for CastEach {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match self.0.next() {
                Some(dtype) => param.map(|t| t.cast(dtype)),
                None => param,
            }
        }
    }
    let mut dtypes = Dtypes(Vec::new());
    fresh.visit(&mut dtypes);
    Ok(Reference::Model(Box::new(
        loaded.map(&mut CastEach(dtypes.0.into_iter())),
    )))
}
