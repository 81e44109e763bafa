//! Every case of `dpo_loss.json` (TRL 0.28 `DPOTrainer.dpo_loss`, float64) and every
//! `bco_pair` sequence: in float64 on every backend that has it, and in float32 on every
//! backend (wgpu has no float64; flex runs both, so the float32 path is exercised everywhere).
//!
//! # The float32 tolerance
//! The float32 run parses the same f64 inputs as f32 and compares with the f64 goldens, so its
//! error is dominated by rounding the inputs (relative 2^-24 ≈ 6e-8 each; |input| <= ~300 here,
//! so the log-ratio difference moves by up to ~4 · 300 · 6e-8 ≈ 7e-5 before β <= 1 scales it)
//! and by the f32 arithmetic after it. We accept `|a - e| <= 1e-4 + 1e-4 * |e|`: the absolute
//! part covers that input error through the losses' slopes (<= ~1 for the sigmoid family), the
//! relative part the large outputs (ipo up to ~2e8, alpha-divergence exponentials) whose error
//! is relative. A wrong formula, sign or missing term moves an output by far more (outputs vary
//! by O(1) between loss types and betas). Cases f32 cannot compute are listed and counted (see
//! [`not_computable_in_f32`]); at most 5 % may be.

mod common;

use common::{Precision, host1, tensor1, vec1};
use sdpo_core::{
    FDivergenceType, LossConfig, LossType, LossTypes, RunningMoments, SequenceLogps, TrlSemantics,
    dpo_loss,
};
use sdpo_testkit::{TestDevice, Tolerance, assert_close};
use serde_json::Value;

/// The fixture README's float64 tolerance: `|a - b| <= 1e-12 + 1e-10 * |b|`.
const F64_TOLERANCE: Tolerance = Tolerance {
    abs: 1e-12,
    rel: 1e-10,
    rel_to_max: 0.0,
};

/// float32 against the float64 goldens; see the module docs for the derivation.
const F32_TOLERANCE: Tolerance = Tolerance {
    abs: 1e-4,
    rel: 1e-4,
    rel_to_max: 0.0,
};

fn tolerance(p: Precision) -> Tolerance {
    match p {
        Precision::F64 => F64_TOLERANCE,
        Precision::F32 => F32_TOLERANCE,
    }
}

/// The precisions to run on `dev`: float32 always, float64 where the backend has it.
fn precisions(dev: &TestDevice) -> Vec<Precision> {
    if dev.supports_f64() {
        vec![Precision::F64, Precision::F32]
    } else {
        println!(
            "[{}] float64 skipped (this backend lacks it); float32 runs",
            dev.name
        );
        vec![Precision::F32]
    }
}

/// Why a case cannot be computed in f32, if it cannot: an output beyond the f32 range. (discopop
/// with `x < -88.7` used to be listed here: `exp(-x) * sigmoid(x / tau)` was inf * 0 = NaN in
/// f32; sdpo-core now computes it as `exp(-x + logsigmoid(x / tau))`, so those cases count.)
fn not_computable_in_f32(case: &Value) -> Option<&'static str> {
    let outputs = &case["outputs"];
    let beyond_range = ["losses", "chosen_rewards", "rejected_rewards"]
        .iter()
        .flat_map(|k| vec1(&outputs[*k], f64::NAN))
        .any(|x| x.abs() > f64::from(f32::MAX));
    if beyond_range {
        return Some("output beyond the f32 range");
    }
    None
}

fn fixture() -> Value {
    serde_json::from_str(&sdpo_testkit::read_fixture("dpo_loss.json")).expect("dpo_loss.json")
}

fn moments(v: &Value) -> RunningMoments {
    RunningMoments {
        mean: v["mean"].as_f64().expect("mean"),
        var: v["var"].as_f64().expect("var"),
        count: v["count"].as_f64().expect("count"),
    }
}

fn inputs(v: &Value, p: Precision, device: &burn::tensor::Device) -> SequenceLogps {
    let t = |k: &str| tensor1(&vec1(&v[k], f64::NAN), p, device);
    SequenceLogps {
        policy_chosen: t("chosen_logps"),
        policy_rejected: t("rejected_logps"),
        ref_chosen: t("ref_chosen_logps"),
        ref_rejected: t("ref_rejected_logps"),
    }
}

/// Compares a running-moment state. The update is f32 arithmetic whose f64 widening the
/// fixtures record; from f64 inputs we reproduce it to ~1e-9. From f32 inputs the batch mean
/// fed to it differs by input rounding (relative ~1e-7, amplified by the f32 rounding of the
/// update), so the mean gets `input_rel` instead.
fn check_moments(what: &str, actual: RunningMoments, expected: &Value, input_rel: f64) {
    let e = moments(expected);
    assert_close(
        &[actual.mean],
        &[e.mean],
        Tolerance::elementwise(1e-12, input_rel),
        &format!("{what} mean"),
    );
    assert_close(
        &[actual.var],
        &[e.var],
        Tolerance::elementwise(1e-12, 1e-6_f64.max(input_rel)),
        &format!("{what} var"),
    );
    assert_eq!(actual.count, e.count, "{what} count");
    // `null` is +inf (after the first update), which must match exactly.
    let expected_std = expected["std"].as_f64().unwrap_or(f64::INFINITY);
    assert_close(
        &[actual.std()],
        &[expected_std],
        Tolerance::elementwise(1e-12, 1e-6_f64.max(input_rel)),
        &format!("{what} std"),
    );
}

/// Relative tolerance of the running mean fed from inputs in `p` (see [`check_moments`]).
fn moments_rel(p: Precision) -> f64 {
    match p {
        Precision::F64 => 1e-9,
        Precision::F32 => 1e-4,
    }
}

/// Runs every case of `dpo_loss.json` on `dev` in precision `p`; returns (checked, not
/// comparable in this precision).
fn check_every_case(cases: &[Value], dev: &TestDevice, p: Precision) -> (usize, usize) {
    let tol = tolerance(p);
    let (mut checked, mut out_of_range) = (0, 0);
    for case in cases {
        let id = case["id"].as_str().expect("id");
        let what = format!("[{}] {} {id}", dev.name, p.key());
        if p == Precision::F32
            && let Some(reason) = not_computable_in_f32(case)
        {
            println!("{what}: not compared in f32: {reason}");
            out_of_range += 1;
            continue;
        }
        let loss_type: LossType = case["loss_type"]
            .as_str()
            .expect("loss_type")
            .parse()
            .expect("known loss type");
        let applied = case["f_divergence_applied"]
            .as_bool()
            .expect("f_divergence_applied");
        let f_divergence_type = if applied {
            serde_json::from_value(case["f_divergence_type"].clone()).expect("f_divergence_type")
        } else {
            // TRL 0.28 never applied it (string vs enum); the outputs are reverse KL.
            FDivergenceType::ReverseKl
        };
        let config = LossConfig {
            trl_semantics: TrlSemantics::V0_28,
            loss_type: LossTypes::One(loss_type),
            beta: case["beta"].as_f64().expect("beta"),
            label_smoothing: case["label_smoothing"].as_f64().expect("label_smoothing"),
            reference_free: case["reference_free"].as_bool().expect("reference_free"),
            f_divergence_type,
            f_alpha_divergence_coef: Some(case["f_alpha_divergence_coef"].as_f64().expect("alpha")),
            discopop_tau: case["discopop_tau"].as_f64().expect("tau"),
            ..LossConfig::default()
        };
        config.validate().unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut state = if case["running_before"].is_null() {
            RunningMoments::default()
        } else {
            moments(&case["running_before"])
        };
        let nll = case["nll_loss"]
            .as_f64()
            .map(|x| tensor1(&[x], p, &dev.device));
        let out = dpo_loss(
            loss_type,
            &config,
            &inputs(&case["inputs"], p, &dev.device),
            nll,
            &mut state,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let expected = &case["outputs"];
        for (name, actual) in [
            ("losses", out.losses),
            ("chosen_rewards", out.chosen_rewards),
            ("rejected_rewards", out.rejected_rewards),
        ] {
            assert_close(
                &host1(actual),
                &vec1(&expected[name], f64::NAN),
                tol,
                &format!("{what} {name}"),
            );
        }
        if !case["running_after"].is_null() {
            check_moments(&what, state, &case["running_after"], moments_rel(p));
        }
        checked += 1;
    }
    (checked, out_of_range)
}

#[test]
fn every_dpo_loss_case_matches_trl() {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(!cases.is_empty(), "no cases in dpo_loss.json");
    for dev in sdpo_testkit::test_devices!() {
        for p in precisions(&dev) {
            let (checked, out_of_range) = check_every_case(cases, &dev, p);
            assert_eq!(checked + out_of_range, cases.len());
            // Only a handful of exponential outliers may be left out in f32.
            assert!(
                out_of_range * 20 <= cases.len(),
                "{out_of_range} of {} cases not computable in f32",
                cases.len()
            );
            println!(
                "[{}] dpo_loss.json {}: checked {checked} of {} cases \
                 ({out_of_range} not computable in this precision, listed above)",
                dev.name,
                p.key(),
                cases.len()
            );
        }
    }
}

#[test]
fn bco_pair_sequences_carry_the_running_mean() {
    let fixture = fixture();
    let sequences = fixture["bco_sequences"].as_array().expect("bco_sequences");
    assert!(!sequences.is_empty(), "no bco_sequences");
    for dev in sdpo_testkit::test_devices!() {
        for p in precisions(&dev) {
            let mut steps_checked = 0;
            for seq in sequences {
                let id = seq["id"].as_str().expect("id");
                let config = LossConfig {
                    trl_semantics: TrlSemantics::V0_28,
                    loss_type: LossTypes::One(LossType::BcoPair),
                    beta: seq["beta"].as_f64().expect("beta"),
                    label_smoothing: seq["label_smoothing"].as_f64().unwrap_or(0.0),
                    ..LossConfig::default()
                };
                // Start from the recorded state (TRL's initial one, up to how it was written).
                let steps = seq["steps"].as_array().expect("steps");
                let mut state = moments(&steps[0]["running_before"]);
                let initial = RunningMoments::default();
                assert_close(
                    &[state.count, state.mean, state.var],
                    &[initial.count, initial.mean, initial.var],
                    Tolerance::relative(1e-12),
                    &format!("{id}: starts from TRL's initial state (count, mean, var)"),
                );
                for (j, step) in steps.iter().enumerate() {
                    let what = format!("[{}] {} {id} step {j}", dev.name, p.key());
                    check_moments(
                        &format!("{what} before"),
                        state,
                        &step["running_before"],
                        moments_rel(p),
                    );
                    let out = dpo_loss(
                        LossType::BcoPair,
                        &config,
                        &inputs(&step["inputs"], p, &dev.device),
                        None,
                        &mut state,
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_close(
                        &host1(out.losses),
                        &vec1(&step["outputs"]["losses"], f64::NAN),
                        tolerance(p),
                        &format!("{what} losses"),
                    );
                    check_moments(
                        &format!("{what} after"),
                        state,
                        &step["running_after"],
                        moments_rel(p),
                    );
                    steps_checked += 1;
                }
            }
            assert!(steps_checked > 0, "no bco steps");
            println!(
                "[{}] bco_sequences {}: checked {} sequences, {steps_checked} steps",
                dev.name,
                p.key(),
                sequences.len()
            );
        }
    }
}

#[test]
fn running_moments_update_alone_matches_every_bco_case() {
    // The update rule on its own, host-side, against running_before -> running_after.
    let fixture = fixture();
    let mut checked = 0;
    for case in fixture["cases"].as_array().expect("cases") {
        if case["running_before"].is_null() {
            continue;
        }
        let beta = case["beta"].as_f64().expect("beta");
        let i = &case["inputs"];
        let rewards: Vec<f64> = vec1(&i["chosen_logps"], 0.0)
            .iter()
            .zip(vec1(&i["ref_chosen_logps"], 0.0))
            .map(|(p, r)| beta * (p - r))
            .chain(
                vec1(&i["rejected_logps"], 0.0)
                    .iter()
                    .zip(vec1(&i["ref_rejected_logps"], 0.0))
                    .map(|(p, r)| beta * (p - r)),
            )
            .collect();
        let mean = rewards.iter().sum::<f64>() / rewards.len() as f64;
        let mut state = moments(&case["running_before"]);
        state.update(mean);
        check_moments(
            case["id"].as_str().expect("id"),
            state,
            &case["running_after"],
            moments_rel(Precision::F64),
        );
        checked += 1;
    }
    assert!(checked > 0);
    println!("running-moment updates: checked {checked}");
}
