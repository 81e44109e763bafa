//! What TRL 1.x's `entropy` and `mean_token_accuracy` cost per head chunk, next to what the
//! chunk costs anyway: SmolLM2's vocabulary (49152), a chunk of 256 completion positions, f32,
//! flex. One iteration reads its result back, so nothing stays lazily unfinished.
//!
//! - `token_logps`: the log-probs of the chunk (what every step computes);
//! - `token_stats`: `token_entropy` + `label_is_top1` of the same chunk (what the metrics add).
//!
//! `cargo bench -p sdpo-core --bench token_stats` (docs/benchmarks.md has the figures).

use burn::tensor::{Device, Int, Tensor, TensorData};
use divan::Bencher;
use sdpo_core::{label_is_top1, token_entropy, token_logps};

fn main() {
    divan::main();
}

const VOCAB: usize = 49152;
const POSITIONS: usize = 256;

/// Logits of a trained-model scale (a few units) without a random-number crate.
fn chunk(device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32
    };
    let logits: Vec<f32> = (0..POSITIONS * VOCAB).map(|_| next() * 8.0 - 4.0).collect();
    let labels: Vec<i64> = (0..POSITIONS).map(|i| (i * 7919 % VOCAB) as i64).collect();
    (
        Tensor::from_data(TensorData::new(logits, [POSITIONS, VOCAB]), device),
        Tensor::from_data(TensorData::new(labels, [POSITIONS]), device),
    )
}

#[divan::bench]
fn token_logps_of_a_chunk(bencher: Bencher) {
    let device = Device::flex();
    let (logits, labels) = chunk(&device);
    bencher.bench_local(|| {
        let logps = token_logps(
            logits.clone().reshape([1, POSITIONS, VOCAB]),
            labels.clone().reshape([1, POSITIONS]),
        )
        .expect("shapes");
        logps.into_data()
    });
}

#[divan::bench]
fn token_stats_of_a_chunk(bencher: Bencher) {
    let device = Device::flex();
    let (logits, labels) = chunk(&device);
    bencher.bench_local(|| {
        let entropy: Tensor<1> = token_entropy(logits.clone()).expect("rank 2");
        let top1: Tensor<1> = label_is_top1(logits.clone(), labels.clone()).expect("rank 2");
        (entropy.into_data(), top1.into_data())
    });
}
