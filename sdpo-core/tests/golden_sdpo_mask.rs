//! Every case and threshold of `sdpo_mask.json`: scores, thresholds, kept masks, masked sums
//! and the sigmoid loss on them. float32 blocks on every backend, float64 blocks where the
//! backend has float64.

mod common;

use common::{Precision, assert_eq_mask, host_mask, host1, host2, mask2, tensor2, vec1, vec2};
use sdpo_core::{
    LossConfig, LossType, LossTypes, RunningMoments, TokenLogps, TrlSemantics, dpo_loss,
    mask_unimportant_tokens,
};
use sdpo_testkit::{Tolerance, assert_close, assert_close_scaled};
use serde_json::Value;

/// The fixture README's suggested checks, per precision.
struct MaskTolerance {
    threshold_rel: f64,
    value_abs: f64,
    value_rel: f64,
}

fn tolerance(p: Precision) -> MaskTolerance {
    match p {
        Precision::F64 => MaskTolerance {
            threshold_rel: 1e-12,
            value_abs: 1e-12,
            value_rel: 1e-12,
        },
        Precision::F32 => MaskTolerance {
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
fn check_scores(what: &str, actual: Vec<Vec<f64>>, expected: &Value, tol: &MaskTolerance) {
    let expected_rows = expected.as_array().expect("rows");
    assert_eq!(actual.len(), expected_rows.len(), "{what}: rows");
    for (b, (row, exp_row)) in actual
        .iter()
        .zip(expected.as_array().expect("rows"))
        .enumerate()
    {
        let exp_row = exp_row.as_array().expect("row");
        assert_eq!(row.len(), exp_row.len(), "{what}[{b}]: length");
        for (t, (&a, e)) in row.iter().zip(exp_row).enumerate() {
            if let Some(e) = e.as_f64() {
                assert_close(
                    &[a],
                    &[e],
                    Tolerance::elementwise(tol.value_abs, tol.value_rel),
                    &format!("{what}[{b}][{t}]"),
                );
            }
        }
    }
}

/// Checks every threshold of one case; `beta` is the fixture's (top-level `beta`).
fn check_case(case: &Value, beta: f64, p: Precision, dev: &sdpo_testkit::TestDevice) -> usize {
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
            assert_close(
                &host1(actual),
                &expected,
                Tolerance::elementwise(tol.threshold_rel, tol.threshold_rel),
                &format!("{what} {name}"),
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
            assert_close(
                &host1(actual.clone()),
                &vec1(&block[name], f64::NAN),
                Tolerance::elementwise(tol.value_abs, tol.value_rel),
                &format!("{what} {name}"),
            );
        }
        // Rewards and losses are differences of sums, so their error is relative to the sums
        // they come from (f32 sums of ~1e6-sized values differ by summation order), not to
        // their own size: each element gets the scale of its own pair's sums (β = 0.1 times
        // the |sums| involved; -logsigmoid has slope <= 1). Per element, so the 1e30 rows of
        // `huge_magnitude` do not loosen the check of the small ones.
        let abs_sum =
            |k: &str| -> Vec<f64> { vec1(&block[k], f64::NAN).iter().map(|x| x.abs()).collect() };
        let (pcs, prs, rcs, rrs) = (
            abs_sum("policy_chosen_sum"),
            abs_sum("policy_rejected_sum"),
            abs_sum("ref_chosen_sum"),
            abs_sum("ref_rejected_sum"),
        );
        let chosen_scale: Vec<f64> = (0..pcs.len()).map(|i| beta * (pcs[i] + rcs[i])).collect();
        let rejected_scale: Vec<f64> = (0..pcs.len()).map(|i| beta * (prs[i] + rrs[i])).collect();
        let loss_scale: Vec<f64> = (0..pcs.len())
            .map(|i| chosen_scale[i] + rejected_scale[i])
            .collect();
        let derived = Tolerance {
            rel_to_max: tol.value_rel,
            ..Tolerance::elementwise(tol.value_abs, tol.value_rel)
        };
        for dpo in block["dpo"].as_array().expect("dpo") {
            let eps = dpo["label_smoothing"].as_f64().expect("label_smoothing");
            let config = LossConfig {
                trl_semantics: TrlSemantics::V0_28,
                loss_type: LossTypes::One(LossType::Sdpo),
                beta,
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
            for (name, actual, scale) in [
                ("losses", out.losses, &loss_scale),
                ("chosen_rewards", out.chosen_rewards, &chosen_scale),
                ("rejected_rewards", out.rejected_rewards, &rejected_scale),
            ] {
                assert_close_scaled(
                    &host1(actual),
                    &vec1(&dpo[name], f64::NAN),
                    scale,
                    derived,
                    &format!("{what} {name}"),
                );
            }
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
    let beta = fixture["beta"].as_f64().expect("beta");
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
            let checked: usize = cases.iter().map(|c| check_case(c, beta, p, &dev)).sum();
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
