//! TRL 1.16's `entropy` and `mean_token_accuracy` from the policy's logits of the sdpo_e2e
//! batch (`dpo_metrics_v1.json`, written by TRL itself): per position against the `entropy` and
//! `is_top1` of TRL's fused LM head, then the batch metrics against what TRL's `_compute_loss`
//! logged, within 1e-5 relative, on every compiled backend.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{host1, host2, mask2, vec2};
use sdpo_core::{label_is_top1, masked_mean, token_entropy};
use sdpo_testkit::{Tolerance, assert_close};
use serde_json::Value;

/// The fixture's `[rows][seq][vocab]` logits, flattened, with their shape.
fn logits(fixture: &Value) -> (Vec<f32>, [usize; 3]) {
    let rows = fixture["logits"].as_array().expect("logits");
    let seq = rows[0].as_array().expect("a row").len();
    let vocab = rows[0][0].as_array().expect("a position").len();
    let flat = rows
        .iter()
        .flat_map(|r| r.as_array().expect("a row"))
        .flat_map(|p| p.as_array().expect("a position"))
        .map(|x| x.as_f64().expect("a logit") as f32)
        .collect();
    (flat, [rows.len(), seq, vocab])
}

fn int_rows(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("a row")
                .iter()
                .map(|x| x.as_i64().expect("an integer"))
                .collect()
        })
        .collect()
}

/// Labels `[rows, seq]` for the logits at each position: `next[r][t + 1]` (the label of
/// position `t`), a valid dummy id 0 at the last position and wherever `next` is -100.
fn labels_for(next: &[Vec<i64>], device: &burn::tensor::Device) -> Tensor<2, Int> {
    let (rows, seq) = (next.len(), next[0].len());
    let flat: Vec<i64> = next
        .iter()
        .flat_map(|r| (0..seq).map(move |t| r.get(t + 1).copied().unwrap_or(0).max(0)))
        .collect();
    Tensor::from_data(TensorData::new(flat, [rows, seq]), device)
}

/// The values at the positions where `mask` is 1.
fn at_mask(values: &[Vec<f64>], mask: &[Vec<f64>]) -> Vec<f64> {
    values
        .iter()
        .zip(mask)
        .flat_map(|(v, m)| v.iter().zip(m).filter(|(_, m)| **m != 0.0).map(|(v, _)| *v))
        .collect()
}

#[test]
fn entropy_and_token_accuracy_match_trl_per_position_and_per_batch() {
    let fixture: Value = serde_json::from_str(&sdpo_testkit::read_fixture("dpo_metrics_v1.json"))
        .expect("dpo_metrics_v1.json");
    let (flat, [rows, seq, vocab]) = logits(&fixture);
    let loss_mask = vec2(&fixture["loss_mask"], 0.0);
    let input_ids = int_rows(&fixture["batch"]["input_ids"]);
    let trl_entropy = vec2(&fixture["per_token"]["entropy"], f64::NAN);
    let trl_top1 = vec2(&fixture["per_token"]["is_top1"], f64::NAN);
    let alt_labels = int_rows(&fixture["argmax_labels"]["labels"]);
    let alt_mask: Vec<Vec<f64>> = alt_labels
        .iter()
        .map(|r| {
            r[1..]
                .iter()
                .map(|&l| f64::from(u8::from(l >= 0)))
                .collect()
        })
        .collect();
    let alt_top1 = vec2(&fixture["argmax_labels"]["is_top1"], f64::NAN);
    let b = rows / 2;
    let mut checked = 0;
    for dev in sdpo_testkit::test_devices!() {
        let d = &dev.device;
        let what = |name: &str| format!("[{}] {name}", dev.name);
        let tensor: Tensor<3> =
            Tensor::from_data(TensorData::new(flat.clone(), [rows, seq, vocab]), d);
        let drop_last = |t: Tensor<2>| t.slice([0..rows, 0..seq - 1]);

        // Per position: [rows, seq, vocab] and the flattened [rows * seq, vocab] agree.
        let entropy: Tensor<2> = drop_last(token_entropy(tensor.clone()).expect("rank 3"));
        let flat_entropy: Tensor<1> =
            token_entropy(tensor.clone().reshape([rows * seq, vocab])).expect("rank 2");
        let ours = host2(entropy.clone());
        assert_close(
            &at_mask(&ours, &loss_mask),
            &at_mask(&trl_entropy, &loss_mask),
            Tolerance::relative(1e-5),
            &what("per-token entropy"),
        );
        let flat_host = host1(flat_entropy);
        let flat_rows: Vec<Vec<f64>> = flat_host
            .chunks(seq)
            .map(|r| r[..seq - 1].to_vec())
            .collect();
        assert_close(
            &at_mask(&flat_rows, &loss_mask),
            &at_mask(&ours, &loss_mask),
            Tolerance::relative(1e-6),
            &what("flattened entropy"),
        );
        for (labels, mask, expected, name) in [
            (
                &input_ids,
                &loss_mask,
                &trl_top1,
                "is_top1 of the batch's labels",
            ),
            (
                &alt_labels,
                &alt_mask,
                &alt_top1,
                "is_top1 of argmax labels",
            ),
        ] {
            let top1 =
                drop_last(label_is_top1(tensor.clone(), labels_for(labels, d)).expect("rank 3"));
            assert_eq!(
                at_mask(&host2(top1), mask),
                at_mask(expected, mask),
                "{}",
                what(name)
            );
            checked += at_mask(expected, mask).len();
        }

        // The batch metrics as TRL's _compute_loss logs them, train and eval.
        let mask = mask2(&loss_mask, d);
        let top1 = drop_last(label_is_top1(tensor, labels_for(&input_ids, d)).expect("rank 3"));
        let entropy_metric = host1(masked_mean(entropy, mask.clone()))[0];
        let accuracy_metric = host1(masked_mean(
            top1.slice([0..b, 0..seq - 1]),
            mask.slice([0..b, 0..seq - 1]),
        ))[0];
        for log in ["train_log", "eval_log"] {
            let prefix = if log == "eval_log" { "eval_" } else { "" };
            for (name, ours) in [
                ("entropy", entropy_metric),
                ("mean_token_accuracy", accuracy_metric),
            ] {
                let expected = fixture[log][format!("{prefix}{name}")]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{log}.{prefix}{name}"));
                assert_close(
                    &[ours],
                    &[expected],
                    Tolerance::relative(1e-5),
                    &what(&format!("{log} {name}")),
                );
                checked += 1;
            }
        }
        checked += at_mask(&trl_entropy, &loss_mask).len();
    }
    assert!(checked > 0);
    println!("token stats: checked {checked} values against TRL 1.16 (every backend)");
}

#[test]
fn ties_go_to_the_first_maximum_and_extremes_stay_finite() {
    let device = burn::tensor::Device::flex();
    let logits = Tensor::<2>::from_data(
        TensorData::new(
            vec![
                1.0f32, 3.0, 3.0, 0.0, //
                2.0, 2.0, 2.0, 2.0, //
                2.0, 2.0, 2.0, 2.0, //
                80.0, 0.0, 0.0, -1e30,
            ],
            [4, 4],
        ),
        &device,
    );
    let labels =
        |ids: [i64; 4]| Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [4]), &device);
    let top1 = |ids| host1(label_is_top1::<2, 1>(logits.clone(), labels(ids)).unwrap());
    assert_eq!(top1([1, 0, 1, 0]), vec![1.0, 1.0, 0.0, 1.0]);
    assert_eq!(top1([2, 3, 0, 3]), vec![0.0, 0.0, 1.0, 0.0]);
    let entropy = host1(token_entropy::<2, 1>(logits.clone()).unwrap());
    assert!((entropy[1] - 4f64.ln()).abs() < 1e-6, "{entropy:?}");
    assert!(
        entropy[3].abs() < 1e-6 && entropy[3] >= -1e-7,
        "{entropy:?}"
    );
    assert!(entropy.iter().all(|e| e.is_finite()), "{entropy:?}");
    // The output rank must be the input rank minus one; labels must match the positions.
    assert!(token_entropy::<2, 2>(logits.clone()).is_err());
    let short = Tensor::<1, Int>::zeros([3], &device);
    assert!(label_is_top1::<2, 1>(logits, short).is_err());
    // An empty mask gives 0, as TRL's metrics do.
    let values = Tensor::<2>::ones([2, 3], &device);
    let none = Tensor::<2, burn::tensor::Bool>::from_data(
        TensorData::new(vec![false; 6], [2, 3]),
        &device,
    );
    assert_eq!(host1(masked_mean(values, none)), vec![0.0]);
}
