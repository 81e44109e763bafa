//! LoRA adapters against PEFT 0.21.2 (`fixtures/lora/<name>/`, spec in the fixtures README
//! §4b): logits with the adapter on, off and merged; SDPO with the adapter-disabled base as the
//! reference (loss, kept tokens and the gradient of every `lora_A` / `lora_B`).

mod common;

use std::path::PathBuf;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use common::{Golden, host, max_abs_diff, side_logps};
use sdpo_core::{LossConfig, PreferenceLoss, TokenLogps};
use sdpo_models::CausalLm;
use serde_json::Value;

const TOL: f32 = 1e-4;

/// Every adapter directory of `fixtures/lora/` (sorted), with its parsed `golden.json`.
fn adapters() -> Vec<(String, PathBuf, Value)> {
    let root = sdpo_testkit::fixtures_dir().join("lora");
    let mut out: Vec<(String, PathBuf, Value)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("read {}: {e}", root.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|dir| dir.join("golden.json").is_file())
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let golden: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap())
                    .expect("golden.json");
            (name, dir, golden)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no adapters under {}", root.display());
    out
}

/// The base checkpoint of an adapter fixture (`base_model_dir`, relative to the fixtures).
fn base_dir(golden: &Value) -> PathBuf {
    sdpo_testkit::fixtures_dir().join(golden["base_model_dir"].as_str().expect("base_model_dir"))
}

fn logits(model: &CausalLm, golden: &Golden, device: &Device) -> Vec<f32> {
    let ids = golden.int_tensor("input_ids", device);
    let mask = golden.int_tensor("attention_mask", device);
    host(model.forward(ids, mask))
}

#[test]
fn peft_adapters_give_peft_logits_on_off_and_merged() {
    let mut checked = 0;
    for dev in sdpo_testkit::test_devices!() {
        for (name, dir, golden_json) in adapters() {
            let golden = Golden::open(&dir.join("golden.safetensors"));
            let base = CausalLm::from_pretrained(base_dir(&golden_json), &dev.device)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let model = base
                .load_adapter(&dir)
                .unwrap_or_else(|e| panic!("{name}: {e}"));

            let on = logits(&model, &golden, &dev.device);
            let off = logits(&model.without_adapters(), &golden, &dev.device);
            let merged = logits(&model.clone().merge_adapters(), &golden, &dev.device);
            for (got, key) in [
                (&on, "logits"),
                (&off, "logits_adapter_disabled"),
                (&merged, "logits_merged"),
            ] {
                let (want, _) = golden.f32(key);
                let d = max_abs_diff(got, &want);
                assert!(d <= TOL, "[{}] {name}: {key} differ by {d}", dev.name);
                checked += 1;
            }
            // The adapter matters (PEFT's own on/off difference), so "on" is not the base.
            let on_off = max_abs_diff(&on, &off);
            let peft_on_off = golden_json["adapter_vs_base_max_abs_diff"]
                .as_f64()
                .expect("adapter_vs_base_max_abs_diff") as f32;
            assert!(
                (on_off - peft_on_off).abs() <= 1e-3 * peft_on_off.max(1.0),
                "[{}] {name}: on/off differ by {on_off}, PEFT's by {peft_on_off}",
                dev.name
            );
        }
    }
    println!("checked {checked} logits tensors (adapters x on/off/merged x backends)");
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

/// Kept mask `[batch, seq - 1]` as 0/1 rows, padded with a 0 column to the golden's `seq`.
fn kept_rows(mask: Tensor<2, Bool>, width: usize) -> Vec<Vec<i64>> {
    let [batch, seq] = mask.dims();
    let flat: Vec<i64> = mask
        .int()
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap();
    (0..batch)
        .map(|b| {
            let mut row = flat[b * seq..(b + 1) * seq].to_vec();
            row.resize(width, 0);
            row
        })
        .collect()
}

#[test]
fn sdpo_with_adapter_disabled_reference_matches_peft_loss_and_adapter_gradients() {
    let mut cases = 0;
    for dev in sdpo_testkit::test_devices!() {
        for (name, dir, golden_json) in adapters() {
            let Some(sdpo) = golden_json.get("sdpo") else {
                continue;
            };
            let grads_file = Golden::open(&dir.join(sdpo["grads_file"].as_str().expect("file")));
            let train = dev.device.clone().autodiff();
            for result in sdpo["results"].as_array().expect("results") {
                let q = result["threshold"].as_f64().expect("threshold");
                // The policy: base + adapter on the training device. The reference: the same
                // model with the adapter disabled, evaluated without autodiff.
                let policy = CausalLm::from_pretrained(base_dir(&golden_json), &train)
                    .and_then(|m| m.load_adapter(&dir))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let reference = policy.valid().without_adapters();
                let constant = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &train);
                let (rc, _) = side_logps(&reference, &sdpo["chosen"], &dev.device);
                let (rr, _) = side_logps(&reference, &sdpo["rejected"], &dev.device);
                let (pc, chosen_mask) = side_logps(&policy, &sdpo["chosen"], &train);
                let (pr, rejected_mask) = side_logps(&policy, &sdpo["rejected"], &train);
                let inputs = TokenLogps {
                    policy_chosen_logps: pc,
                    policy_rejected_logps: pr,
                    ref_chosen_logps: constant(rc),
                    ref_rejected_logps: constant(rr),
                    chosen_loss_mask: chosen_mask,
                    rejected_loss_mask: rejected_mask,
                    policy_chosen_log_sum_sq_probs: None,
                    policy_rejected_log_sum_sq_probs: None,
                };
                let config = LossConfig {
                    beta: sdpo["beta"].as_f64().expect("beta"),
                    label_smoothing: sdpo["label_smoothing"].as_f64().expect("label_smoothing"),
                    sdpo_threshold: q,
                    ..LossConfig::default()
                };
                let out = PreferenceLoss::new(config)
                    .expect("config")
                    .forward(&inputs, None)
                    .expect("loss");

                let loss = host(out.loss.clone())[0];
                let want = result["loss_mean"].as_f64().expect("loss_mean") as f32;
                assert!(
                    (loss - want).abs() <= 1e-5,
                    "[{}] {name} q={q}: loss {loss} vs PEFT {want}",
                    dev.name
                );
                let selection = out.selection.clone().expect("sdpo selection");
                for (mask, key) in [
                    (selection.chosen_kept, "chosen_kept_mask"),
                    (selection.rejected_kept, "rejected_kept_mask"),
                ] {
                    let want: Vec<Vec<i64>> =
                        serde_json::from_value(result[key].clone()).expect("mask");
                    let got = kept_rows(mask, want[0].len());
                    assert_eq!(got, want, "[{}] {name} q={q}: {key}", dev.name);
                }

                let grads = out.loss.backward();
                // Only the adapter received gradients: the base is frozen.
                let params = GradientsParams::from_grads(grads, &policy);
                let branches = policy.lora_branches();
                assert_eq!(
                    params.len(),
                    2 * branches.len(),
                    "[{}] {name}: tensors with gradients",
                    dev.name
                );
                let prefix = format!("q{q:?}/");
                let golden_names: Vec<String> = grads_file
                    .names()
                    .into_iter()
                    .filter(|n| n.starts_with(&prefix))
                    .collect();
                assert_eq!(
                    golden_names.len(),
                    2 * branches.len(),
                    "golden tensor count"
                );
                let mut worst = 0.0f32;
                for (layer, branch) in &branches {
                    let [r, d_in, d_out] = branch.dims();
                    for (param, key, rows, cols) in [
                        (&branch.lora_a, "lora_A", d_in, r),
                        (&branch.lora_b, "lora_B", r, d_out),
                    ] {
                        let golden_key = format!("{prefix}base_model.model.{layer}.{key}.weight");
                        let (want, shape) = grads_file.f32(&golden_key);
                        assert_eq!(shape, vec![cols, rows], "{golden_key}: shape");
                        let got = params
                            .get::<2>(param.id)
                            .unwrap_or_else(|| panic!("no gradient for {golden_key}"));
                        let got = transpose(&host(got), rows, cols);
                        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        let d = max_abs_diff(&got, &want);
                        assert!(
                            d <= 1e-4 * scale,
                            "[{}] {golden_key}: gradient differs by {d} (max |g| {scale})",
                            dev.name
                        );
                        worst = worst.max(d / scale.max(f32::MIN_POSITIVE));
                    }
                }
                println!(
                    "[{}] {name} q={q}: loss {loss} (PEFT {want}), {} adapter gradients, \
                     worst |diff| / max|g| = {worst:.2e}",
                    dev.name,
                    2 * branches.len()
                );
                cases += 1;
            }
        }
    }
    assert!(cases > 0, "no adapter fixture has an `sdpo` section");
    println!("checked {cases} SDPO cases");
}
