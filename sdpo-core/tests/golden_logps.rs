//! Next-token log-probs from logits, against transformers' goldens of every tiny model of the
//! fixture set (`models/<name>/golden.json`: full logits and `log_softmax(logits[t])[ids[t+1]]`).

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{host2, vec2};
use sdpo_core::{completion_logps, next_token_targets, token_logps};
use sdpo_testkit::{Tolerance, assert_close};
use serde_json::Value;

fn ids(v: &Value, device: &burn::tensor::Device) -> Tensor<2, Int> {
    let rows = vec2(v, 0.0);
    let t = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), t]), device)
}

#[test]
fn token_logps_match_transformers_for_every_model_and_position() {
    let names = sdpo_testkit::fixture_model_names();
    for dev in sdpo_testkit::test_devices!() {
        let mut models = 0;
        for name in &names {
            let golden: Value = serde_json::from_str(&sdpo_testkit::read_fixture(&format!(
                "models/{name}/golden.json"
            )))
            .expect("golden.json");
            let logits_rows: Vec<Vec<Vec<f64>>> = golden["logits"]
                .as_array()
                .expect("logits")
                .iter()
                .map(|b| vec2(b, f64::NAN))
                .collect();
            let (batch, seq, vocab) = (
                logits_rows.len(),
                logits_rows[0].len(),
                logits_rows[0][0].len(),
            );
            let flat: Vec<f32> = logits_rows
                .iter()
                .flatten()
                .flatten()
                .map(|&x| x as f32)
                .collect();
            let logits: Tensor<3> =
                Tensor::from_data(TensorData::new(flat, [batch, seq, vocab]), &dev.device);
            let input_ids = ids(&golden["input_ids"], &dev.device);
            let expected = vec2(&golden["next_token_logps"], f64::NAN);

            // All positions: the shift alone, then token_logps.
            let all_ones = Tensor::<2, Int>::ones([batch, seq], &dev.device);
            let targets = next_token_targets(input_ids.clone(), all_ones).expect("targets");
            let logits_head = logits.clone().slice([0..batch, 0..seq - 1, 0..vocab]);
            let logps = host2(token_logps(logits_head, targets.labels).expect("token_logps"));
            for (b, (row, exp)) in logps.iter().zip(&expected).enumerate() {
                assert_close(
                    row,
                    exp,
                    Tolerance::elementwise(1e-5, 1e-6),
                    &format!("[{}] {name} row {b}", dev.name),
                );
            }

            // completion_logps with the golden loss mask (attention_mask[:, 1:]) as completion.
            let attention = ids(&golden["attention_mask"], &dev.device);
            let (masked, mask) =
                completion_logps(logits, input_ids, attention).expect("completion_logps");
            let expected_masked = vec2(&golden["next_token_logps_masked"], f64::NAN);
            for (b, (row, exp)) in host2(masked).iter().zip(&expected_masked).enumerate() {
                assert_close(
                    row,
                    exp,
                    Tolerance::elementwise(1e-5, 1e-6),
                    &format!("[{}] {name} masked row {b}", dev.name),
                );
            }
            let mask = host2(mask.float());
            assert_eq!(
                mask,
                vec2(&golden["loss_mask"], 0.0),
                "[{}] {name} loss mask",
                dev.name
            );
            models += 1;
        }
        assert_eq!(models, names.len());
        println!(
            "[{}] token log-probs: checked {models} models {names:?}",
            dev.name
        );
    }
}
