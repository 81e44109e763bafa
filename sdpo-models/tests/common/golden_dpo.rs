//! The DPO golden shared by the QLoRA and DoRA tests: a `dpo` block of a `golden.json`
//! (batch, β, log-probs, losses) and a gradients file keyed by PEFT's adapter keys.

use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use sdpo_core::{LossConfig, PreferenceLoss, TokenLogps};
use sdpo_models::CausalLm;
use serde_json::Value;

use super::{Golden, host, max_abs_diff, side_logps};

/// A JSON file, parsed.
pub fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The fixture path a golden names under `key` (relative to the fixture set).
pub fn fixture_path(golden: &Value, key: &str) -> PathBuf {
    sdpo_testkit::fixtures_dir().join(golden[key].as_str().unwrap_or_else(|| panic!("{key}")))
}

/// Every case directory (one with a `golden.json`) under `fixtures/<folder>`, sorted by name.
pub fn golden_cases(folder: &str) -> Vec<(String, PathBuf, Value)> {
    let root = sdpo_testkit::fixtures_dir().join(folder);
    let mut out: Vec<(String, PathBuf, Value)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("read {}: {e}", root.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|dir| dir.join("golden.json").is_file())
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let golden = read_json(&dir.join("golden.json"));
            (name, dir, golden)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no cases under {}", root.display());
    out
}

/// A JSON number array as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    serde_json::from_value::<Vec<f64>>(v.clone())
        .expect("numbers")
        .into_iter()
        .map(|x| x as f32)
        .collect()
}

/// `|got - want| <= tol · max(|want|, 1)` elementwise (NaN fails).
pub fn assert_rel(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (g, w) in got.iter().zip(want) {
        let ok = (g - w).abs() <= tol * w.abs().max(1.0);
        assert!(ok, "{what}: {got:?} vs {want:?}");
    }
}

/// Checks `policy` (an adapter model on the autodiff version of `plain`) against a DPO golden:
/// the four log-prob sums and the loss (1e-5 relative), then the gradient of the loss w.r.t.
/// every adapter tensor (`lora_A`, `lora_B`, and DoRA's `lora_magnitude_vector`) against
/// `grads_file` (1e-4 of the tensor's max |value|). The reference is the policy with its
/// adapters disabled; plain DPO (every completion token counts).
pub fn check_dpo_golden(
    policy: &CausalLm,
    dpo: &Value,
    grads_file: &Path,
    plain: &Device,
    what: &str,
) {
    let train = plain.clone().autodiff();
    let reference = policy.valid().without_adapters();
    let constant = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &train);
    let (rc, ref_chosen_mask) = side_logps(&reference, &dpo["chosen"], plain);
    let (rr, ref_rejected_mask) = side_logps(&reference, &dpo["rejected"], plain);
    let (pc, chosen_mask) = side_logps(policy, &dpo["chosen"], &train);
    let (pr, rejected_mask) = side_logps(policy, &dpo["rejected"], &train);
    let sums = |t: &Tensor<2>, m: &Tensor<2, Bool>| {
        host(
            (t.clone() * m.clone().float())
                .sum_dim(1)
                .squeeze_dim::<1>(1),
        )
    };
    let label = |k: &str| format!("{what}: {k}");
    for (got, key) in [
        (sums(&pc, &chosen_mask), "chosen_logps"),
        (sums(&pr, &rejected_mask), "rejected_logps"),
        (sums(&rc, &ref_chosen_mask), "ref_chosen_logps"),
        (sums(&rr, &ref_rejected_mask), "ref_rejected_logps"),
    ] {
        assert_rel(&got, &floats(&dpo[key]), 1e-5, &label(key));
    }
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
        beta: dpo["beta"].as_f64().expect("beta"),
        label_smoothing: dpo["label_smoothing"].as_f64().expect("label_smoothing"),
        sdpo_threshold: 0.0,
        ..LossConfig::default()
    };
    let out = PreferenceLoss::new(config)
        .expect("config")
        .forward(&inputs, None)
        .expect("loss");
    let loss = host(out.loss.clone())[0];
    let want_loss = dpo["loss_mean"].as_f64().expect("loss_mean") as f32;
    assert_rel(&[loss], &[want_loss], 1e-5, &label("loss_mean"));

    let grads = GradientsParams::from_grads(out.loss.backward(), policy);
    let golden = Golden::open(grads_file);
    let mut checked = 0;
    let mut check = |key: String, got: Vec<f32>, shape: Vec<usize>| {
        let (want, want_shape) = golden.f32(&key);
        assert_eq!(want_shape, shape, "{what} {key}: shape");
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(&got, &want);
        assert!(
            d <= 1e-4 * scale,
            "{what} {key}: gradient differs by {d} (max |g| {scale})"
        );
        checked += 1;
    };
    let grad = |param: &Param<Tensor<2>>, key: &str| {
        grads
            .get::<2>(param.id)
            .unwrap_or_else(|| panic!("{what}: no gradient for {key}"))
    };
    for (layer, branch) in policy.lora_branches() {
        let [r, d_in, d_out] = branch.dims();
        let prefix = format!("base_model.model.{layer}");
        // Ours are `[in, r]` / `[r, out]`; PEFT's the transposes.
        let a = host(grad(&branch.lora_a, &layer).transpose());
        check(format!("{prefix}.lora_A.weight"), a, vec![r, d_in]);
        let b = host(grad(&branch.lora_b, &layer).transpose());
        check(format!("{prefix}.lora_B.weight"), b, vec![d_out, r]);
        if let Some(m) = &branch.magnitude {
            let g = grads
                .get::<1>(m.id)
                .unwrap_or_else(|| panic!("{what}: no magnitude gradient for {layer}"));
            check(
                format!("{prefix}.lora_magnitude_vector"),
                host(g),
                vec![d_out],
            );
        }
    }
    assert_eq!(grads.len(), checked, "{what}: tensors with gradients");
    assert_eq!(golden.names().len(), checked, "{what}: golden tensor count");
}
