//! The real SmolLM2-135M-Instruct against transformers 5.24 (`fixtures/smollm2/golden.json`).
//!
//! Needs the weights: `tools/get-smollm2.sh DIR`, then `SDPO_SMOLLM2_DIR=DIR cargo test -p
//! sdpo-models --test smollm2 -- --include-ignored`. The test is `#[ignore]`d so a plain
//! `cargo test` does not pretend to have checked the real model; run with the flag but without
//! the weights it fails. Release (`--release`) is several times faster than debug.

mod common;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use common::host;
use sdpo_models::CausalLm;
use sdpo_testkit::{Tolerance, assert_close};
use serde::Deserialize;

#[derive(Deserialize)]
struct Prompt {
    id: String,
    input_ids: Vec<i64>,
    next_token_logp: Vec<f32>,
    top5_ids: Vec<Vec<i64>>,
    top5_logps: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct GoldenFile {
    prompts: Vec<Prompt>,
}

/// The fixture README's tolerance for an f32 implementation (eager vs SDPA attention in torch
/// already differ by 4e-6).
const TOL: f64 = 1e-3;

#[test]
#[ignore = "needs SDPO_SMOLLM2_DIR (tools/get-smollm2.sh)"]
fn smollm2_next_token_logps_match_transformers() {
    let dir = sdpo_testkit::smollm2_dir();
    let golden: GoldenFile =
        serde_json::from_str(&sdpo_testkit::read_fixture("smollm2/golden.json")).expect("golden");
    for dev in sdpo_testkit::test_devices!() {
        let started = std::time::Instant::now();
        let model = CausalLm::from_pretrained(&dir, &dev.device)
            .unwrap_or_else(|e| panic!("load {}: {e}", dir.display()));
        let vocab = model.config().vocab_size;

        // All prompts in one right-padded batch, as the trainer runs them.
        let batch = golden.prompts.len();
        let seq = golden
            .prompts
            .iter()
            .map(|p| p.input_ids.len())
            .max()
            .unwrap_or(0);
        let (mut ids, mut mask) = (vec![0i64; batch * seq], vec![0i64; batch * seq]);
        for (b, p) in golden.prompts.iter().enumerate() {
            for (t, id) in p.input_ids.iter().enumerate() {
                ids[b * seq + t] = *id;
                mask[b * seq + t] = 1;
            }
        }
        let ids_t = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), &dev.device);
        let mask_t = Tensor::<2, Int>::from_data(TensorData::new(mask, [batch, seq]), &dev.device);
        model.check_inputs(&ids_t, &mask_t).expect("inputs");
        let logps = host(log_softmax(model.forward(ids_t, mask_t), 2));

        let (mut checked, mut top1) = (0usize, 0usize);
        let mut worst = 0.0f64;
        for (b, p) in golden.prompts.iter().enumerate() {
            let row = |t: usize| &logps[(b * seq + t) * vocab..(b * seq + t + 1) * vocab];
            let got: Vec<f32> = (0..p.next_token_logp.len())
                .map(|t| row(t)[p.input_ids[t + 1] as usize])
                .collect();
            let c = assert_close(
                &got,
                &p.next_token_logp,
                Tolerance::absolute(TOL),
                &format!("[{}] {} next-token logps", dev.name, p.id),
            );
            worst = worst.max(c.max_abs_diff);
            checked += c.checked;
            for (t, (ids5, logps5)) in p.top5_ids.iter().zip(&p.top5_logps).enumerate() {
                let r = row(t);
                assert!(
                    r.iter().all(|v| !v.is_nan()),
                    "[{}] {} t={t}: NaN log-prob",
                    dev.name,
                    p.id
                );
                let argmax = r
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |acc, (i, v)| {
                        if *v > acc.1 { (i, *v) } else { acc }
                    })
                    .0;
                assert_eq!(argmax as i64, ids5[0], "{} t={t}: top-1 id", p.id);
                let got5: Vec<f32> = ids5.iter().map(|id| r[*id as usize]).collect();
                let c = assert_close(
                    &got5,
                    logps5,
                    Tolerance::absolute(TOL),
                    &format!("[{}] {} t={t}: top-5 logps", dev.name, p.id),
                );
                worst = worst.max(c.max_abs_diff);
                top1 += 1;
            }
        }
        println!(
            "[{}] SmolLM2-135M: {} prompts, {checked} next-token logps and {top1} top-1/top-5 \
             positions, max |diff| {worst:.2e}, {:.1} s",
            dev.name,
            batch,
            started.elapsed().as_secs_f64()
        );
    }
}
