//! Full fine-tuning of a model held in bfloat16 (`dtype = "bfloat16"` without adapters)
//! against PyTorch and TRL 1.16 (`fixtures/bf16_weights/`, fixtures/README.md section 14,
//! written by `tools/make_bf16_weights_fixtures.sh`).
//!
//! * The optimizer alone: five steps of `torch.optim.AdamW(fused=True)` on bfloat16 parameters
//!   fed torch's own bfloat16 gradients; after every step the parameters and both moments
//!   (bfloat16, as torch keeps them) equal torch's.
//! * The trainer: TRL's `DPOTrainer` on the tiny Llama loaded in bfloat16 with `bf16=True` and
//!   weight decay, six steps: per-step metrics, final weights and moments within the
//!   tolerances below; the saved model and the checkpoint's optimizer state are bfloat16.
//! * A run resumed from a checkpoint equals the uninterrupted run bit for bit.
//! * A backend that cannot hold bfloat16 trains float32 weights and says so.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::optim::{AdamWState, Optimizer as _};
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use common::trl_run::{assert_metrics, bf16s, hf_name, json, read_tensors};
use common::{
    Messages, f64_of, fixture_path, interrupted_run, resume_to_end, trl_fixture_config, usize_of,
    without_timing,
};
use safetensors::Dtype;
use sdpo_models::libtorch::LowPrecisionAdamW;
use sdpo_testkit::{Tolerance, assert_close};
use sdpo_train::optimizer::AdamW;
use sdpo_train::{ModelDtype, Optimizer, SilentObserver, Start, Trainer};
use serde_json::Value;

/// The float32 values of a tensor (bfloat16 widened exactly).
fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .cast(FloatDType::F32)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float32 values")
}

/// A bfloat16 tensor of `shape` holding `values` (each exactly a bfloat16).
fn bf16_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(values, shape), device).cast(FloatDType::BF16)
}

/// How many bfloat16 steps at `e` (2^(exponent − 7), at least the smallest normal's) `a` is
/// from `e`; NaN when either is.
fn bf16_steps_apart(a: f32, e: f32) -> f32 {
    let step = f32::from_bits((e.abs().to_bits() & 0x7f80_0000).max(0x0080_0000)) / 128.0;
    (a - e).abs() / step
}

/// The devices of this test run that hold bfloat16 tensors.
fn bf16_devices() -> Vec<sdpo_testkit::TestDevice> {
    sdpo_testkit::test_devices!()
        .into_iter()
        .filter(|dev| dev.device.supports_dtype(FloatDType::BF16))
        .collect()
}

#[test]
fn flex_holds_bfloat16() {
    // The goldens below run on every device that holds bfloat16; flex always does, so they
    // never run on none.
    assert!(Device::flex().supports_dtype(FloatDType::BF16));
}

/// One parameter of the optimizer golden, stepped with the fixture's gradients; every step's
/// parameter and moments must equal torch's.
fn step_like_torch<const D: usize>(
    golden: &BTreeMap<String, (Dtype, Vec<u8>)>,
    fixture: &Value,
    name: &str,
    shape: [usize; D],
    device: &Device,
) {
    let weight_decay = f64_of(&fixture["params"][name]["weight_decay"], "weight_decay");
    let betas = fixture["betas"].as_array().expect("betas");
    let optim = AdamW {
        beta_1: f64_of(&betas[0], "beta1"),
        beta_2: f64_of(&betas[1], "beta2"),
        epsilon: f64_of(&fixture["eps"], "eps"),
        weight_decay,
    };
    let lrs = fixture["learning_rates"]
        .as_array()
        .expect("learning_rates");
    let steps = usize_of(&fixture["steps"], "steps");
    assert_eq!(lrs.len(), steps, "fixture: one learning rate per step");
    let mut param = bf16_tensor(bf16s(golden, &format!("param/0/{name}")), shape, device);
    let mut state: Option<AdamWState<D>> = None;
    for step in 1..=steps {
        let grad = bf16_tensor(bf16s(golden, &format!("grad/{step}/{name}")), shape, device);
        let lr = f64_of(&lrs[step - 1], "learning rate");
        let (p, s) = optim.step(lr, param, grad, state);
        let s = s.expect("a state");
        assert_eq!(
            p.dtype(),
            DType::BF16,
            "{name} step {step}: parameter dtype"
        );
        assert_eq!(
            s.momentum.moment_1.dtype(),
            DType::BF16,
            "{name} step {step}: moment dtype"
        );
        for (ours, key) in [
            (values(p.clone()), "param"),
            (values(s.momentum.moment_1.clone()), "exp_avg"),
            (values(s.momentum.moment_2.clone()), "exp_avg_sq"),
        ] {
            let theirs = bf16s(golden, &format!("{key}/{step}/{name}"));
            let what = format!("{name} step {step} {key}");
            assert_eq!(ours.len(), theirs.len(), "{what}: length");
            // Bit for bit, but for a float32 result that falls within a rounding error of a
            // bfloat16 tie, which another backend's float32 arithmetic can round the other way:
            // one bfloat16 step, for at most 1 % of the values (measured: none on flex, 1 of
            // 1,920 on LibTorch).
            let mut unequal = 0;
            for (i, (&a, &e)) in ours.iter().zip(&theirs).enumerate() {
                if a != e {
                    unequal += 1;
                    let steps = bf16_steps_apart(a, e);
                    assert!(steps <= 1.0, "{what}[{i}]: {a} against {e}, {steps} steps");
                }
            }
            assert!(
                unequal as f64 <= 0.01 * ours.len() as f64,
                "{what}: {unequal} of {} values differ",
                ours.len()
            );
        }
        param = p;
        state = Some(s);
    }
}

#[test]
fn fused_adamw_steps_bfloat16_parameters_as_torch() {
    let fixture = json("bf16_weights/steps.json");
    let golden = read_tensors(&fixture_path(&fixture, "tensors_file"));
    let params = fixture["params"].as_object().expect("params");
    assert!(!params.is_empty(), "fixture: params");
    for dev in bf16_devices() {
        for (name, spec) in params {
            let shape: Vec<usize> = spec["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| usize_of(d, "shape"))
                .collect();
            match shape.as_slice() {
                &[n] => step_like_torch(&golden, &fixture, name, [n], &dev.device),
                &[r, c] => step_like_torch(&golden, &fixture, name, [r, c], &dev.device),
                other => panic!("fixture: {name} has shape {other:?}"),
            }
        }
        println!("{}: every step of every parameter equals torch's", dev.name);
    }
}

/// The update never writes into memory another handle holds: a parameter shared with a live
/// reference (the initial policy's weights are) keeps its values in the other handle; and on
/// LibTorch, whose bfloat16 update runs in place over slices, any slice size gives the same
/// bits as one slice.
#[test]
fn a_bfloat16_update_leaves_shared_memory_alone_and_any_slicing_agrees() {
    let optim = AdamW {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.1,
    };
    let wave = |seed: f32| -> Vec<f32> {
        (0..4 * 37)
            .map(|i| ((i as f32 + seed) * 0.37).sin())
            .collect()
    };
    for dev in bf16_devices() {
        let param = bf16_tensor(wave(0.0), [4, 37], &dev.device);
        let shared = param.clone();
        let before = values(shared.clone());
        let mut state: Option<AdamWState<2>> = None;
        let mut current = param;
        for step in 1..=3 {
            let grad = bf16_tensor(wave(step as f32), [4, 37], &dev.device);
            let (p, s) = optim.step(1e-2, current, grad, state);
            (current, state) = (p, s);
        }
        assert_ne!(
            values(current),
            before,
            "[{}] the parameter moved",
            dev.name
        );
        assert_eq!(
            values(shared),
            before,
            "[{}] the shared handle kept its values",
            dev.name
        );

        let update = LowPrecisionAdamW {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            step_size: 1e-2 / 0.1,
            bias_correction2_sqrt: 0.001f64.sqrt(),
            decay: Some(1.0 - 1e-3),
        };
        let run = |slice: usize| {
            let param = bf16_tensor(wave(0.0), [4, 37], &dev.device);
            let grad = bf16_tensor(wave(1.0), [4, 37], &dev.device);
            let moments = Some((
                bf16_tensor(wave(2.0), [4, 37], &dev.device),
                bf16_tensor(
                    wave(3.0).iter().map(|v| v * v).collect(),
                    [4, 37],
                    &dev.device,
                ),
            ));
            update
                .update_in_place(param, grad, moments, slice)
                .ok()
                .map(|(p, m, v)| (values(p), values(m), values(v)))
        };
        match (run(7), run(1 << 20)) {
            (Some(sliced), Some(whole)) => {
                assert_eq!(sliced, whole, "[{}] slices of 7 against one", dev.name);
                assert!(sliced.0.iter().all(|v| v.is_finite()));
            }
            (None, None) => assert_ne!(dev.name, "tch", "LibTorch runs the in-place update"),
            _ => panic!(
                "[{}] the in-place update ran for one slicing only",
                dev.name
            ),
        }
    }
}

/// Per-step metrics against TRL's: (key, abs, rel). TRL runs the whole forward in bfloat16
/// (activations rounded after every layer); sdpo-rs keeps activations in float32 and runs the
/// products in bfloat16 (`bf16`), so the log-probs differ by bfloat16 rounding of the
/// activations: measured on flex at most 1.4 % (the loss of step 4), bound 3 % (absolute 0.02
/// for step 1's zero rewards). `grad_norm` is rounded to bfloat16 by torch (3 significant
/// digits) and follows the log-probs: measured 1.3 %, bound 5 %.
const METRICS: [(&str, f64, f64); 8] = [
    ("loss", 0.0, 3e-2),
    ("rewards/chosen", 2e-2, 3e-2),
    ("rewards/rejected", 2e-2, 3e-2),
    ("rewards/margins", 2e-2, 3e-2),
    ("logps/chosen", 0.0, 3e-2),
    ("logps/rejected", 0.0, 3e-2),
    ("learning_rate", 0.0, 1e-9),
    ("grad_norm", 0.0, 5e-2),
];

/// The bfloat16 state tensors of a checkpoint's optimizer file, by parameter (HF name) and
/// leaf, in torch's layout (burn holds a linear weight, and so its moments, as `[in, out]`).
fn checkpoint_states(checkpoint: &Path) -> BTreeMap<(String, String), (DType, Vec<f32>)> {
    let path = checkpoint.join(sdpo_train::run_dir::OPTIMIZER_FILE);
    let reader = burn_pack::Reader::from_file(&path).expect("optimizer file");
    let paths = reader.metadata().clone();
    let mut out = BTreeMap::new();
    for tensor in reader.into_tensors().expect("tensors") {
        let (name, dtype, shape, id, bytes) = tensor.into_parts().expect("tensor");
        let id = id.expect("a parameter id");
        let path = paths
            .get(&id.to_string())
            .expect("a parameter path")
            .clone();
        let leaf = name
            .strip_prefix(&format!("{id}."))
            .expect("`{id}.{leaf}`")
            .to_string();
        let dims = shape.to_vec();
        let data = TensorData::from_bytes(bytes, shape, dtype);
        let mut values = data.convert::<f32>().try_to_vec::<f32>().expect("values");
        let name = hf_name(&path);
        if let ([rows, cols], true) = (dims.as_slice(), is_linear_weight(&name)) {
            values = transpose(&values, *rows, *cols);
        }
        out.insert((name, leaf), (dtype, values));
    }
    out
}

/// Whether the HF parameter `name` is a linear layer's weight (not the embedding's).
fn is_linear_weight(name: &str) -> bool {
    name.ends_with("proj.weight") || name == "lm_head.weight"
}

/// The row-major values of the transpose of a row-major `[rows, cols]` matrix.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for (r, row) in values.chunks_exact(cols).enumerate() {
        for (c, v) in row.iter().enumerate() {
            out[c * rows + r] = *v;
        }
    }
    out
}

/// Final weights: the share of elements that must equal TRL's bit for bit, the share allowed
/// more than [`MAX_BF16_STEPS`] bfloat16 steps of their value away, and a bound on every
/// element. A step of Adam moves a weight by about the learning rate, many bfloat16 steps of
/// a small weight, and the gradients differ by the activations' rounding (see [`METRICS`]); an
/// element whose gradient is near zero can even step the other way, so no element can be
/// further than twice the learning rates summed over the run. Measured on flex: 88.4-99.3 %
/// equal, 0.05-1.1 % beyond 4 steps, at most 3.9e-3 (the bound is 7e-3).
const EQUAL_SHARE: f64 = 0.8;
const MAX_BF16_STEPS: f32 = 4.0;
const BEYOND_SHARE: f64 = 0.03;

/// Checks `ours` against TRL's bfloat16 values `theirs` (see [`EQUAL_SHARE`]); `bound` is
/// twice the learning rates of the run summed.
fn assert_bf16_close(ours: &[f32], theirs: &[f32], bound: f32, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    let mut equal = 0usize;
    let mut beyond = 0usize;
    let mut max_diff = 0.0f32;
    for (&a, &e) in ours.iter().zip(theirs) {
        if a == e {
            equal += 1;
            continue;
        }
        let steps = bf16_steps_apart(a, e);
        if steps > MAX_BF16_STEPS || steps.is_nan() {
            beyond += 1;
        }
        max_diff = max_diff.max((a - e).abs());
    }
    let share = equal as f64 / ours.len() as f64;
    println!(
        "{what}: {:.1} % equal, {beyond} beyond {MAX_BF16_STEPS} steps, max diff {max_diff}",
        100.0 * share
    );
    assert!(
        max_diff <= bound,
        "{what}: an element {max_diff} away from TRL's (bound {bound})"
    );
    assert!(
        beyond as f64 <= BEYOND_SHARE * ours.len() as f64,
        "{what}: {beyond} of {} elements more than {MAX_BF16_STEPS} bfloat16 steps away",
        ours.len()
    );
    assert!(
        share >= EQUAL_SHARE,
        "{what}: only {:.1} % of the elements equal TRL's",
        100.0 * share
    );
}

#[test]
fn the_trainer_on_bfloat16_weights_matches_trls_dpo_trainer() {
    let fixture = json("bf16_weights/trl.json");
    let golden = read_tensors(&fixture_path(&fixture, "weights_file"));
    let kept = fixture["kept_tensors"].as_array().expect("kept_tensors");
    assert!(!kept.is_empty(), "fixture: kept_tensors");
    // The whole graph, and the memory-bounded engine (`gradient_checkpointing`), whose
    // recomputation casts the same bfloat16 weights.
    for (dev, checkpointing) in bf16_devices()
        .into_iter()
        .flat_map(|dev| [(dev.clone(), false), (dev, true)])
    {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = trl_fixture_config(&fixture, &tmp.path().join("out"));
        assert_eq!(config.dtype, ModelDtype::Bfloat16);
        assert!(config.bf16);
        assert_eq!(config.optim, Optimizer::AdamwTorchFused);
        config.save_steps = (config.max_steps as usize).into();
        config.gradient_checkpointing = checkpointing;
        let mut trainer = Trainer::new(
            config.clone(),
            &dev.device,
            Start::Fresh,
            &mut SilentObserver,
        )
        .expect("trainer");
        let records = without_timing(&trainer.train(None, &mut SilentObserver).expect("train"));
        let what = &format!("{} gradient_checkpointing={checkpointing}", dev.name);
        assert_metrics(&fixture, &records, &METRICS, what);

        let checkpoint = config
            .output_dir
            .join(format!("checkpoint-{}", config.max_steps));
        let saved = read_tensors(&checkpoint.join("model.safetensors"));
        let history = fixture["log_history"].as_array().expect("log_history");
        let bound = 2.0
            * history
                .iter()
                .map(|r| f64_of(&r["learning_rate"], "learning_rate"))
                .sum::<f64>() as f32;
        let states = checkpoint_states(&checkpoint);
        for name in kept {
            let name = name.as_str().expect("a name");
            let (dtype, _) = &saved[name];
            assert_eq!(*dtype, Dtype::BF16, "{what} {name}: saved dtype");
            assert_bf16_close(
                &bf16s(&saved, name),
                &bf16s(&golden, &format!("param/{name}")),
                bound,
                &format!("{what} {name}"),
            );
            for (leaf, key) in [
                ("momentum.moment_1", "exp_avg"),
                ("momentum.moment_2", "exp_avg_sq"),
            ] {
                let (dtype, ours) = states
                    .get(&(name.to_string(), leaf.to_string()))
                    .unwrap_or_else(|| panic!("{what}: no {leaf} for {name}"));
                assert_eq!(*dtype, DType::BF16, "{what} {name} {leaf}: dtype");
                // The moments follow the gradients, which differ by the activations' rounding:
                // within 5 % of the tensor's largest (measured on flex: at most 3.4 %, the
                // second moment of q_proj; 1.9 % for the others).
                let theirs = bf16s(&golden, &format!("{key}/{name}"));
                let scale = theirs.iter().fold(0.0f32, |a, x| a.max(x.abs()));
                assert!(
                    scale.is_finite() && scale > 0.0,
                    "{name} {key}: scale {scale}"
                );
                let c = assert_close(
                    ours,
                    &theirs,
                    Tolerance::absolute(0.05 * f64::from(scale)),
                    &format!("{what} {name} {key}"),
                );
                println!("{what} {name} {key}: {c:?}");
            }
        }
        // The norms stay float32 (transformers would hold them in bfloat16: a few KB).
        let norm = "model.layers.1.input_layernorm.weight";
        assert_eq!(saved[norm].0, Dtype::F32, "{what} {norm}: saved dtype");
    }
}

#[test]
fn a_resumed_bfloat16_run_equals_the_uninterrupted_run() {
    let fixture = json("bf16_weights/trl.json");
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = trl_fixture_config(&fixture, &tmp.path().join("out"));
    config.max_steps = 4;
    config.save_steps = 2.into();
    let mut full =
        Trainer::new(config.clone(), &device, Start::Fresh, &mut SilentObserver).unwrap();
    let full = full.train(None, &mut SilentObserver).unwrap();
    let (interrupted, checkpoint) = interrupted_run(&config, &device, 2);
    let after = resume_to_end(&interrupted, &device, &checkpoint);
    assert_eq!(
        without_timing(&full),
        without_timing(&after),
        "the resumed run's records differ"
    );
    let weights = |dir: &Path| read_tensors(&dir.join("checkpoint-4").join("model.safetensors"));
    let (a, b) = (
        weights(&config.output_dir),
        weights(&interrupted.output_dir),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, tensor) in &a {
        assert!(
            b[name] == *tensor,
            "{name}: the resumed run's final weight differs"
        );
    }
}

#[test]
fn a_backend_without_bfloat16_trains_float32_weights_and_says_so() {
    let fixture = json("bf16_weights/trl.json");
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = trl_fixture_config(&fixture, &tmp.path().join("out"));
        config.max_steps = 1;
        let mut messages = Messages::default();
        let mut trainer =
            Trainer::new(config, &dev.device, Start::Fresh, &mut messages).expect("trainer");
        let warned = messages
            .0
            .iter()
            .any(|m| m.contains("dtype") && m.contains("stay float32"));
        let dtype = sdpo_models::matrix_dtype(trainer.policy());
        if dev.device.supports_dtype(FloatDType::BF16) {
            assert!(!warned, "{}: {:?}", dev.name, messages.0);
            assert_eq!(dtype, FloatDType::BF16, "{}", dev.name);
        } else {
            assert!(warned, "{}: no warning in {:?}", dev.name, messages.0);
            assert_eq!(dtype, FloatDType::F32, "{}", dev.name);
        }
        trainer.train(None, &mut SilentObserver).expect("train");
    }
}
