//! Logits and hidden states of every tiny checkpoint of the fixture set (each directory of
//! `fixtures/models/` with a golden) against transformers 5.24
//! (`fixtures/models/<name>/golden.safetensors`), on every compiled backend.

mod common;

use common::{Golden, host, model_dir, select_rows, tiny_models};
use sdpo_models::CausalLm;
use sdpo_testkit::{Tolerance, assert_close};

/// The fixture README's tolerance for an f32 implementation: 1e-4 absolute on logits.
const TOL: f64 = 1e-4;

#[test]
fn tiny_checkpoints_match_transformers_logits_and_hidden_states() {
    let models = tiny_models();
    for dev in sdpo_testkit::test_devices!() {
        for name in &models {
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
            let valid = |m: i64| m == 1;
            let diff = assert_close(
                &select_rows(&got, &mask_host, shape[2], valid),
                &select_rows(&want, &mask_host, shape[2], valid),
                Tolerance::absolute(TOL),
                &format!("[{}] {name} logits", dev.name),
            )
            .max_abs_diff;
            // Padded query positions: transformers lets the pad token attend to the earlier
            // real tokens; our mask does the same, so those logits match too.
            let padded = |m: i64| m == 0;
            let diff_padded = assert_close(
                &select_rows(&got, &mask_host, shape[2], padded),
                &select_rows(&want, &mask_host, shape[2], padded),
                Tolerance::absolute(TOL),
                &format!("[{}] {name} logits at padded positions", dev.name),
            )
            .max_abs_diff;

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
            let mut worst_hidden = 0.0f64;
            for (i, hidden) in out.hidden_states.into_iter().enumerate() {
                let (want, shape) = golden.f32(&format!("hidden_states.{i}"));
                assert_eq!(
                    hidden.dims().to_vec(),
                    shape,
                    "{name}: hidden_states.{i} shape"
                );
                let d = assert_close(
                    &select_rows(&host(hidden), &mask_host, shape[2], valid),
                    &select_rows(&want, &mask_host, shape[2], valid),
                    Tolerance::absolute(TOL),
                    &format!("[{}] {name} hidden_states.{i}", dev.name),
                )
                .max_abs_diff;
                worst_hidden = worst_hidden.max(d);
            }
            let positions = mask_host.iter().filter(|m| **m == 1).count();
            println!(
                "[{}] {name}: {positions} positions, logits max |diff| {diff:.2e} \
                 (padded positions {diff_padded:.2e}), {n_hidden} hidden states max |diff| {worst_hidden:.2e}",
                dev.name
            );
        }
        println!("[{}] checked {} models: {models:?}", dev.name, models.len());
    }
}
