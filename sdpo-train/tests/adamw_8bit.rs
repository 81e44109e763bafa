//! 8-bit AdamW (`optim = "adamw_8bit"`) against bitsandbytes 0.50.2 on the CPU
//! (`fixtures/adamw_8bit/`, fixtures/README.md section 13, written by
//! `tools/make_adamw_8bit_fixtures.sh`).
//!
//! * The optimizer alone: five steps on six parameters fed bitsandbytes' own gradients; after
//!   every step the parameters and every state (8-bit codes and block maxima, or float32
//!   moments below `min_8bit_size`) equal bitsandbytes'.
//! * The trainer: TRL 1.16's `DPOTrainer` with `optim="adamw_8bit"` and weight decay, six steps
//!   on the tiny Llama: per-step metrics, final weights, and the final optimizer state of six
//!   parameters (8-bit for matrices of 4096 values and more, float32 for the embedding, which
//!   transformers overrides, and for smaller ones) equal TRL's within the tolerances below.
//! * A run resumed from a checkpoint equals the uninterrupted run bit for bit; a checkpoint of
//!   `adamw_torch` does not resume with `adamw_8bit`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::trl_run::{assert_metrics, f32s, hf_name, json, read_tensors};
use common::{
    f64_of, fixture_path, interrupted_run, resume_to_end, trl_fixture_config, usize_of,
    without_timing,
};
use safetensors::Dtype;
use sdpo_models::quant::dynamic::DynamicMap;
use sdpo_testkit::{Tolerance, assert_close, assert_close_but_outliers};
use sdpo_train::optimizer::{AdamW8bit, Moments, STATE_BLOCK};
use sdpo_train::{Optimizer, SilentObserver, Start, TrainConfig, Trainer};

fn u8s(tensors: &BTreeMap<String, (Dtype, Vec<u8>)>, name: &str) -> Vec<u8> {
    let (dtype, bytes) = tensors
        .get(name)
        .unwrap_or_else(|| panic!("fixture: no tensor {name}"));
    assert_eq!(*dtype, Dtype::U8, "fixture: {name}");
    bytes.clone()
}

/// The fixture's state of one parameter: `state1`/`state2` (u8 codes or f32 moments) and,
/// for 8-bit states, `absmax1`/`absmax2`, under `{key}/{suffix}`.
fn golden_moments(tensors: &BTreeMap<String, (Dtype, Vec<u8>)>, suffix: &str) -> Moments {
    let name = |key: &str| format!("{key}/{suffix}");
    match tensors.get(&name("state1")) {
        Some((Dtype::U8, _)) => Moments::Blockwise {
            m_codes: u8s(tensors, &name("state1")),
            m_absmax: f32s(tensors, &name("absmax1")),
            v_codes: u8s(tensors, &name("state2")),
            v_absmax: f32s(tensors, &name("absmax2")),
        },
        Some(_) => Moments::Float {
            m: f32s(tensors, &name("state1")),
            v: f32s(tensors, &name("state2")),
        },
        None => panic!("fixture: no state1/{suffix}"),
    }
}

fn kind(moments: &Moments) -> &'static str {
    match moments {
        Moments::Float { .. } => "float32",
        Moments::Blockwise { .. } => "blockwise_8bit",
    }
}

#[test]
fn the_dynamic_maps_are_bitsandbytes() {
    let fixture = json("adamw_8bit/steps.json");
    let tensors = read_tensors(&fixture_path(&fixture, "tensors_file"));
    for (map, name) in [
        (DynamicMap::Signed, "qmap/dynamic"),
        (DynamicMap::Unsigned, "qmap/udynamic"),
    ] {
        let ours: Vec<u32> = map.code().iter().map(|v| v.to_bits()).collect();
        let theirs: Vec<u32> = f32s(&tensors, name).iter().map(|v| v.to_bits()).collect();
        assert_eq!(ours, theirs, "{name}");
    }
}

/// The parameters after each step. The moments depend only on the gradients and are compared
/// exactly; the parameters go through `√v`, which PyTorch's CPU kernel does not round
/// correctly (1 ulp off on 23 of the 4,096 elements of `at_threshold` at step 1, checked
/// against `numpy.sqrt`), so an element may land one float32 step away (measured: 3 of 4,096,
/// by 1.5e-8 on values of 0.07): two ulps relative, and 1e-9 for elements near zero.
const PARAMS: Tolerance = Tolerance {
    abs: 1e-9,
    rel: 2.5e-7,
    rel_to_max: 0.0,
};

#[test]
fn every_step_of_the_optimizer_is_bitsandbytes() {
    let fixture = json("adamw_8bit/steps.json");
    let tensors = read_tensors(&fixture_path(&fixture, "tensors_file"));
    let betas = fixture["betas"].as_array().expect("betas");
    let lrs: Vec<f64> = fixture["learning_rates"]
        .as_array()
        .expect("learning_rates")
        .iter()
        .map(|v| f64_of(v, "learning rate"))
        .collect();
    let steps = usize_of(&fixture["steps"], "steps");
    assert_eq!(lrs.len(), steps, "fixture: one learning rate per step");
    assert_eq!(usize_of(&fixture["block_size"], "block_size"), STATE_BLOCK);
    let params = fixture["params"].as_object().expect("params");
    assert!(params.len() >= 2, "fixture: params");
    for (name, spec) in params {
        let optimizer = AdamW8bit {
            beta_1: f64_of(&betas[0], "beta1"),
            beta_2: f64_of(&betas[1], "beta2"),
            epsilon: f64_of(&fixture["eps"], "eps"),
            weight_decay: f64_of(&spec["weight_decay"], "weight_decay"),
            float_moments: false,
            hf_transposed: false,
        };
        let mut param = f32s(&tensors, &format!("param/0/{name}"));
        let mut state = optimizer.initial_state(param.len());
        assert_eq!(
            kind(&state.moments),
            spec["state"].as_str().expect("state"),
            "{name}: the kind of state bitsandbytes keeps"
        );
        for (step, &lr) in (1..=steps).zip(&lrs) {
            let grad = f32s(&tensors, &format!("grad/{step}/{name}"));
            optimizer.update(lr, &mut param, &grad, &mut state);
            let what = format!("{name} step {step}");
            let expected = f32s(&tensors, &format!("param/{step}/{name}"));
            assert_close(&param, &expected, PARAMS, &what);
            assert_eq!(state.step, step as u64, "{what}: step counter");
            let golden = golden_moments(&tensors, &format!("{step}/{name}"));
            match (&state.moments, &golden) {
                (Moments::Float { m, v }, Moments::Float { m: gm, v: gv }) => {
                    assert_close(m, gm, Tolerance::absolute(0.0), &format!("{what} m"));
                    assert_close(v, gv, Tolerance::absolute(0.0), &format!("{what} v"));
                }
                (ours, theirs) => assert_eq!(ours, theirs, "{what}: 8-bit state"),
            }
        }
    }
}

/// Per-step metrics against TRL's: (key, abs, rel). As in sync_ref_model.rs (the same model,
/// pairs and float32 computation): 1e-5 relative, an absolute floor for step 1's exact zeros,
/// `grad_norm` 1e-4 (fixtures/README.md section 4a).
const METRICS: [(&str, f64, f64); 8] = [
    ("loss", 0.0, 1e-5),
    ("rewards/chosen", 1e-6, 1e-5),
    ("rewards/rejected", 1e-6, 1e-5),
    ("rewards/margins", 1e-6, 1e-5),
    ("logps/chosen", 0.0, 1e-5),
    ("logps/rejected", 0.0, 1e-5),
    ("learning_rate", 0.0, 1e-9),
    ("grad_norm", 0.0, 1e-4),
];

/// The optimizer states of a checkpoint's optimizer file, by parameter path.
fn checkpoint_moments(checkpoint: &Path) -> BTreeMap<String, Moments> {
    let path = checkpoint.join(sdpo_train::run_dir::OPTIMIZER_FILE);
    let reader = burn_pack::Reader::from_file(&path).expect("optimizer file");
    let mut tensors = BTreeMap::new();
    for name in reader.tensor_names() {
        let bytes = reader.tensor_data(name).expect("tensor data");
        // `{param id}.{leaf}`: u8 codes, f32 everything else.
        let dtype = if name.ends_with("_codes") {
            Dtype::U8
        } else {
            Dtype::F32
        };
        tensors.insert(name.to_string(), (dtype, bytes));
    }
    reader
        .metadata()
        .iter()
        .filter_map(|(id, path)| {
            let leaf = |key: &str| format!("{id}.{key}");
            let moments = if tensors.contains_key(&leaf("m")) {
                Moments::Float {
                    m: f32s(&tensors, &leaf("m")),
                    v: f32s(&tensors, &leaf("v")),
                }
            } else if tensors.contains_key(&leaf("m_codes")) {
                Moments::Blockwise {
                    m_codes: u8s(&tensors, &leaf("m_codes")),
                    m_absmax: f32s(&tensors, &leaf("m_absmax")),
                    v_codes: u8s(&tensors, &leaf("v_codes")),
                    v_absmax: f32s(&tensors, &leaf("v_absmax")),
                }
            } else {
                return None;
            };
            Some((path.clone(), moments))
        })
        .collect()
}

/// The final weights: TRL's tolerance for six float32 steps (sync_ref_model.rs: f32 rounding
/// of the smallest gradient elements becomes an update difference of its own under Adam's
/// per-element scaling) for all but [`OUTLIERS`] of each tensor's elements, and
/// [`OUTLIER_BOUND`] for those: an 8-bit second moment far below its block's maximum sits on
/// code 0 or 1, and a gradient that differs in its last bits can move it across, which changes
/// `√v` of that element by a large factor (measured on flex: at most 5 of 20,480 elements of a
/// tensor beyond the tolerance, by at most 7.3e-5; with the fused attention, whose products
/// round differently from the blocked attention's, at most 5 of 4,096, by at most 6.9e-5; with
/// the blocks taken in burn's transposed layout instead of torch's, 3,755 of 4,096).
const WEIGHTS: Tolerance = Tolerance {
    abs: 2e-6,
    rel: 1e-5,
    rel_to_max: 0.0,
};

/// The fraction of a tensor's elements allowed beyond [`WEIGHTS`].
const OUTLIERS: f64 = 2e-3;

/// The bound on every element's difference.
const OUTLIER_BOUND: f64 = 2e-4;

/// Checks `ours` against `theirs`: every element within [`OUTLIER_BOUND`], all but [`OUTLIERS`]
/// of them within [`WEIGHTS`].
fn assert_weights(ours: &[f32], theirs: &[f32], what: &str) {
    let (c, beyond) =
        assert_close_but_outliers(ours, theirs, WEIGHTS, (OUTLIERS, OUTLIER_BOUND), what);
    println!(
        "{what}: {c:?}, {beyond} of {} beyond the tolerance",
        ours.len()
    );
}

#[test]
fn the_trainer_with_adamw_8bit_matches_trls_dpo_trainer() {
    let fixture = json("adamw_8bit/trl.json");
    let golden = read_tensors(&fixture_path(&fixture, "weights_file"));
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = trl_fixture_config(&fixture, &tmp.path().join("out"));
        assert_eq!(config.optim, Optimizer::Adamw8bit);
        config.save_steps = (config.max_steps as usize).into();
        let mut trainer = Trainer::new(
            config.clone(),
            &dev.device,
            Start::Fresh,
            &mut SilentObserver,
        )
        .expect("trainer");
        let records = without_timing(&trainer.train(None, &mut SilentObserver).expect("train"));
        let what = dev.name;
        assert_metrics(&fixture, &records, &METRICS, what);

        let model_dir = tmp.path().join("policy");
        trainer.policy().save_pretrained(&model_dir).unwrap();
        let ours = read_tensors(&model_dir.join("model.safetensors"));
        let checkpoint = config
            .output_dir
            .join(format!("checkpoint-{}", config.max_steps));
        let states = checkpoint_moments(&checkpoint);
        let kept = fixture["kept_tensors"].as_array().expect("kept_tensors");
        assert!(!kept.is_empty(), "fixture: kept_tensors");
        for name in kept {
            let name = name.as_str().expect("a name");
            assert_weights(
                &f32s(&ours, name),
                &f32s(&golden, &format!("param/{name}")),
                &format!("{what} {name}"),
            );
            let theirs = golden_moments(&golden, name);
            let (path, moments) = states
                .iter()
                .find(|(path, _)| hf_name(path) == name)
                .unwrap_or_else(|| {
                    panic!(
                        "{what}: no optimizer state for {name} in {:?}",
                        states.keys()
                    )
                });
            assert_eq!(
                kind(moments),
                fixture["states"][name].as_str().expect("states"),
                "{what} {path}: kind of state"
            );
            assert_eq!(kind(moments), kind(&theirs), "{what} {path}: kind of state");
            // The moments, dequantized: within 1/128 of the tensor's largest (one code of the
            // dynamic map near its top is 1/128 wide; measured: all within 1/256 on flex), but
            // for at most 0.1 % of the elements, which may be two codes away (a gradient that
            // differs in its last bits flips a code at one step, and the flipped value can
            // flip another later: measured on tch 1 of 8,192 at 1.44/128); float32 ones within
            // 1e-4 relative plus 1e-4 of the largest for the elements that are differences of
            // larger gradients (measured 3.3e-6 of the largest on flex, 1.5e-5 on wgpu, whose
            // gradients are summed in another order).
            let (m, v) = moments.dequantized();
            let (gm, gv) = theirs.dequantized();
            for (ours, theirs, moment) in [(&m, &gm, "m"), (&v, &gv, "v")] {
                let scale = theirs.iter().fold(0.0f32, |a, x| a.max(x.abs())); // nan-checked below
                assert!(
                    scale.is_finite() && scale > 0.0,
                    "{name} {moment}: scale {scale}"
                );
                let what = format!("{what} {name} {moment}");
                let c = match moments {
                    Moments::Float { .. } => assert_close(
                        ours,
                        theirs,
                        Tolerance::elementwise(1e-4 * f64::from(scale), 1e-4),
                        &what,
                    ),
                    Moments::Blockwise { .. } => {
                        let code = f64::from(scale) / 128.0;
                        let beyond = ours
                            .iter()
                            .zip(theirs.iter())
                            .filter(|&(&a, &e)| f64::from((a - e).abs()) > code)
                            .count();
                        assert!(
                            beyond as f64 <= 1e-3 * ours.len() as f64,
                            "{what}: {beyond} of {} elements more than one code away",
                            ours.len()
                        );
                        assert_close(ours, theirs, Tolerance::absolute(2.0 * code), &what)
                    }
                };
                println!("{what}: {c:?}");
            }
        }
    }
}

#[test]
fn a_resumed_adamw_8bit_run_equals_the_uninterrupted_run() {
    let fixture = json("adamw_8bit/trl.json");
    let device = burn::tensor::Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = trl_fixture_config(&fixture, &tmp.path().join("out"));
    config.max_steps = 4;
    config.save_steps = 2.into();
    let mut full =
        Trainer::new(config.clone(), &device, Start::Fresh, &mut SilentObserver).unwrap();
    let full = full.train(None, &mut SilentObserver).unwrap();

    let (interrupted, checkpoint) = interrupted_run(&config, &device, 2);
    assert!(
        checkpoint_moments(&checkpoint)
            .values()
            .any(|m| matches!(m, Moments::Blockwise { .. })),
        "the checkpoint holds 8-bit states"
    );
    let after = resume_to_end(&interrupted, &device, &checkpoint);
    assert_eq!(
        without_timing(&full),
        without_timing(&after),
        "the resumed run's records differ"
    );
    let final_moments = |dir: &Path| checkpoint_moments(&dir.join("checkpoint-4"));
    assert_eq!(
        final_moments(&config.output_dir),
        final_moments(&interrupted.output_dir),
        "final optimizer states differ"
    );

    // The checkpoint does not resume with the float32 AdamW, whose state it does not hold.
    let other = TrainConfig {
        optim: Optimizer::AdamwTorch,
        ..interrupted.clone()
    };
    let Err(err) = Trainer::new(
        other,
        &device,
        Start::Resume(&checkpoint),
        &mut SilentObserver,
    ) else {
        panic!("resuming adamw_8bit state with adamw_torch is refused");
    };
    assert!(err.to_string().contains("optim"), "{err}");
}
