//! Logits and hidden states of the four tiny checkpoints against transformers 5.24
//! (`fixtures/models/<name>/golden.safetensors`), on every compiled backend.

mod common;

use common::{Golden, TINY_MODELS, host, max_abs_diff_masked, model_dir};
use sdpo_models::CausalLm;

const TOL: f32 = 1e-4;

#[test]
fn tiny_checkpoints_match_transformers_logits_and_hidden_states() {
    for dev in sdpo_testkit::test_devices!() {
        for name in TINY_MODELS {
            let dir = model_dir(name);
            let golden = Golden::open(&dir.join("golden.safetensors"));
            let model = CausalLm::from_pretrained(&dir, &dev.device)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let ids = golden.int_tensor("input_ids", &dev.device);
            let mask = golden.int_tensor("attention_mask", &dev.device);
            let (mask_host, _) = golden.i64("attention_mask");
            model
                .check_inputs(&ids, &mask)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let out = model.forward_with_hidden_states(ids, mask);

            let (want, shape) = golden.f32("logits");
            assert_eq!(out.logits.dims().to_vec(), shape, "{name}: logits shape");
            assert_eq!(shape[2], model.config().vocab_size, "{name}: vocab");
            let got = host(out.logits);
            let diff = max_abs_diff_masked(&got, &want, &mask_host, shape[2]);
            assert!(
                diff <= TOL,
                "{name} on {}: logits differ by {diff}",
                dev.name
            );
            // Padded query positions: transformers lets the pad token attend to the earlier
            // real tokens; our mask does the same, so those logits match too.
            let padded: Vec<i64> = mask_host.iter().map(|m| 1 - m).collect();
            let diff_padded = max_abs_diff_masked(&got, &want, &padded, shape[2]);
            assert!(
                diff_padded <= TOL,
                "{name} on {}: padded logits differ by {diff_padded}",
                dev.name
            );

            let n_hidden = golden
                .names()
                .iter()
                .filter(|n| n.starts_with("hidden_states."))
                .count();
            assert_eq!(
                out.hidden_states.len(),
                n_hidden,
                "{name}: number of hidden states"
            );
            let mut worst_hidden = 0.0f32;
            for (i, hidden) in out.hidden_states.into_iter().enumerate() {
                let (want, shape) = golden.f32(&format!("hidden_states.{i}"));
                assert_eq!(
                    hidden.dims().to_vec(),
                    shape,
                    "{name}: hidden_states.{i} shape"
                );
                let d = max_abs_diff_masked(&host(hidden), &want, &mask_host, shape[2]);
                assert!(
                    d <= TOL,
                    "{name} on {}: hidden_states.{i} differ by {d}",
                    dev.name
                );
                worst_hidden = worst_hidden.max(d);
            }
            let valid = mask_host.iter().filter(|m| **m == 1).count();
            println!(
                "[{}] {name}: {valid} positions, logits max |diff| {diff:.2e} \
                 (padded positions {diff_padded:.2e}), {n_hidden} hidden states max |diff| {worst_hidden:.2e}",
                dev.name
            );
        }
    }
}
