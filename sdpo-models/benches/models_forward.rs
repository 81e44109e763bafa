//! Forward and forward+backward throughput of SmolLM2-135M on flex (not a test).
//!
//! `SDPO_SMOLLM2_DIR=DIR cargo bench -p sdpo-models --features flex,rayon,simd --bench
//! models_forward -- forward|backward [iterations]`. One mode per process, so that
//! `/usr/bin/time -v` reports each mode's peak memory; `bench/models_forward_bench.sh` runs
//! both modes next to PyTorch.

use std::time::Instant;

use burn::prelude::*;
use sdpo_models::CausalLm;

const BATCH: usize = 4;
const SEQ: usize = 256;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("forward");
    let iterations: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(3);
    let Some(dir) = std::env::var_os("SDPO_SMOLLM2_DIR") else {
        eprintln!("set SDPO_SMOLLM2_DIR (tools/get-smollm2.sh DIR)");
        std::process::exit(2);
    };
    let plain = Device::flex();
    let device = match mode {
        "forward" => plain,
        "backward" => plain.autodiff(),
        other => {
            eprintln!("mode must be forward or backward, not {other}");
            std::process::exit(2);
        }
    };
    let model = match CausalLm::from_pretrained(&dir, &device) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let vocab = model.config().vocab_size as i64;
    // Deterministic ids spread over the vocabulary (the same formula as the Python side).
    let ids: Vec<i64> = (0..(BATCH * SEQ) as i64)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let run = || {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [BATCH, SEQ]), &device);
        let mask = Tensor::<2, Int>::ones([BATCH, SEQ], &device);
        let logits = model.forward(ids, mask);
        if mode == "backward" {
            let grads = logits.mean().backward();
            std::hint::black_box(&grads);
        } else {
            std::hint::black_box(logits.mean().into_scalar::<f32>());
        }
    };
    run(); // warm-up
    let mut times = Vec::new();
    for _ in 0..iterations {
        let start = Instant::now();
        run();
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "burn-flex {mode}: batch {BATCH}x{SEQ}, median {median:.2} s over {iterations} runs \
         (min {:.2}, max {:.2}), {:.0} tokens/s",
        times[0],
        times[times.len() - 1],
        (BATCH * SEQ) as f64 / median
    );
}
