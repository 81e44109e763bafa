//! WPO's `log(sum_v p_v^2)` on the real logits of the four tiny models' goldens
//! (`models/<name>/golden.json`, from transformers), against the definition evaluated on the host
//! in float64 (`p = softmax(logits)`, then the sum of squares), on every compiled backend.

mod common;

use burn::tensor::{Bool, Tensor, TensorData};
use common::{host1, host2, vec2};
use sdpo_core::{completion_log_sum_sq_probs, log_sum_sq_probs};
use serde_json::Value;

/// `log(sum_v softmax(z)_v^2)` straight from the definition, in float64.
fn reference(z: &[f64]) -> f64 {
    // f64::max skips a NaN: a non-finite logit must not reach the fold unnoticed.
    assert!(z.iter().all(|x| x.is_finite()), "non-finite golden logit");
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max); // nan-checked
    let total: f64 = z.iter().map(|x| (x - max).exp()).sum();
    z.iter()
        .map(|x| {
            let p = (x - max).exp() / total;
            p * p
        })
        .sum::<f64>()
        .ln()
}

#[test]
fn log_sum_sq_probs_matches_the_definition_on_real_logits() {
    let mut checked = 0;
    for dev in sdpo_testkit::test_devices!() {
        for name in ["llama", "llama_tied", "qwen2", "gpt2"] {
            let golden: Value = serde_json::from_str(&sdpo_testkit::read_fixture(&format!(
                "models/{name}/golden.json"
            )))
            .expect("golden.json");
            let logits: Vec<Vec<Vec<f64>>> = golden["logits"]
                .as_array()
                .expect("logits")
                .iter()
                .map(|b| vec2(b, f64::NAN))
                .collect();
            let (rows, seq, vocab) = (logits.len(), logits[0].len(), logits[0][0].len());
            let flat: Vec<f32> = logits
                .iter()
                .flatten()
                .flatten()
                .map(|&x| x as f32)
                .collect();
            let tensor: Tensor<3> =
                Tensor::from_data(TensorData::new(flat, [rows, seq, vocab]), &dev.device);
            let what = format!("[{}] {name}", dev.name);

            // [rows, seq, vocab] -> [rows, seq], every position.
            let all: Tensor<2> = log_sum_sq_probs(tensor.clone()).expect("rank 3");
            let all = host2(all);
            for r in 0..rows {
                for t in 0..seq {
                    // Inputs are f32, so the reference is evaluated on the f32 values.
                    let z: Vec<f64> = logits[r][t].iter().map(|&x| x as f32 as f64).collect();
                    let e = reference(&z);
                    let a = all[r][t];
                    assert!(
                        a.is_finite() && (a - e).abs() <= 1e-5 * (1.0 + e.abs()),
                        "{what} [{r}][{t}]: got {a}, expected {e}"
                    );
                    assert!(
                        e <= 0.0 && e >= -(vocab as f64).ln() - 1e-9,
                        "{what}: range"
                    );
                    checked += 1;
                }
            }

            // [positions, vocab] -> [positions] gives the same values (bit for bit on flex; a
            // GPU reduction may order the sum differently for another shape).
            let flat_positions: Tensor<1> =
                log_sum_sq_probs(tensor.clone().reshape([rows * seq, vocab])).expect("rank 2");
            let flat_positions = host1(flat_positions);
            for (i, v) in flat_positions.iter().enumerate() {
                let e = all[i / seq][i % seq];
                if dev.name == "flex" {
                    assert_eq!(*v, e, "{what}: flat position {i}");
                } else {
                    assert!(
                        (v - e).abs() <= 1e-6 * (1.0 + e.abs()),
                        "{what}: flat position {i}"
                    );
                }
            }

            // Aligned with completion_logps: drop the last position, zero outside the mask.
            let mask_rows = vec2(&golden["loss_mask"], 0.0);
            let mask_flat: Vec<bool> = mask_rows.iter().flatten().map(|&m| m != 0.0).collect();
            let mask: Tensor<2, Bool> =
                Tensor::from_data(TensorData::new(mask_flat, [rows, seq - 1]), &dev.device);
            let aligned = host2(completion_log_sum_sq_probs(tensor, mask).expect("aligned"));
            for r in 0..rows {
                for t in 0..seq - 1 {
                    let expected = if mask_rows[r][t] != 0.0 {
                        all[r][t]
                    } else {
                        0.0
                    };
                    assert_eq!(aligned[r][t], expected, "{what}: aligned [{r}][{t}]");
                }
            }
        }
    }
    assert!(checked > 0);
    println!("log_sum_sq_probs: checked {checked} positions (4 models, every backend)");
}

#[test]
fn log_sum_sq_probs_extremes_and_rank_errors() {
    let device = burn::tensor::Device::flex();
    // Uniform over 8: log(8 * (1/8)^2) = -log 8. One dominant logit: ~0. Large logits: finite.
    let logits = Tensor::<2>::from_data(
        TensorData::new(
            [
                [0.0f32; 8],
                [80.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                [1e30, 1e30, -1e30, 0.0, 0.0, 0.0, 0.0, 0.0],
            ]
            .concat(),
            [3, 8],
        ),
        &device,
    );
    let v = host1(log_sum_sq_probs::<2, 1>(logits).unwrap());
    assert!((v[0] + 8f64.ln()).abs() < 1e-6, "{v:?}");
    assert!(v[1].abs() < 1e-6, "{v:?}");
    assert!((v[2] + 2f64.ln()).abs() < 1e-6, "{v:?}");
    // The output rank must be the input rank minus one.
    let logits = Tensor::<2>::zeros([2, 4], &device);
    assert!(log_sum_sq_probs::<2, 2>(logits).is_err());
}
