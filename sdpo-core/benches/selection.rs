//! Speed of SDPO token selection (`mask_unimportant_tokens`) on flex, f32.
//!
//! One iteration is what a training step pays: scores, per-sequence thresholds, kept masks and
//! the four kept-token sums for a `[batch, seq]` preference batch, *including* reading the kept
//! masks and the sums back to the host, so a lazy backend cannot hide unfinished work.
//!
//! Inputs look like a real batch: log-probs uniform in (-10, 0) on the completion tokens and 0
//! elsewhere; each sequence's completion is one contiguous run of 50-100 % of `seq`, after a
//! random prompt offset. The row-loop baseline in `bench/sdpo_row_loop.py` uses the same shapes;
//! `docs/benchmarks.md` compares the two.
//!
//! `cargo bench -p sdpo-core --bench selection`

use std::fmt;

use burn::tensor::{Bool, Device, Tensor, TensorData};
use divan::Bencher;
use sdpo_core::{TokenLogps, mask_unimportant_tokens};

fn main() {
    divan::main();
}

/// `sdpo_threshold` default.
const Q: f64 = 0.6;

/// A `[batch, seq]` shape, printed as divan's argument label.
#[derive(Clone, Copy)]
struct Shape {
    batch: usize,
    seq: usize,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B={} T={}", self.batch, self.seq)
    }
}

const SHAPES: [Shape; 4] = [
    Shape { batch: 8, seq: 512 },
    Shape {
        batch: 8,
        seq: 2048,
    },
    Shape {
        batch: 32,
        seq: 512,
    },
    Shape {
        batch: 32,
        seq: 2048,
    },
];

/// SplitMix64: deterministic inputs without a dependency on a random-number crate.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// One side's completion masks: a contiguous run of 50-100 % of `seq` per row.
fn completion_mask(rng: &mut SplitMix64, shape: Shape) -> Vec<bool> {
    let mut mask = vec![false; shape.batch * shape.seq];
    for row in mask.chunks_mut(shape.seq) {
        let len = rng.range(shape.seq / 2, shape.seq);
        let offset = rng.range(0, shape.seq - len);
        row[offset..offset + len].fill(true);
    }
    mask
}

/// Log-probs in (-10, 0) where `mask` is true, 0 elsewhere (as the shift helper leaves them).
fn logps(rng: &mut SplitMix64, mask: &[bool]) -> Vec<f32> {
    mask.iter()
        .map(|&valid| {
            if valid {
                (-10.0 * rng.unit()) as f32
            } else {
                0.0
            }
        })
        .collect()
}

fn inputs(shape: Shape, device: &Device) -> TokenLogps {
    let mut rng = SplitMix64(0x5D90 ^ (shape.batch * 100_000 + shape.seq) as u64);
    let dims = [shape.batch, shape.seq];
    let float = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, dims), device);
    let boolean = |v: Vec<bool>| Tensor::<2, Bool>::from_data(TensorData::new(v, dims), device);
    let chosen_mask = completion_mask(&mut rng, shape);
    let rejected_mask = completion_mask(&mut rng, shape);
    TokenLogps {
        policy_chosen_logps: float(logps(&mut rng, &chosen_mask)),
        policy_rejected_logps: float(logps(&mut rng, &rejected_mask)),
        ref_chosen_logps: float(logps(&mut rng, &chosen_mask)),
        ref_rejected_logps: float(logps(&mut rng, &rejected_mask)),
        chosen_loss_mask: boolean(chosen_mask),
        rejected_loss_mask: boolean(rejected_mask),
        policy_chosen_log_sum_sq_probs: None,
        policy_rejected_log_sum_sq_probs: None,
    }
}

/// Selection plus the read back of both kept masks and the four sums.
#[divan::bench(args = SHAPES, sample_count = 30)]
fn mask_unimportant_tokens_flex(bencher: Bencher, shape: Shape) {
    let device = Device::flex();
    let batch = inputs(shape, &device);
    bencher.bench_local(|| {
        let selection = mask_unimportant_tokens(&batch, Q).expect("valid shapes and q");
        let sums = selection.sums;
        (
            selection.chosen_kept.into_data(),
            selection.rejected_kept.into_data(),
            sums.policy_chosen.into_data(),
            sums.policy_rejected.into_data(),
            sums.ref_chosen.into_data(),
            sums.ref_rejected.into_data(),
        )
    });
}

/// Where the time goes: one side's `masked_quantile` (mask, sort, gather, interpolate).
#[divan::bench(args = SHAPES, sample_count = 30)]
fn masked_quantile_flex(bencher: Bencher, shape: Shape) {
    let device = Device::flex();
    let batch = inputs(shape, &device);
    let scores = batch.ref_chosen_logps.clone() - batch.policy_chosen_logps.clone();
    bencher.bench_local(|| {
        sdpo_core::masked_quantile(scores.clone(), batch.chosen_loss_mask.clone(), Q)
            .expect("valid shapes and q")
            .into_data()
    });
}

/// Where the time goes: the row-wise sort inside `masked_quantile`, alone.
#[divan::bench(args = SHAPES, sample_count = 30)]
fn sort_rows_flex(bencher: Bencher, shape: Shape) {
    let device = Device::flex();
    let batch = inputs(shape, &device);
    bencher.bench_local(|| batch.policy_chosen_logps.clone().sort(1).into_data());
}
