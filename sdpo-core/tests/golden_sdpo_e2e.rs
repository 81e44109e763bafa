//! The log-prob / selection / loss part of `sdpo_e2e.json`: its per-token log-probs of two tiny
//! Llamas are given, so no model is needed. float32, every backend.

mod common;

use common::{Precision, assert_eq_mask, host_mask, host1, mask2, tensor2, vec1, vec2};
use sdpo_core::{
    LossConfig, LossType, LossTypes, PreferenceLoss, TokenLogps, preference_metrics, read_metrics,
};
use sdpo_testkit::{Tolerance, assert_close};
use serde_json::Value;

#[test]
fn sdpo_e2e_selection_and_loss_at_every_threshold() {
    let fixture: Value =
        serde_json::from_str(&sdpo_testkit::read_fixture("sdpo_e2e.json")).expect("sdpo_e2e.json");
    let beta = fixture["beta"].as_f64().expect("beta");
    let label_smoothing = fixture["label_smoothing"]
        .as_f64()
        .expect("label_smoothing");
    let results = fixture["results"].as_array().expect("results");
    for dev in sdpo_testkit::test_devices!() {
        let d = &dev.device;
        let t = |k: &str| tensor2(&vec2(&fixture[k], f64::NAN), Precision::F32, d);
        let inputs = TokenLogps {
            policy_chosen_logps: t("policy_chosen_logps"),
            policy_rejected_logps: t("policy_rejected_logps"),
            ref_chosen_logps: t("ref_chosen_logps"),
            ref_rejected_logps: t("ref_rejected_logps"),
            chosen_loss_mask: mask2(&vec2(&fixture["chosen_loss_mask"], 0.0), d),
            rejected_loss_mask: mask2(&vec2(&fixture["rejected_loss_mask"], 0.0), d),
            policy_chosen_log_sum_sq_probs: None,
            policy_rejected_log_sum_sq_probs: None,
        };
        for r in results {
            let q = r["threshold"].as_f64().expect("threshold");
            let what = format!("[{}] q={q}", dev.name);
            let mut objective = PreferenceLoss::new(LossConfig {
                loss_type: LossTypes::One(LossType::Sdpo),
                beta,
                label_smoothing,
                sdpo_threshold: q,
                ..LossConfig::default()
            })
            .expect("valid config");
            let out = objective.forward(&inputs, None).expect("forward");
            let sel = out.selection.clone().expect("sdpo selects tokens");
            for (name, actual) in [
                ("chosen_threshold", sel.chosen_threshold.clone()),
                ("rejected_threshold", sel.rejected_threshold.clone()),
            ] {
                assert_close(
                    &host1(actual),
                    &vec1(&r[name], f64::NEG_INFINITY),
                    Tolerance::elementwise(1e-6, 1e-6),
                    &format!("{what} {name}"),
                );
            }
            assert_eq_mask(
                &format!("{what} chosen_kept_mask"),
                &host_mask(sel.chosen_kept.clone()),
                &vec2(&r["chosen_kept_mask"], 0.0),
            );
            assert_eq_mask(
                &format!("{what} rejected_kept_mask"),
                &host_mask(sel.rejected_kept.clone()),
                &vec2(&r["rejected_kept_mask"], 0.0),
            );
            for (name, actual) in [
                ("policy_chosen_sum", sel.sums.policy_chosen.clone()),
                ("policy_rejected_sum", sel.sums.policy_rejected.clone()),
                ("ref_chosen_sum", sel.sums.ref_chosen.clone()),
                ("ref_rejected_sum", sel.sums.ref_rejected.clone()),
            ] {
                assert_close(
                    &host1(actual),
                    &vec1(&r[name], f64::NAN),
                    Tolerance::elementwise(1e-5, 1e-5),
                    &format!("{what} {name}"),
                );
            }
            let losses = out.losses[0].1.clone();
            assert_close(
                &host1(losses),
                &vec1(&r["losses"], f64::NAN),
                Tolerance::elementwise(1e-5, 1e-5),
                &format!("{what} losses"),
            );
            assert_close(
                &host1(out.chosen_rewards.clone()),
                &vec1(&r["chosen_rewards"], f64::NAN),
                Tolerance::elementwise(1e-5, 1e-5),
                &format!("{what} chosen_rewards"),
            );
            assert_close(
                &host1(out.rejected_rewards.clone()),
                &vec1(&r["rejected_rewards"], f64::NAN),
                Tolerance::elementwise(1e-5, 1e-5),
                &format!("{what} rejected_rewards"),
            );
            assert_close(
                &host1(out.loss.clone()),
                &[r["loss_mean"].as_f64().expect("loss_mean")],
                Tolerance::elementwise(1e-6, 1e-5),
                &format!("{what} loss_mean"),
            );
            let metrics = read_metrics(preference_metrics(&out)).expect("metrics");
            let metric = |name: &str| {
                metrics
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .expect(name)
            };
            let kept: f64 = vec2(&r["chosen_kept_mask"], 0.0).iter().flatten().sum();
            let valid: f64 = vec2(&fixture["chosen_loss_mask"], 0.0)
                .iter()
                .flatten()
                .sum();
            assert_close(
                &[metric("sdpo/chosen_kept_fraction")],
                &[kept / valid],
                Tolerance::elementwise(1e-7, 1e-6),
                &format!("{what} kept fraction"),
            );
        }
        println!(
            "[{}] sdpo_e2e.json: checked {} thresholds",
            dev.name,
            results.len()
        );
    }
}
