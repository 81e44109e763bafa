//! Every case of `dpo_loss.json` (TRL 0.28 `DPOTrainer.dpo_loss`, float64) and every
//! `bco_pair` sequence, on every compiled backend that computes in float64.

mod common;

use common::{Precision, assert_close1, host1, tensor1, vec1};
use sdpo_core::{
    FDivergenceType, LossConfig, LossType, LossTypes, RunningMoments, SequenceLogps, TrlSemantics,
    dpo_loss,
};
use serde_json::Value;

const ABS: f64 = 1e-12;
const REL: f64 = 1e-10;

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

fn inputs(v: &Value, device: &burn::tensor::Device) -> SequenceLogps {
    let t = |k: &str| tensor1(&vec1(&v[k], f64::NAN), Precision::F64, device);
    SequenceLogps {
        policy_chosen: t("chosen_logps"),
        policy_rejected: t("rejected_logps"),
        ref_chosen: t("ref_chosen_logps"),
        ref_rejected: t("ref_rejected_logps"),
    }
}

fn check_moments(what: &str, actual: RunningMoments, expected: &Value) {
    let e = moments(expected);
    // The update is f32 arithmetic; the fixtures record its f64 widening, which we reproduce.
    assert_close1(
        &format!("{what} mean"),
        &[actual.mean],
        &[e.mean],
        1e-12,
        1e-9,
    );
    assert_close1(&format!("{what} var"), &[actual.var], &[e.var], 1e-12, 1e-6);
    assert_eq!(actual.count, e.count, "{what} count");
    let std = actual.std();
    match expected["std"].as_f64() {
        None => assert!(std.is_infinite(), "{what} std: got {std}, expected +inf"),
        Some(s) => assert_close1(&format!("{what} std"), &[std], &[s], 1e-12, 1e-6),
    }
}

#[test]
fn every_dpo_loss_case_matches_trl() {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().expect("cases");
    for dev in sdpo_testkit::test_devices!() {
        if !dev.supports_f64() {
            println!(
                "[{}] skipped: dpo_loss.json is float64, which this backend lacks",
                dev.name
            );
            continue;
        }
        let mut checked = 0;
        for case in cases {
            let id = case["id"].as_str().expect("id");
            let loss_type: LossType = case["loss_type"]
                .as_str()
                .expect("loss_type")
                .parse()
                .expect("known loss type");
            let applied = case["f_divergence_applied"]
                .as_bool()
                .expect("f_divergence_applied");
            let f_divergence_type = if applied {
                serde_json::from_value(case["f_divergence_type"].clone())
                    .expect("f_divergence_type")
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
                f_alpha_divergence_coef: Some(
                    case["f_alpha_divergence_coef"].as_f64().expect("alpha"),
                ),
                discopop_tau: case["discopop_tau"].as_f64().expect("tau"),
                ..LossConfig::default()
            };
            config.validate().unwrap_or_else(|e| panic!("{id}: {e}"));
            let mut state = if case["running_before"].is_null() {
                RunningMoments::default()
            } else {
                moments(&case["running_before"])
            };
            let nll = case["nll_loss"]
                .as_f64()
                .map(|x| tensor1(&[x], Precision::F64, &dev.device));
            let out = dpo_loss(
                loss_type,
                &config,
                &inputs(&case["inputs"], &dev.device),
                nll,
                &mut state,
            )
            .unwrap_or_else(|e| panic!("{id}: {e}"));
            let expected = &case["outputs"];
            assert_close1(
                &format!("[{}] {id} losses", dev.name),
                &host1(out.losses),
                &vec1(&expected["losses"], f64::NAN),
                ABS,
                REL,
            );
            assert_close1(
                &format!("[{}] {id} chosen_rewards", dev.name),
                &host1(out.chosen_rewards),
                &vec1(&expected["chosen_rewards"], f64::NAN),
                ABS,
                REL,
            );
            assert_close1(
                &format!("[{}] {id} rejected_rewards", dev.name),
                &host1(out.rejected_rewards),
                &vec1(&expected["rejected_rewards"], f64::NAN),
                ABS,
                REL,
            );
            if !case["running_after"].is_null() {
                check_moments(
                    &format!("[{}] {id}", dev.name),
                    state,
                    &case["running_after"],
                );
            }
            checked += 1;
        }
        assert_eq!(checked, cases.len());
        assert!(checked > 0, "no cases in dpo_loss.json");
        println!("[{}] dpo_loss.json: checked {checked} cases", dev.name);
    }
}

#[test]
fn bco_pair_sequences_carry_the_running_mean() {
    let fixture = fixture();
    let sequences = fixture["bco_sequences"].as_array().expect("bco_sequences");
    for dev in sdpo_testkit::test_devices!() {
        if !dev.supports_f64() {
            println!(
                "[{}] skipped: bco_sequences are float64, which this backend lacks",
                dev.name
            );
            continue;
        }
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
            assert!(
                (state.count - initial.count).abs() <= 1e-12 * initial.count
                    && state.mean == initial.mean
                    && state.var == initial.var,
                "{id}: starts from TRL's initial state"
            );
            for (j, step) in steps.iter().enumerate() {
                let what = format!("[{}] {id} step {j}", dev.name);
                check_moments(&format!("{what} before"), state, &step["running_before"]);
                let out = dpo_loss(
                    LossType::BcoPair,
                    &config,
                    &inputs(&step["inputs"], &dev.device),
                    None,
                    &mut state,
                )
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_close1(
                    &format!("{what} losses"),
                    &host1(out.losses),
                    &vec1(&step["outputs"]["losses"], f64::NAN),
                    ABS,
                    REL,
                );
                check_moments(&format!("{what} after"), state, &step["running_after"]);
                steps_checked += 1;
            }
        }
        assert!(steps_checked > 0, "no bco steps");
        println!(
            "[{}] bco_sequences: checked {} sequences, {steps_checked} steps",
            dev.name,
            sequences.len()
        );
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
        );
        checked += 1;
    }
    assert!(checked > 0);
    println!("running-moment updates: checked {checked}");
}
