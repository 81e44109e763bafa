//! Every case of `dpo_loss_v1.json` (TRL 1.16's `_compute_loss`, float32): the loss, TRL's six
//! reward / log-prob metrics and the gradient with respect to the policy's per-token log-probs,
//! through `PreferenceLoss` under `trl_semantics = "1.x"`, on every compiled backend.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::{host2, mask2, vec1, vec2};
use sdpo_core::{
    FDivergenceType, LossConfig, LossType, LossTypes, PreferenceLoss, TokenLogps, TrlSemantics,
    chosen_nll_loss, preference_metrics, read_metrics,
};
use serde_json::Value;

/// The fixture's suggested tolerance (float32).
const REL: f64 = 1e-5;

const METRICS: [&str; 6] = [
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
];

fn fixture() -> Value {
    serde_json::from_str(&sdpo_testkit::read_fixture("dpo_loss_v1.json")).expect("dpo_loss_v1.json")
}

fn config_of(c: &Value) -> LossConfig {
    let types: Vec<LossType> = c["loss_type"]
        .as_array()
        .expect("loss_type list")
        .iter()
        .map(|t| t.as_str().expect("name").parse().expect("known loss type"))
        .collect();
    let f_divergence_type: FDivergenceType =
        serde_json::from_value(c["f_divergence_type"].clone()).expect("f_divergence_type");
    LossConfig {
        trl_semantics: TrlSemantics::V1,
        loss_type: LossTypes::Many(types),
        loss_weights: Some(vec1(&c["loss_weights"], f64::NAN)),
        beta: c["beta"].as_f64().expect("beta"),
        label_smoothing: c["label_smoothing"].as_f64().expect("label_smoothing"),
        f_divergence_type,
        f_alpha_divergence_coef: Some(c["f_alpha_divergence_coef"].as_f64().expect("alpha")),
        ld_alpha: c["ld_alpha"].as_f64(),
        use_weighting: c["use_weighting"].as_bool().expect("use_weighting"),
        discopop_tau: c["discopop_tau"].as_f64().expect("discopop_tau"),
        ..LossConfig::default()
    }
}

/// `[rows][cols]` numbers as an f32 tensor (the fixture's f32 decimals round-trip exactly).
fn f32_tensor(rows: &[Vec<f64>], device: &Device) -> Tensor<2> {
    let cols = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), cols]), device)
}

/// What one case produced on one device.
struct Outcome {
    loss: f64,
    metrics: Vec<(&'static str, f64)>,
    /// d loss / d policy per-token log-probs, `[2B][T-1]`.
    grad: Vec<Vec<f64>>,
}

fn run_case(case: &Value, config: LossConfig, device: &Device) -> Outcome {
    let id = case["id"].as_str().expect("id");
    let policy_rows = vec2(&case["policy_logps"], f64::NAN);
    let rows = policy_rows.len();
    let b = rows / 2;
    let cols = policy_rows[0].len();
    let loss_mask_rows: Vec<Vec<f64>> = vec2(&case["completion_mask"], f64::NAN)
        .into_iter()
        .map(|r| r[1..].to_vec())
        .collect();
    let policy = f32_tensor(&policy_rows, device).require_grad();
    let reference = f32_tensor(&vec2(&case["ref_logps"], f64::NAN), device);
    let masks = mask2(&loss_mask_rows, device);
    let sq = f32_tensor(&vec2(&case["log_sum_sq_probs"], f64::NAN), device);
    let chosen = |t: Tensor<2>| t.slice([0..b, 0..cols]);
    let rejected = |t: Tensor<2>| t.slice([b..rows, 0..cols]);
    let wpo = config.use_weighting;
    let inputs = TokenLogps {
        policy_chosen_logps: chosen(policy.clone()),
        policy_rejected_logps: rejected(policy.clone()),
        ref_chosen_logps: chosen(reference.clone()),
        ref_rejected_logps: rejected(reference),
        chosen_loss_mask: masks.clone().slice([0..b, 0..cols]),
        rejected_loss_mask: masks.slice([b..rows, 0..cols]),
        policy_chosen_log_sum_sq_probs: wpo.then(|| chosen(sq.clone())),
        policy_rejected_log_sum_sq_probs: wpo.then(|| rejected(sq)),
    };
    let nll = config
        .loss_types()
        .contains(&LossType::Sft)
        .then(|| chosen_nll_loss(&inputs));
    let mut objective = PreferenceLoss::new(config).unwrap_or_else(|e| panic!("{id}: {e}"));
    let out = objective
        .forward(&inputs, nll)
        .unwrap_or_else(|e| panic!("{id}: {e}"));
    let metrics = read_metrics(preference_metrics(&out)).unwrap_or_else(|e| panic!("{id}: {e}"));
    let loss = out
        .loss
        .clone()
        .try_into_vec_as::<f64>()
        .expect("read loss")[0];
    let grads = out.loss.backward();
    let grad = policy
        .grad(&grads)
        .unwrap_or_else(|| panic!("{id}: no gradient reached the policy log-probs"));
    Outcome {
        loss,
        metrics,
        grad: host2(grad),
    }
}

fn assert_rel(what: &str, actual: f64, expected: f64) {
    assert!(
        sdpo_testkit::compare(
            &[actual],
            &[expected],
            sdpo_testkit::Tolerance::elementwise(0.0, REL)
        )
        .is_ok(),
        "{what}: got {actual:e}, expected {expected:e} (rel diff {:e})",
        ((actual - expected) / expected).abs()
    );
}

/// The gradient at the completion positions, within `REL` of the gradient tensor's largest
/// |value| at those positions (as the other gradient fixtures are compared): a token's gradient
/// can be a difference of two nearly equal terms (`apo_down`: 1.6e-5 from two terms of 8e-3),
/// and float32 rounds those terms, not their difference. Outside the completion TRL's fused
/// head returns constant zeros, so its gradient there reaches no parameter; ours is exactly 0.
fn assert_grad(what: &str, actual: &[Vec<f64>], expected: &[Vec<f64>], mask: &[Vec<f64>]) -> usize {
    // f64::max skips a NaN: the scale is only meaningful over finite expectations.
    assert!(
        expected.iter().flatten().all(|e| e.is_finite()),
        "{what}: the fixture's gradient is not finite"
    );
    let scale = expected
        .iter()
        .flatten()
        .zip(mask.iter().flatten())
        .filter(|(_, m)| **m != 0.0)
        .map(|(e, _)| e.abs())
        .fold(0.0, f64::max); // nan-checked: every element is asserted finite below
    let mut checked = 0;
    for (r, ((a_row, e_row), m_row)) in actual.iter().zip(expected).zip(mask).enumerate() {
        for (t, ((&a, &e), &m)) in a_row.iter().zip(e_row).zip(m_row).enumerate() {
            if m == 0.0 {
                assert_eq!(a, 0.0, "{what}[{r}][{t}]: gradient outside the completion");
                continue;
            }
            assert!(
                a.is_finite() && e.is_finite() && (a - e).abs() <= REL * scale,
                "{what}[{r}][{t}]: got {a:e}, expected {e:e} (tensor scale {scale:e})"
            );
            checked += 1;
        }
    }
    checked
}

/// WPO pair weights on the host from the fixture's numbers (TRL's formula), `[B]`.
fn host_pair_weights(case: &Value) -> Vec<f64> {
    let logps = vec2(&case["policy_logps"], f64::NAN);
    let sq = vec2(&case["log_sum_sq_probs"], f64::NAN);
    let mask = vec2(&case["completion_mask"], f64::NAN);
    let w: Vec<f64> = (0..logps.len())
        .map(|r| {
            let m = &mask[r][1..];
            let n = m.iter().sum::<f64>().max(1.0);
            let s: f64 = (0..m.len()).map(|t| (logps[r][t] - sq[r][t]) * m[t]).sum();
            (s / n).exp()
        })
        .collect();
    let b = w.len() / 2;
    (0..b).map(|i| w[i] * w[b + i]).collect()
}

#[test]
fn every_dpo_loss_v1_case_matches_trl_1_16() {
    let fixture = fixture();
    assert_eq!(fixture["format"], "dpo_loss_v1/v1", "fixture layout");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(!cases.is_empty(), "no cases in dpo_loss_v1.json");
    for dev in sdpo_testkit::test_devices!() {
        let device = dev.device.clone().autodiff();
        let (mut checked, mut metrics_checked, mut grads_checked, mut trl_failed) = (0, 0, 0, 0);
        for case in cases {
            let id = format!("[{}] {}", dev.name, case["id"].as_str().expect("id"));
            let config = config_of(&case["config"]);
            let out = run_case(case, config.clone(), &device);
            assert_rel(
                &format!("{id} loss"),
                out.loss,
                case["loss"].as_f64().expect("loss"),
            );
            for name in METRICS {
                let expected = case["metrics"][name]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{id}: fixture lacks {name}"));
                let actual = out
                    .metrics
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("{id}: no metric {name}"))
                    .1;
                // A margin is a difference of rewards: its error is relative to them.
                let scale = if name == "rewards/margins" {
                    let m = |k: &str| case["metrics"][k].as_f64().unwrap_or(0.0).abs();
                    m("rewards/chosen").max(m("rewards/rejected"))
                } else {
                    expected.abs()
                };
                assert!(
                    actual.is_finite() && (actual - expected).abs() <= REL * scale,
                    "{id} {name}: got {actual:e}, expected {expected:e}"
                );
                metrics_checked += 1;
            }
            let mask: Vec<Vec<f64>> = vec2(&case["completion_mask"], f64::NAN)
                .into_iter()
                .map(|r| r[1..].to_vec())
                .collect();
            if case["grad_policy_logps"].is_null() {
                // TRL's backward fails here (hinge with WPO). The true gradient: the WPO weights
                // are constants, so each pair's gradient is its weight times the unweighted one.
                assert!(
                    case["trl_backward_error"].is_string(),
                    "{id}: a null gradient needs TRL's error"
                );
                let plain = run_case(
                    case,
                    LossConfig {
                        use_weighting: false,
                        ..config
                    },
                    &device,
                );
                let w = host_pair_weights(case);
                let b = w.len();
                let expected: Vec<Vec<f64>> = plain
                    .grad
                    .iter()
                    .enumerate()
                    .map(|(r, row)| row.iter().map(|g| g * w[r % b]).collect())
                    .collect();
                grads_checked +=
                    assert_grad(&format!("{id} grad (true)"), &out.grad, &expected, &mask);
                trl_failed += 1;
            } else {
                let expected = vec2(&case["grad_policy_logps"], f64::NAN);
                grads_checked += assert_grad(&format!("{id} grad"), &out.grad, &expected, &mask);
            }
            checked += 1;
        }
        assert_eq!(checked, cases.len());
        println!(
            "[{}] dpo_loss_v1.json: checked {checked} cases (loss), {metrics_checked} metrics, \
             {grads_checked} gradient entries ({trl_failed} cases where TRL's backward fails, \
             checked against the weighted unweighted gradient)",
            dev.name
        );
    }
}

#[test]
fn trl_error_configurations_are_handled() {
    // TRL 1.16 raises for `sft` with WPO; here it is defined as nll * w per pair, so the loss is
    // the NLL times the mean pair weight.
    let fixture = fixture();
    let errors = fixture["trl_errors"].as_array().expect("trl_errors");
    assert!(!errors.is_empty());
    for err in errors {
        let config = config_of(&err["config"]);
        assert!(config.use_weighting && config.loss_types() == [LossType::Sft]);
        config
            .validate()
            .expect("sft with use_weighting is defined here");
    }
    // Any case's tensors serve as inputs.
    let case = fixture["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["config"]["loss_type"][0] == "sft")
        .expect("an sft case");
    for dev in sdpo_testkit::test_devices!() {
        let device = dev.device.clone().autodiff();
        let config = config_of(&errors[0]["config"]);
        let weighted = run_case(case, config.clone(), &device);
        let plain = run_case(
            case,
            LossConfig {
                use_weighting: false,
                ..config
            },
            &device,
        );
        let w = host_pair_weights(case);
        let mean_w = w.iter().sum::<f64>() / w.len() as f64;
        assert_rel(
            &format!("[{}] sft with WPO", dev.name),
            weighted.loss,
            plain.loss * mean_w,
        );
        println!(
            "[{}] sft with use_weighting: nll * mean pair weight",
            dev.name
        );
    }
}
