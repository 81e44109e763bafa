//! SDPO end to end through the models: policy = tiny `llama` (autodiff), reference = tiny
//! `llama_tied` (plain device). Per-token log-probs, the loss at q = 0 and q = 0.6, and the
//! gradient of every policy parameter against `sdpo_e2e.json` / `sdpo_e2e_grads.safetensors`
//! (transformers + PyTorch autograd).

mod common;

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot};
use burn::tensor::Gradients;
use common::{Golden, host, model_dir};
use sdpo_core::{LossConfig, PreferenceLoss, TokenLogps, completion_logps};
use sdpo_models::CausalLm;
use sdpo_testkit::{Tolerance, assert_close};
use serde_json::Value;

fn ints(v: &Value, device: &Device) -> Tensor<2, Int> {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).expect("int matrix");
    let (b, t) = (rows.len(), rows.first().map_or(0, Vec::len));
    let flat: Vec<i64> = rows.into_iter().flatten().collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), device)
}

fn floats(v: &Value) -> Vec<f32> {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).expect("float matrix");
    rows.into_iter().flatten().collect()
}

/// Per-token completion log-probs and loss mask of `model` on one side of the pairs.
fn side_logps(model: &CausalLm, side: &Value, device: &Device) -> (Tensor<2>, Tensor<2, Bool>) {
    let ids = ints(&side["input_ids"], device);
    let logits = model.forward(ids.clone(), ints(&side["attention_mask"], device));
    completion_logps(logits, ids, ints(&side["completion_mask"], device)).expect("logps")
}

/// Collects the gradient of every float parameter, by parameter id.
struct GradCollector<'a> {
    grads: &'a Gradients,
    found: HashMap<u64, Vec<f32>>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.found.insert(param.id.val(), host(g));
        }
    }
}

/// `[rows, cols]` row-major -> `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

#[test]
fn sdpo_loss_and_policy_gradients_match_pytorch() {
    let fixture: Value =
        serde_json::from_str(&sdpo_testkit::read_fixture("sdpo_e2e.json")).expect("json");
    let grads_file = Golden::open(&sdpo_testkit::fixtures_dir().join("sdpo_e2e_grads.safetensors"));
    let beta = fixture["beta"].as_f64().expect("beta");
    let label_smoothing = fixture["label_smoothing"]
        .as_f64()
        .expect("label_smoothing");

    for dev in sdpo_testkit::test_devices!() {
        let train = dev.device.clone().autodiff();
        let reference =
            CausalLm::from_pretrained(model_dir("llama_tied"), &dev.device).expect("ref");
        // The reference's log-probs are constants: computed on the plain device, moved over.
        let constant = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &train);
        let (ref_chosen, _) = side_logps(&reference, &fixture["chosen"], &dev.device);
        let (ref_rejected, _) = side_logps(&reference, &fixture["rejected"], &dev.device);
        let (ref_chosen, ref_rejected) = (constant(ref_chosen), constant(ref_rejected));

        for q in fixture["grad_thresholds"].as_array().expect("thresholds") {
            let q = q.as_f64().expect("q");
            let policy = CausalLm::from_pretrained(model_dir("llama"), &train).expect("policy");
            let (pc, chosen_mask) = side_logps(&policy, &fixture["chosen"], &train);
            let (pr, rejected_mask) = side_logps(&policy, &fixture["rejected"], &train);

            // Per-token log-probs first: a mismatch here explains one in the loss.
            for (got, key) in [
                (&pc, "policy_chosen_logps"),
                (&pr, "policy_rejected_logps"),
                (&ref_chosen, "ref_chosen_logps"),
                (&ref_rejected, "ref_rejected_logps"),
            ] {
                assert_close(
                    &host(got.clone()),
                    &floats(&fixture[key]),
                    Tolerance::absolute(1e-4),
                    &format!("[{}] q={q} {key}", dev.name),
                );
            }

            let inputs = TokenLogps {
                policy_chosen_logps: pc,
                policy_rejected_logps: pr,
                ref_chosen_logps: ref_chosen.clone(),
                ref_rejected_logps: ref_rejected.clone(),
                chosen_loss_mask: chosen_mask,
                rejected_loss_mask: rejected_mask,
                policy_chosen_log_sum_sq_probs: None,
                policy_rejected_log_sum_sq_probs: None,
            };
            let config = LossConfig {
                beta,
                label_smoothing,
                sdpo_threshold: q,
                ..LossConfig::default()
            };
            let out = PreferenceLoss::new(config)
                .expect("config")
                .forward(&inputs, None)
                .expect("loss");
            let result = fixture["results"]
                .as_array()
                .expect("results")
                .iter()
                .find(|r| r["threshold"].as_f64() == Some(q))
                .expect("result for q");
            let want_loss = result["loss_mean"].as_f64().expect("loss_mean");
            let loss = host(out.loss.clone())[0];
            assert_close(
                &[loss],
                &[want_loss],
                Tolerance::absolute(1e-5),
                &format!("[{}] q={q} loss_mean", dev.name),
            );

            let grads = out.loss.backward();
            let mut collector = GradCollector {
                grads: &grads,
                found: HashMap::new(),
            };
            policy.visit(&mut collector);
            let CausalLm::Llama(inner) = &policy else {
                panic!("llama expected")
            };
            let params = inner.collect(None, Some(Box::new(BurnToPyTorchAdapter)), false);
            let prefix = format!("q{q:?}/");
            let golden_names: Vec<String> = grads_file
                .names()
                .into_iter()
                .filter(|n| n.starts_with(&prefix))
                .collect();
            assert_eq!(
                golden_names.len(),
                params.len(),
                "[{}] parameter count",
                dev.name
            );
            let mut worst = 0.0f64;
            for p in &params {
                let (want, shape) = grads_file.f32(&format!("{prefix}{}", p.name));
                let id = p.param_id.expect("parameter id");
                let got = collector
                    .found
                    .get(&id)
                    .unwrap_or_else(|| panic!("no gradient for {}", p.name));
                // burn's Linear stores [in, out]; PyTorch's gradient is [out, in].
                let is_linear = shape.len() == 2 && !p.name.contains("embed_tokens");
                let got = if is_linear {
                    transpose(got, shape[1], shape[0])
                } else {
                    got.clone()
                };
                // The fixture README: 1e-4 relative to the tensor's max |value|.
                let c = assert_close(
                    &got,
                    &want,
                    Tolerance::relative_to_max(1e-4),
                    &format!("[{}] q={q} gradient of {}", dev.name, p.name),
                );
                worst = worst.max(c.max_ratio * 1e-4);
            }
            println!(
                "[{}] q={q}: loss {loss} (golden {want_loss}), {} parameter gradients, \
                 worst |diff| / max|g| <= {worst:.2e}",
                dev.name,
                params.len()
            );
        }
    }
}
