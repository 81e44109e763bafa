//! The forward pass composed from its pieces (`embed`, `layer_forward` with attention in query
//! blocks, `final_norm`, `lm_head`) gives the logits of `CausalLm::forward` on the four tiny
//! checkpoints, with padding, for every query block size from 1 to T; and the pieces compute
//! the same bits tracked and untracked.

mod common;

use burn::module::Module;
use burn::prelude::*;
use common::{host, max_abs_diff_masked, model_dir, tiny_model_names};
use sdpo_models::CausalLm;

/// Two right-padded rows of 9 tokens (the second with 4 padding positions).
fn batch(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>, Vec<i64>) {
    let ids = vec![1i64, 5, 7, 9, 11, 13, 2, 17, 19, 3, 4, 8, 6, 10, 0, 0, 0, 0];
    let mask = vec![1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0];
    (
        Tensor::from_data(TensorData::new(ids, [2, 9]), device),
        Tensor::from_data(TensorData::new(mask.clone(), [2, 9]), device),
        mask,
    )
}

fn pieces_logits(
    model: &CausalLm,
    ids: Tensor<2, Int>,
    mask: Tensor<2, Int>,
    block: usize,
    fused: bool,
) -> Tensor<3> {
    let ctx = model.stack_context(mask, block).with_fused_attention(fused);
    let mut x = model.embed(ids, &ctx);
    for layer in 0..model.num_layers() {
        x = model.layer_forward(layer, x, &ctx);
    }
    model.lm_head(model.final_norm(x))
}

#[test]
fn pieces_compose_to_the_forward_pass_for_every_query_block() {
    let mut checked = 0;
    for dev in sdpo_testkit::test_devices!() {
        for name in &tiny_model_names() {
            let model = CausalLm::from_pretrained(model_dir(name), &dev.device).expect("load");
            let vocab = model.config().vocab_size;
            let (ids, mask, mask_host) = batch(&dev.device);
            let want = host(model.forward(ids.clone(), mask.clone()));
            // The fused attention (LibTorch's CPU device) and the blocked one.
            for (block, fused) in [1, 2, 4, 5, 9, usize::MAX]
                .into_iter()
                .flat_map(|b| [(b, false), (b, true)])
            {
                let got = host(pieces_logits(
                    &model,
                    ids.clone(),
                    mask.clone(),
                    block,
                    fused,
                ));
                // Blocked: every position, padding included (a padded query attends to the
                // earlier real tokens in both, and no row starts with padding). Fused: the real
                // positions (a padded query also sees the padded keys before it there; nothing
                // reads its output). Sliding windows: the real positions too (a padded query
                // whose window holds only padding sees no key at all; its uniform softmax
                // spans the keys its block scores, and nothing reads it).
                let sliding = model.config().layers.iter().any(|l| l.window.is_some());
                let rows = if fused || sliding {
                    mask_host.clone()
                } else {
                    vec![1; mask_host.len()]
                };
                let d = max_abs_diff_masked(&got, &want, &rows, vocab);
                // float32 rounding grows with the logits' size (Gemma's scaled embeddings give
                // logits far from 1): 2e-5 relative to the largest logit, at least 2e-5.
                // Finite logits only: a NaN or infinity makes `d` infinite, and the bound stays
                // finite so that the comparison fails.
                let scale = want
                    .iter()
                    .filter(|v| v.is_finite())
                    .fold(1.0f32, |m, v| m.max(v.abs())); // nan-checked: non-finite filtered
                assert!(
                    d <= 2e-5 * scale,
                    "[{}] {name} block {block} fused {fused}: logits differ by {d} (largest logit {scale})",
                    dev.name
                );
                checked += 1;
            }
        }
        println!(
            "[{}] pieces == forward: {checked} (model, block, fused) cases",
            dev.name
        );
    }
}

#[test]
fn pieces_give_the_same_bits_tracked_and_untracked() {
    for dev in sdpo_testkit::test_devices!() {
        let tracked_device = dev.device.clone().autodiff();
        for name in &tiny_model_names() {
            let plain = CausalLm::from_pretrained(model_dir(name), &dev.device).expect("load");
            let policy = plain.clone().fork(&tracked_device).train();
            let (ids, mask, _) = batch(&dev.device);
            // The fused attention runs only untracked, so it is off on both sides here (where
            // it runs, the policy's pass 1 and the reference both run it untracked).
            let untracked = host(pieces_logits(&plain, ids.clone(), mask.clone(), 4, false));
            let tracked = host(pieces_logits(&policy, ids, mask, 4, false).without_autodiff());
            // NaN counts as +inf here, so it cannot pass as 0.
            let worst = common::max_abs_diff(&untracked, &tracked);
            assert_eq!(
                worst, 0.0,
                "[{}] {name}: tracked vs untracked differ by {worst:e}",
                dev.name
            );
        }
        println!(
            "[{}] tracked == untracked pieces for {} models",
            dev.name,
            tiny_model_names().len()
        );
    }
}

/// Pairs of (prefix, first branch, second branch) token ids of different lengths.
const PACKED_PAIRS: [(&[i64], &[i64], &[i64]); 3] = [
    (&[1, 5, 7], &[9, 11, 13], &[2, 17]),
    (&[3, 4], &[8], &[6, 10, 12, 14]),
    (&[15, 16, 18, 20, 21], &[22, 23], &[24]),
];

fn ints(values: Vec<i64>, shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// `rows` right padded with id 0 to their longest: `(ids, mask, length)`.
fn pad(rows: &[Vec<i64>]) -> (Vec<i64>, Vec<i64>, usize) {
    let len = rows.iter().map(Vec::len).max().unwrap_or(0);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for row in rows {
        ids.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(0, len - row.len())),
        );
        mask.extend((0..len).map(|i| i64::from(i < row.len())));
    }
    (ids, mask, len)
}

#[test]
fn packed_rows_compute_what_separate_rows_compute() {
    let mut checked = 0;
    for dev in sdpo_testkit::test_devices!() {
        for name in &tiny_model_names() {
            let model = CausalLm::from_pretrained(model_dir(name), &dev.device).expect("load");
            let vocab = model.config().vocab_size;
            // The plain rows: prefix + branch, two per pair.
            let plain: Vec<Vec<i64>> = PACKED_PAIRS
                .iter()
                .flat_map(|(p, a, b)| [[*p, *a].concat(), [*p, *b].concat()])
                .collect();
            let (ids, mask, t) = pad(&plain);
            let want = host(model.forward(
                ints(ids, [plain.len(), t], &dev.device),
                ints(mask, [plain.len(), t], &dev.device),
            ));
            // The packed rows: prefix, first branch, second branch.
            let packed: Vec<Vec<i64>> = PACKED_PAIRS
                .iter()
                .map(|(p, a, b)| [*p, *a, *b].concat())
                .collect();
            let (ids, mask, len) = pad(&packed);
            let (mut positions, mut branches) = (Vec::new(), Vec::new());
            for (p, a, b) in PACKED_PAIRS {
                let (np, na, nb) = (p.len() as i64, a.len() as i64, b.len() as i64);
                positions.extend((0..np).chain(np..np + na).chain(np..np + nb));
                branches.extend(
                    std::iter::repeat_n(0, p.len())
                        .chain(std::iter::repeat_n(1, a.len()))
                        .chain(std::iter::repeat_n(2, b.len())),
                );
                let pad = len - (p.len() + a.len() + b.len());
                positions.extend(std::iter::repeat_n(0, pad));
                branches.extend(std::iter::repeat_n(0, pad));
            }
            let rows = packed.len();
            for block in [1, 3, usize::MAX] {
                let ctx = model.packed_stack_context(
                    ints(mask.clone(), [rows, len], &dev.device),
                    sdpo_models::PackedRows {
                        position_ids: ints(positions.clone(), [rows, len], &dev.device),
                        branches: ints(branches.clone(), [rows, len], &dev.device),
                    },
                    block,
                );
                let mut x = model.embed(ints(ids.clone(), [rows, len], &dev.device), &ctx);
                for layer in 0..model.num_layers() {
                    x = model.layer_forward(layer, x, &ctx);
                }
                let got = host(model.lm_head(model.final_norm(x)));
                for (i, (p, a, _)) in PACKED_PAIRS.iter().enumerate() {
                    for (branch, plain_row) in [(0, 2 * i), (1, 2 * i + 1)] {
                        for k in 0..plain[plain_row].len() {
                            let packed_index = if k < p.len() || branch == 0 {
                                k
                            } else {
                                k + a.len()
                            };
                            let g = &got[(i * len + packed_index) * vocab..][..vocab];
                            let w = &want[(plain_row * t + k) * vocab..][..vocab];
                            let d = common::max_abs_diff(g, w);
                            assert!(
                                d <= 2e-5,
                                "[{}] {name} block {block}: pair {i} branch {branch} position \
                                 {k}: logits differ by {d}",
                                dev.name
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        println!(
            "[{}] packed == separate rows: {checked} positions",
            dev.name
        );
    }
}
