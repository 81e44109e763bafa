//! `gradient_checkpointing = true` recomputes activations in the backward pass instead of
//! keeping them; it must not change the gradients. For every tiny model of the fixture set, the
//! gradient of the sum of its masked next-token log-probs on the golden inputs is computed on an
//! device built by `training_device(device, true)` and by `training_device(device, false)` (what
//! the trainer builds the policy on) and compared parameter by parameter.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::{GradientCheckpointingStrategy, Gradients};
use common::{Golden, host, model_dir, tiny_models};
use sdpo_core::completion_logps;
use sdpo_models::CausalLm;
use sdpo_testkit::{Tolerance, assert_close};

/// The device `sdpo_train::training_device(device, gradient_checkpointing)` builds the policy on
/// (sdpo-models cannot depend on sdpo-train, so the two lines are repeated here).
fn training_device(device: &Device, gradient_checkpointing: bool) -> Device {
    let device = device.clone().autodiff();
    if gradient_checkpointing {
        device.gradient_checkpointing()
    } else {
        device
    }
}

/// Collects the gradient of every float parameter, in visiting order (the same for two models
/// of one architecture).
struct GradCollector<'a> {
    grads: &'a Gradients,
    found: Vec<Option<Vec<f32>>>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.found.push(param.val().grad(self.grads).map(host));
    }
}

/// The loss value and every parameter's gradient of `sum(masked next-token log-probs)`.
fn logp_sum_gradients(name: &str, device: &Device) -> (f32, Vec<Option<Vec<f32>>>) {
    let dir = model_dir(name);
    let golden = Golden::open(&dir.join("golden.safetensors"));
    let model = CausalLm::from_pretrained(&dir, device)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .train();
    let ids = golden.int_tensor("input_ids", device);
    let mask = golden.int_tensor("attention_mask", device);
    let logits = model.forward(ids.clone(), mask.clone());
    let (logps, _) = completion_logps(logits, ids, mask).expect("log-probs");
    let objective = logps.sum();
    let value = host(objective.clone())[0];
    let grads = objective.backward();
    let mut collector = GradCollector {
        grads: &grads,
        found: Vec::new(),
    };
    model.visit(&mut collector);
    (value, collector.found)
}

#[test]
fn gradient_checkpointing_gives_the_same_gradients() {
    let models = tiny_models();
    for dev in sdpo_testkit::test_devices!() {
        let plain = training_device(&dev.device, false);
        let checkpointed = training_device(&dev.device, true);
        // The flag really switches burn's recomputation on (else the comparison is vacuous).
        assert_eq!(
            plain.gradient_checkpointing_strategy(),
            Some(GradientCheckpointingStrategy::Disabled)
        );
        assert_eq!(
            checkpointed.gradient_checkpointing_strategy(),
            Some(GradientCheckpointingStrategy::Balanced)
        );
        for name in &models {
            let what = format!("[{}] {name}", dev.name);
            let (value, grads) = logp_sum_gradients(name, &plain);
            let (value_ckpt, grads_ckpt) = logp_sum_gradients(name, &checkpointed);
            assert_close(
                &[value_ckpt],
                &[value],
                Tolerance::EXACT,
                &format!("{what} objective"),
            );
            assert_eq!(grads.len(), grads_ckpt.len(), "{what}: parameter count");
            let (mut worst, mut compared) = (0.0f64, 0usize);
            for (i, (g, g_ckpt)) in grads.iter().zip(&grads_ckpt).enumerate() {
                // Every parameter gets a gradient: the objective depends on all of them.
                let g = g
                    .as_ref()
                    .unwrap_or_else(|| panic!("{what}: no gradient #{i}"));
                let g_ckpt = g_ckpt
                    .as_ref()
                    .unwrap_or_else(|| panic!("{what}: no checkpointed gradient #{i}"));
                // The same operations are recomputed, so only summation order could differ:
                // 1e-6 of the tensor's largest entry (f32 rounding is ~6e-8 relative).
                let c = assert_close(
                    g_ckpt,
                    g,
                    Tolerance::relative_to_max(1e-6),
                    &format!("{what} gradient #{i}"),
                );
                assert!(
                    g.iter().any(|x| *x != 0.0),
                    "{what}: gradient #{i} is all zero, the comparison would not bite"
                );
                worst = worst.max(c.max_abs_diff);
                compared += 1;
            }
            println!(
                "[{}] {name}: {compared} parameter gradients equal with and without \
                 checkpointing (max |diff| {worst:.1e})",
                dev.name
            );
        }
    }
}
