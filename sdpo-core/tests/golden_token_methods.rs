//! Every case of `token_methods.json`: ConfPO, SePO, TIS-DPO (live from the contrastive
//! models and from the precomputed dataset column), the critical-token method (and `p_CE` from
//! logits) and TGDPO against a float64 PyTorch transcription of their authors' code. Scores,
//! weights, normalisers, dropped pairs, per-pair losses, rewards, the loss and its gradient
//! with respect to the policy log-probs; float32 on every backend, float64 where the backend
//! has it. Reference-free methods get NaN reference log-probs, which they must not read.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{Precision, host1, host2, mask2, tensor2, vec1, vec2};
use sdpo_core::token_methods::confpo::{Confpo, ConfpoConfig};
use sdpo_core::token_methods::critical_token::{
    self, CriticalToken, CriticalTokenConfig, CtReduction,
};
use sdpo_core::token_methods::sepo::{self, Sepo, SepoConfig};
use sdpo_core::token_methods::tgdpo::{self, Tgdpo, TgdpoConfig};
use sdpo_core::token_methods::tisdpo::{self, Tisdpo, TisdpoConfig, TisdpoTransform};
use sdpo_core::{SidePair, TokenColumns, TokenLogps, TokenMethod, TokenMethodOutput};
use sdpo_testkit::{Tolerance, assert_close};
use serde_json::Value;

struct Tolerances {
    value: Tolerance,
    loss: Tolerance,
    grad: Tolerance,
}

fn tolerances(p: Precision) -> Tolerances {
    match p {
        Precision::F64 => Tolerances {
            value: Tolerance::elementwise(1e-12, 1e-12),
            loss: Tolerance::elementwise(1e-12, 1e-10),
            grad: Tolerance::relative_to_max(1e-10),
        },
        Precision::F32 => Tolerances {
            value: Tolerance::elementwise(2e-6, 2e-6),
            loss: Tolerance::elementwise(1e-6, 2e-5),
            grad: Tolerance::relative_to_max(1e-4),
        },
    }
}

fn param(case: &Value, key: &str) -> f64 {
    case["params"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("{}: params.{key} is not a number", case["name"]))
}

/// The method a case's `method` and `params` describe.
fn method(case: &Value) -> TokenMethod {
    let params = &case["params"];
    let name = case["method"].as_str().expect("method");
    let made = match name {
        "confpo" => Confpo::new(ConfpoConfig {
            beta: param(case, "beta"),
            simpo_gamma: param(case, "simpo_gamma"),
            label_smoothing: param(case, "label_smoothing"),
        })
        .map(TokenMethod::Confpo),
        "sepo" => Sepo::new(SepoConfig {
            sepo_ratio: param(case, "sepo_ratio"),
            sepo_rejected_ratio: Some(param(case, "sepo_rejected_ratio")),
            sepo_scale: param(case, "sepo_scale"),
        })
        .map(TokenMethod::Sepo),
        "tisdpo" => {
            let transform = match params["tisdpo_transform"].as_str().expect("transform") {
                "origin" => TisdpoTransform::Origin,
                "binary" => TisdpoTransform::Binary {
                    top_percent: param(case, "tisdpo_top_percent"),
                },
                "threshold" => TisdpoTransform::Threshold {
                    upper: param(case, "tisdpo_upper"),
                    lower: param(case, "tisdpo_lower"),
                },
                "threshold_and_scale" => TisdpoTransform::ThresholdAndScale {
                    min_val: param(case, "tisdpo_min_val"),
                    max_val: param(case, "tisdpo_max_val"),
                    min_scale: param(case, "tisdpo_min_scale"),
                    max_scale: param(case, "tisdpo_max_scale"),
                },
                "rank_based" => TisdpoTransform::RankBased {
                    min_scale: param(case, "tisdpo_min_scale"),
                    max_scale: param(case, "tisdpo_max_scale"),
                },
                other => panic!("{}: unknown transform {other}", case["name"]),
            };
            Tisdpo::new(TisdpoConfig {
                beta: param(case, "beta"),
                transform,
                round_decimals: Some(param(case, "tisdpo_round_decimals") as u32),
            })
            .map(TokenMethod::Tisdpo)
        }
        "critical_token" => {
            assert_eq!(param(case, "ct_ce_gamma"), 1.0, "{}", case["name"]);
            let reduction = match params["ct_dpo_reduction"].as_str().expect("reduction") {
                "position" => CtReduction::Position {
                    denominator: Some(param(case, "ct_position_denominator")),
                },
                "sequence" => CtReduction::Sequence,
                other => panic!("{}: unknown reduction {other}", case["name"]),
            };
            CriticalToken::new(CriticalTokenConfig {
                beta: param(case, "beta"),
                only_neg: params["ct_only_neg"].as_bool().expect("ct_only_neg"),
                reduction,
            })
            .map(TokenMethod::CriticalToken)
        }
        "tgdpo" => Tgdpo::new(TgdpoConfig {
            beta: param(case, "beta"),
            alpha: param(case, "tgdpo_alpha"),
        })
        .map(TokenMethod::Tgdpo),
        other => panic!("{}: unknown method {other}", case["name"]),
    };
    made.unwrap_or_else(|e| panic!("{}: {e}", case["name"]))
}

struct Batch {
    logps: TokenLogps,
    policy_chosen: Tensor<2>,
    policy_rejected: Tensor<2>,
}

fn batch(case: &Value, p: Precision, device: &Device) -> Batch {
    let inputs = &case["inputs"];
    let t = |k: &str| tensor2(&vec2(&inputs[k], f64::NAN), p, device);
    let policy_chosen = t("policy_chosen_logps").require_grad();
    let policy_rejected = t("policy_rejected_logps").require_grad();
    // Reference-free methods get NaN: they must not read it.
    let reference = |k: &str| {
        if inputs.get(k).is_some() {
            t(k)
        } else {
            policy_chosen.clone().detach().full_like(f64::NAN)
        }
    };
    Batch {
        logps: TokenLogps {
            policy_chosen_logps: policy_chosen.clone(),
            policy_rejected_logps: policy_rejected.clone(),
            ref_chosen_logps: reference("ref_chosen_logps"),
            ref_rejected_logps: reference("ref_rejected_logps"),
            chosen_loss_mask: mask2(&vec2(&inputs["chosen_loss_mask"], 0.0), device),
            rejected_loss_mask: mask2(&vec2(&inputs["rejected_loss_mask"], 0.0), device),
            policy_chosen_log_sum_sq_probs: None,
            policy_rejected_log_sum_sq_probs: None,
        },
        policy_chosen,
        policy_rejected,
    }
}

fn pair(case: &Value, chosen: &str, rejected: &str, p: Precision, device: &Device) -> SidePair {
    let t = |k: &str| tensor2(&vec2(&case["inputs"][k], f64::NAN), p, device);
    SidePair {
        chosen: t(chosen),
        rejected: t(rejected),
    }
}

/// The ragged dataset column (one value per completion token but EOS) laid out on the rows:
/// NaN everywhere else, which the scorer must not read.
fn dataset_column(case: &Value, side: &str, p: Precision, device: &Device) -> Tensor<2> {
    let ragged = vec2(&case["inputs"][format!("{side}_weight")], f64::NAN);
    let mask = vec2(&case["inputs"][format!("{side}_loss_mask")], 0.0);
    let rows: Vec<Vec<f64>> = mask
        .iter()
        .zip(&ragged)
        .map(|(mask, values)| {
            let positions: Vec<usize> = (0..mask.len()).filter(|&t| mask[t] != 0.0).collect();
            assert_eq!(
                positions.len(),
                values.len() + 1,
                "{}: ragged column",
                case["name"]
            );
            let mut row = vec![f64::NAN; mask.len()];
            for (&t, &v) in positions.iter().zip(values) {
                row[t] = v;
            }
            row
        })
        .collect();
    tensor2(&rows, p, device)
}

/// The column sets a case is run with (TIS-DPO: live and precomputed).
fn column_sets(case: &Value, p: Precision, device: &Device) -> Vec<(&'static str, TokenColumns)> {
    let columns = TokenColumns::new();
    match case["method"].as_str().expect("method") {
        "confpo" => vec![("", columns)],
        "sepo" => vec![(
            "",
            columns
                .with(
                    sepo::ORACLE_COLUMN,
                    pair(
                        case,
                        "oracle_chosen_logps",
                        "oracle_rejected_logps",
                        p,
                        device,
                    ),
                )
                .with(
                    sepo::ORACLE_REF_COLUMN,
                    pair(
                        case,
                        "oracle_ref_chosen_logps",
                        "oracle_ref_rejected_logps",
                        p,
                        device,
                    ),
                ),
        )],
        "tisdpo" => vec![
            (
                " (live)",
                columns
                    .clone()
                    .with(
                        tisdpo::POSITIVE_COLUMN,
                        pair(case, "pos_chosen_logps", "pos_rejected_logps", p, device),
                    )
                    .with(
                        tisdpo::NEGATIVE_COLUMN,
                        pair(case, "neg_chosen_logps", "neg_rejected_logps", p, device),
                    ),
            ),
            (
                " (dataset column)",
                columns.with(
                    tisdpo::RAW_WEIGHT_COLUMN,
                    SidePair {
                        chosen: dataset_column(case, "chosen", p, device),
                        rejected: dataset_column(case, "rejected", p, device),
                    },
                ),
            ),
        ],
        "critical_token" => vec![(
            "",
            columns.with(
                critical_token::CE_PROB_COLUMN,
                pair(case, "chosen_ce_prob", "rejected_ce_prob", p, device),
            ),
        )],
        "tgdpo" => vec![(
            "",
            columns.with(
                tgdpo::REWARD_COLUMN,
                pair(
                    case,
                    "reward_chosen_logps",
                    "reward_rejected_logps",
                    p,
                    device,
                ),
            ),
        )],
        other => panic!("unknown method {other}"),
    }
}

/// Compares where the fixture has a value (`null` marks a position without a score).
fn assert_where_given(actual: &[Vec<f64>], expected: &Value, tol: Tolerance, what: &str) -> usize {
    let expected = vec2(expected, f64::NAN);
    assert_eq!(actual.len(), expected.len(), "{what}: rows");
    let (mut a, mut e) = (Vec::new(), Vec::new());
    for (row, exp_row) in actual.iter().zip(&expected) {
        assert_eq!(row.len(), exp_row.len(), "{what}: columns");
        for (&x, &y) in row.iter().zip(exp_row) {
            if !y.is_nan() {
                a.push(x);
                e.push(y);
            }
        }
    }
    assert_close(&a, &e, tol, what);
    a.len()
}

fn flat(rows: &[Vec<f64>]) -> Vec<f64> {
    rows.iter().flatten().copied().collect()
}

fn check_case(case: &Value, label: &str, out: TokenMethodOutput, batch: &Batch, tol: &Tolerances) {
    let expected = &case["expected"];
    let name = format!("{}{label}", case["name"].as_str().expect("name"));
    let w = &out.weights;
    assert_where_given(
        &host2(w.chosen_scores.clone()),
        &expected["chosen_scores"],
        tol.value,
        &format!("{name}: chosen_scores"),
    );
    assert_where_given(
        &host2(w.rejected_scores.clone()),
        &expected["rejected_scores"],
        tol.value,
        &format!("{name}: rejected_scores"),
    );
    for (what, actual, key) in [
        ("chosen_weights", &w.chosen, "chosen_weights"),
        ("rejected_weights", &w.rejected, "rejected_weights"),
    ] {
        let actual = flat(&host2(actual.clone()));
        let expected = flat(&vec2(&expected[key], f64::NAN));
        assert_close(&actual, &expected, tol.value, &format!("{name}: {what}"));
    }
    for (what, actual) in [
        ("chosen_normaliser", &w.chosen_normaliser),
        ("rejected_normaliser", &w.rejected_normaliser),
    ] {
        match (actual, expected[what].is_null()) {
            (None, true) => {}
            (Some(t), false) => {
                let values = host1(t.clone());
                assert_close(
                    &values,
                    &vec1(&expected[what], f64::NAN),
                    Tolerance::EXACT,
                    &format!("{name}: {what}"),
                );
            }
            (a, _) => panic!(
                "{name}: {what}: ours {}, the fixture's {}",
                a.is_some(),
                expected[what]
            ),
        }
    }
    match (&w.pair_valid, expected["pair_valid"].is_null()) {
        (None, true) => {}
        (Some(valid), false) => {
            let ours = host1(valid.clone().float());
            assert_eq!(
                ours,
                vec1(&expected["pair_valid"], f64::NAN),
                "{name}: pair_valid"
            );
        }
        (a, _) => panic!(
            "{name}: pair_valid: ours {}, the fixture's {}",
            a.is_some(),
            expected["pair_valid"]
        ),
    }

    // Per-pair losses; for the position reduction ours are scaled so that their mean is the
    // loss: the fixture's per-pair sums times B / denominator.
    let batch_size = case["batch_size"].as_u64().expect("batch_size") as f64;
    let mut pair_losses = vec1(&expected["pair_losses"], f64::NAN);
    if case["params"]["ct_dpo_reduction"].as_str() == Some("position") {
        let denominator = param(case, "ct_position_denominator");
        for l in &mut pair_losses {
            *l *= batch_size / denominator;
        }
    }
    assert_close(
        &host1(out.losses.clone()),
        &pair_losses,
        tol.loss,
        &format!("{name}: pair_losses"),
    );
    assert_close(
        &host1(out.chosen_rewards.clone()),
        &vec1(&expected["chosen_rewards"], f64::NAN),
        tol.loss,
        &format!("{name}: chosen_rewards"),
    );
    assert_close(
        &host1(out.rejected_rewards.clone()),
        &vec1(&expected["rejected_rewards"], f64::NAN),
        tol.loss,
        &format!("{name}: rejected_rewards"),
    );
    let loss = expected["loss"].as_f64().expect("loss");
    assert_close(
        &host1(out.loss.clone()),
        &[loss],
        tol.loss,
        &format!("{name}: loss"),
    );

    let grads = out.loss.backward();
    for (what, leaf, key) in [
        ("chosen", &batch.policy_chosen, "grad_policy_chosen_logps"),
        (
            "rejected",
            &batch.policy_rejected,
            "grad_policy_rejected_logps",
        ),
    ] {
        let expected = flat(&vec2(&expected[key], f64::NAN));
        let actual = match leaf.grad(&grads) {
            Some(grad) => flat(&host2(grad)),
            // No path from the loss to this side (every pair dropped): the gradient is 0.
            None => vec![0.0; expected.len()],
        };
        assert_close(
            &actual,
            &expected,
            tol.grad,
            &format!("{name}: {what} gradient"),
        );
    }
}

fn cases() -> Vec<Value> {
    let text = sdpo_testkit::read_fixture("token_methods.json");
    let fixture: Value = serde_json::from_str(&text).expect("token_methods.json is JSON");
    assert_eq!(fixture["format"], "token_methods/1", "fixture layout");
    let cases = fixture["cases"].as_array().expect("cases").clone();
    for method in ["confpo", "sepo", "tisdpo", "critical_token", "tgdpo"] {
        assert!(
            cases.iter().any(|c| c["method"] == method),
            "the fixture has no {method} case"
        );
    }
    cases
}

#[test]
fn every_token_method_case_matches_its_golden() {
    let cases = cases();
    for dev in sdpo_testkit::test_devices!() {
        let device = dev.device.clone().autodiff();
        let mut precisions = vec![Precision::F32];
        if dev.supports_f64() {
            precisions.push(Precision::F64);
        }
        let mut runs = 0;
        for &p in &precisions {
            let tol = tolerances(p);
            for case in &cases {
                let method = method(case);
                for (label, columns) in column_sets(case, p, &device) {
                    let batch = batch(case, p, &device);
                    let out = method
                        .forward(&batch.logps, &columns)
                        .unwrap_or_else(|e| panic!("{}{label}: {e}", case["name"]));
                    check_case(
                        case,
                        &format!("{label} [{} {}]", dev.name, p.key()),
                        out,
                        &batch,
                        &tol,
                    );
                    runs += 1;
                }
            }
        }
        eprintln!(
            "{}: {} cases, {runs} runs ({} precisions) match",
            dev.name,
            cases.len(),
            precisions.len()
        );
    }
}

/// `p_CE` from the two tuned models' logits (the `ct_logits_*` cases) equals the fixture's
/// probability column at every completion token.
#[test]
fn contrastive_estimation_probabilities_match_the_logits_cases() {
    let cases: Vec<Value> = cases()
        .into_iter()
        .filter(|c| c["inputs"].get("pos_chosen_logits").is_some())
        .collect();
    assert!(!cases.is_empty(), "the fixture has no case with logits");
    for dev in sdpo_testkit::test_devices!() {
        for case in &cases {
            for side in ["chosen", "rejected"] {
                let inputs = &case["inputs"];
                let logits = |k: String| {
                    let rows: Vec<Vec<Vec<f64>>> = inputs[&k]
                        .as_array()
                        .expect("logits")
                        .iter()
                        .map(|r| vec2(r, f64::NAN))
                        .collect();
                    let dims = [rows.len(), rows[0].len(), rows[0][0].len()];
                    let flat: Vec<f32> =
                        rows.iter().flatten().flatten().map(|&x| x as f32).collect();
                    Tensor::<3>::from_data(TensorData::new(flat, dims), &dev.device)
                };
                let labels = vec2(&inputs[format!("{side}_labels")], f64::NAN);
                let dims = [labels.len(), labels[0].len()];
                let labels: Vec<i64> = labels.iter().flatten().map(|&x| x as i64).collect();
                let labels =
                    Tensor::<2, Int>::from_data(TensorData::new(labels, dims), &dev.device);
                let probs = critical_token::ce_probs(
                    logits(format!("pos_{side}_logits")),
                    logits(format!("neg_{side}_logits")),
                    labels,
                    param(case, "ct_ce_gamma"),
                )
                .expect("ce_probs");
                let mask = vec2(&inputs[format!("{side}_loss_mask")], 0.0);
                let expected = vec2(&inputs[format!("{side}_ce_prob")], f64::NAN);
                let (mut a, mut e) = (Vec::new(), Vec::new());
                for ((row, exp_row), mask) in host2(probs).iter().zip(&expected).zip(&mask) {
                    for t in 0..row.len() {
                        if mask[t] != 0.0 {
                            a.push(row[t]);
                            e.push(exp_row[t]);
                        }
                    }
                }
                assert_close(
                    &a,
                    &e,
                    Tolerance::elementwise(1e-6, 1e-5),
                    &format!("{} {side} p_CE [{}]", case["name"], dev.name),
                );
            }
        }
    }
}

/// The flat configuration keys (`loss_type` plus the case's `params`, which use the keys'
/// names) build the same method as the typed configs above, and `PreferenceLoss` with those
/// keys gives the fixture's loss and rewards: the path `sdpo train` takes.
#[test]
fn the_configuration_keys_build_each_case_s_method_and_loss() {
    use sdpo_core::{LossConfig, PreferenceLoss};
    let device = Device::flex().autodiff();
    for case in cases() {
        let name = case["name"].as_str().expect("name");
        let mut keys = case["params"].as_object().expect("params").clone();
        keys.insert("loss_type".into(), case["method"].clone());
        let config: LossConfig = serde_json::from_value(Value::Object(keys))
            .unwrap_or_else(|e| panic!("{name}: the params are not configuration keys: {e}"));
        let built = config
            .token_method()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: not a token-level method"));
        assert_eq!(
            format!("{built:?}"),
            format!("{:?}", method(&case)),
            "{name}: the keys build another method"
        );
        let mut loss = PreferenceLoss::new(config).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (label, columns) = column_sets(&case, Precision::F64, &device)
            .into_iter()
            .next()
            .expect("a column set");
        let batch = batch(&case, Precision::F64, &device);
        let out = loss
            .forward_with_columns(&batch.logps, None, &columns)
            .unwrap_or_else(|e| panic!("{name}{label}: {e}"));
        let tol = tolerances(Precision::F64).loss;
        let expected = &case["expected"];
        assert_close(
            &host1(out.loss),
            &[expected["loss"].as_f64().expect("loss")],
            tol,
            &format!("{name}{label}: loss through PreferenceLoss"),
        );
        assert_close(
            &host1(out.chosen_rewards),
            &vec1(&expected["chosen_rewards"], f64::NAN),
            tol,
            &format!("{name}{label}: chosen_rewards through PreferenceLoss"),
        );
        assert!(out.token_weights.is_some(), "{name}: no token weights");
    }
}
