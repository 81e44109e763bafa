//! Every case and threshold of `sdpo_mask.json`: scores, thresholds, kept masks, masked sums
//! and the sigmoid loss on them. float32 blocks on every backend, float64 blocks where the
//! backend has float64.

mod common;

use common::{
    Precision, assert_close1, assert_eq_mask, host_mask, host1, host2, mask2, tensor2, vec1, vec2,
};
use sdpo_core::{
    LossConfig, LossType, LossTypes, RunningMoments, TokenLogps, TrlSemantics, dpo_loss,
    mask_unimportant_tokens,
};
use serde_json::Value;

struct Tolerance {
    threshold_rel: f64,
    value_abs: f64,
    value_rel: f64,
}

fn tolerance(p: Precision) -> Tolerance {
    match p {
        Precision::F64 => Tolerance {
            threshold_rel: 1e-12,
            value_abs: 1e-12,
            value_rel: 1e-12,
        },
        Precision::F32 => Tolerance {
            threshold_rel: 1e-6,
            value_abs: 1e-5,
            value_rel: 1e-5,
        },
    }
}

fn inputs(case: &Value, p: Precision, device: &burn::tensor::Device) -> TokenLogps {
    let i = &case["inputs"];
    let t = |k: &str| tensor2(&vec2(&i[k], f64::NAN), p, device);
    TokenLogps {
        policy_chosen_logps: t("policy_chosen_logps"),
        policy_rejected_logps: t("policy_rejected_logps"),
        ref_chosen_logps: t("ref_chosen_logps"),
        ref_rejected_logps: t("ref_rejected_logps"),
        chosen_loss_mask: mask2(&vec2(&i["chosen_loss_mask"], 0.0), device),
        rejected_loss_mask: mask2(&vec2(&i["rejected_loss_mask"], 0.0), device),
        policy_chosen_log_sum_sq_probs: None,
        policy_rejected_log_sum_sq_probs: None,
    }
}

/// Compares scores where the fixture has a value (`null` marks a position that is not valid).
fn check_scores(what: &str, actual: Vec<Vec<f64>>, expected: &Value, tol: &Tolerance) {
    for (b, (row, exp_row)) in actual
        .iter()
        .zip(expected.as_array().expect("rows"))
        .enumerate()
    {
        for (t, (&a, e)) in row.iter().zip(exp_row.as_array().expect("row")).enumerate() {
            if let Some(e) = e.as_f64() {
                assert_close1(
                    &format!("{what}[{b}][{t}]"),
                    &[a],
                    &[e],
                    tol.value_abs,
                    tol.value_rel,
                );
            }
        }
    }
}

fn check_case(case: &Value, p: Precision, dev: &sdpo_testkit::TestDevice) -> usize {
    let id = case["id"].as_str().expect("id");
    let tol = tolerance(p);
    let inputs = inputs(case, p, &dev.device);
    let mut checked = 0;
    for result in case["results"].as_array().expect("results") {
        let q = result["threshold"].as_f64().expect("threshold");
        let block = &result[p.key()];
        let what = format!("[{}] {id} {} q={q}", dev.name, p.key());
        let sel = mask_unimportant_tokens(&inputs, q).unwrap_or_else(|e| panic!("{what}: {e}"));

        check_scores(
            &format!("{what} chosen_scores"),
            host2(sel.chosen_scores.clone()),
            &case["scores"][p.key()]["chosen_scores"],
            &tol,
        );
        check_scores(
            &format!("{what} rejected_scores"),
            host2(sel.rejected_scores.clone()),
            &case["scores"][p.key()]["rejected_scores"],
            &tol,
        );
        for (name, actual) in [
            ("chosen_threshold", sel.chosen_threshold.clone()),
            ("rejected_threshold", sel.rejected_threshold.clone()),
        ] {
            // |a - b| <= rel * max(1, |b|); -inf (null) must match exactly.
            let expected = vec1(&block[name], f64::NEG_INFINITY);
            assert_close1(
                &format!("{what} {name}"),
                &host1(actual),
                &expected,
                tol.threshold_rel,
                tol.threshold_rel,
            );
        }
        assert_eq_mask(
            &format!("{what} chosen_kept_mask"),
            &host_mask(sel.chosen_kept.clone()),
            &vec2(&block["chosen_kept_mask"], 0.0),
        );
        assert_eq_mask(
            &format!("{what} rejected_kept_mask"),
            &host_mask(sel.rejected_kept.clone()),
            &vec2(&block["rejected_kept_mask"], 0.0),
        );
        let sums = &sel.sums;
        for (name, actual) in [
            ("policy_chosen_sum", &sums.policy_chosen),
            ("policy_rejected_sum", &sums.policy_rejected),
            ("ref_chosen_sum", &sums.ref_chosen),
            ("ref_rejected_sum", &sums.ref_rejected),
        ] {
            assert_close1(
                &format!("{what} {name}"),
                &host1(actual.clone()),
                &vec1(&block[name], f64::NAN),
                tol.value_abs,
                tol.value_rel,
            );
        }
        // Rewards and losses are differences of sums: their error is relative to the sums'
        // magnitude (f32 sums of ~1e6-sized values differ by summation order).
        let sum_scale: f64 = [
            "policy_chosen_sum",
            "policy_rejected_sum",
            "ref_chosen_sum",
            "ref_rejected_sum",
        ]
        .iter()
        .flat_map(|k| vec1(&block[*k], 0.0))
        .map(f64::abs)
        .fold(0.0, f64::max);
        let derived_abs = tol.value_abs + tol.value_rel * 0.1 * 4.0 * sum_scale;
        for dpo in block["dpo"].as_array().expect("dpo") {
            let eps = dpo["label_smoothing"].as_f64().expect("label_smoothing");
            let config = LossConfig {
                trl_semantics: TrlSemantics::V0_28,
                loss_type: LossTypes::One(LossType::Sdpo),
                beta: 0.1,
                label_smoothing: eps,
                sdpo_threshold: q,
                ..LossConfig::default()
            };
            let out = dpo_loss(
                LossType::Sdpo,
                &config,
                sums,
                None,
                &mut RunningMoments::default(),
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            let what = format!("{what} ls={eps}");
            assert_close1(
                &format!("{what} losses"),
                &host1(out.losses),
                &vec1(&dpo["losses"], f64::NAN),
                derived_abs,
                tol.value_rel,
            );
            assert_close1(
                &format!("{what} chosen_rewards"),
                &host1(out.chosen_rewards),
                &vec1(&dpo["chosen_rewards"], f64::NAN),
                derived_abs,
                tol.value_rel,
            );
            assert_close1(
                &format!("{what} rejected_rewards"),
                &host1(out.rejected_rewards),
                &vec1(&dpo["rejected_rewards"], f64::NAN),
                derived_abs,
                tol.value_rel,
            );
        }
        checked += 1;
    }
    checked
}

#[test]
fn every_sdpo_mask_case_and_threshold() {
    let fixture: Value = serde_json::from_str(&sdpo_testkit::read_fixture("sdpo_mask.json"))
        .expect("sdpo_mask.json");
    let cases = fixture["cases"].as_array().expect("cases");
    let thresholds = fixture["thresholds"].as_array().expect("thresholds").len();
    for dev in sdpo_testkit::test_devices!() {
        for p in [Precision::F32, Precision::F64] {
            if p == Precision::F64 && !dev.supports_f64() {
                println!(
                    "[{}] float64 blocks skipped: this backend has no float64",
                    dev.name
                );
                continue;
            }
            let checked: usize = cases.iter().map(|c| check_case(c, p, &dev)).sum();
            assert_eq!(checked, cases.len() * thresholds, "every case x threshold");
            assert!(checked > 0);
            println!(
                "[{}] sdpo_mask.json {}: checked {} cases x {thresholds} thresholds = {checked}",
                dev.name,
                p.key(),
                cases.len()
            );
        }
    }
}
