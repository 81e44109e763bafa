//! The fused attention (PyTorch's flash-attention kernels, LibTorch's CPU device) runs exactly
//! where it computes what the blocked attention computes, and there its output and its
//! backward match the blocked attention and autodiff through it, on the tiny checkpoints
//! (grouped key/value heads included), with padding.

mod common;

use burn::prelude::*;
use common::{host, model_dir, tiny_model_names};
use sdpo_models::{AttentionInputs, CausalLm, MatmulPrecision, PackedRows};
use sdpo_testkit::{Tolerance, assert_close};

const ROWS: usize = 2;
const SEQ: usize = 23;
/// Real tokens of each row (the second right-padded).
const LENGTHS: [usize; ROWS] = [SEQ, 15];

fn ids_and_mask(device: &Device, mask: &[i64]) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let ids: Vec<i64> = (0..ROWS * SEQ)
        .map(|i| (i as i64 * 7 + 3) % 60 + 1)
        .collect();
    (
        Tensor::from_data(TensorData::new(ids, [ROWS, SEQ]), device),
        Tensor::from_data(TensorData::new(mask.to_vec(), [ROWS, SEQ]), device),
    )
}

fn right_padded() -> Vec<i64> {
    LENGTHS
        .iter()
        .flat_map(|&n| (0..SEQ).map(move |i| i64::from(i < n)))
        .collect()
}

/// The backend the fused kernel is built for.
fn has_fused_kernel(device_name: &str) -> bool {
    device_name == "tch"
}

#[test]
fn fused_attention_runs_only_where_it_is_exact() {
    for dev in sdpo_testkit::test_devices!() {
        let model = CausalLm::from_pretrained(model_dir("llama"), &dev.device).expect("load");
        let (_, mask) = ids_and_mask(&dev.device, &right_padded());
        let ctx = model.stack_context(mask.clone(), 8);
        assert_eq!(
            ctx.fused_attention(),
            has_fused_kernel(dev.name),
            "[{}] right-padded plain rows",
            dev.name
        );
        assert!(
            !ctx.clone().with_fused_attention(false).fused_attention(),
            "[{}] turned off",
            dev.name
        );
        // A row with padding before a real token: the causal mask alone would let later
        // queries see the padded key.
        let mut holes = right_padded();
        holes[3] = 0;
        let (_, mask_with_hole) = ids_and_mask(&dev.device, &holes);
        assert!(
            !model.stack_context(mask_with_hole, 8).fused_attention(),
            "[{}] padding inside a row",
            dev.name
        );
        // Packed rows: a branch must not see the other branch.
        let branches: Vec<i64> = (0..ROWS * SEQ).map(|i| i64::from(i % SEQ >= 10)).collect();
        let positions: Vec<i64> = (0..ROWS * SEQ).map(|i| (i % SEQ) as i64).collect();
        let packed = PackedRows {
            position_ids: Tensor::from_data(TensorData::new(positions, [ROWS, SEQ]), &dev.device),
            branches: Tensor::from_data(TensorData::new(branches, [ROWS, SEQ]), &dev.device),
        };
        assert!(
            !model
                .packed_stack_context(mask, packed, 8)
                .fused_attention(),
            "[{}] packed rows",
            dev.name
        );
        println!(
            "[{}] fused attention where exact: {}",
            dev.name,
            has_fused_kernel(dev.name)
        );
        // Nothing above reads a tensor back: dropping `dev` waits for the device's queued
        // work (sdpo-testkit's `TestDevice`), which lavapipe needs before the process exits.
    }
}

/// Layer `layer`'s attention inputs of `model` on the right-padded rows (the layers before it
/// run too).
fn attention_inputs(
    model: &CausalLm,
    layer: usize,
    device: &Device,
) -> (AttentionInputs, Tensor<2, Int>) {
    let (ids, mask) = ids_and_mask(device, &right_padded());
    let ctx = model.stack_context(mask.clone(), 8);
    let mut x = model.embed(ids, &ctx);
    for earlier in 0..layer {
        x = model.layer_forward(earlier, x, &ctx);
    }
    (model.layer_attention_inputs(layer, x, &ctx), mask)
}

/// The first layer the fused kernel can run: full attention without soft-capping.
fn first_plain_layer(model: &CausalLm) -> Option<usize> {
    let c = model.config();
    if c.attn_logit_softcap.is_some() {
        return None;
    }
    (0..model.num_layers()).find(|&l| c.layer_attention(l).window.is_none())
}

/// A fixed gradient for the merged attention output, zero at padded query positions (no loss
/// reads them).
fn output_gradient(width: usize, device: &Device) -> Tensor<3> {
    let mut values = Vec::with_capacity(ROWS * SEQ * width);
    for (row, &len) in LENGTHS.iter().enumerate() {
        for t in 0..SEQ {
            for j in 0..width {
                let v = ((row * 131 + t * 17 + j * 5) % 23) as f32 / 23.0 - 0.5;
                values.push(if t < len { v } else { 0.0 });
            }
        }
    }
    Tensor::from_data(TensorData::new(values, [ROWS, SEQ, width]), device)
}

/// Host values at the real query positions of `[rows, T, width]`.
fn real_positions(t: Tensor<3>) -> Vec<f32> {
    let [_, seq, width] = t.dims();
    let all = host(t);
    let mut out = Vec::new();
    for (row, &len) in LENGTHS.iter().enumerate() {
        out.extend_from_slice(&all[row * seq * width..(row * seq + len) * width]);
    }
    out
}

#[test]
fn fused_attention_and_its_backward_match_the_blocked_attention() {
    for dev in sdpo_testkit::test_devices!() {
        if !has_fused_kernel(dev.name) {
            // Checked by `fused_attention_runs_only_where_it_is_exact`: no fused path here.
            println!("[{}] no fused kernel: compared on tch", dev.name);
            continue;
        }
        let tracked_device = dev.device.clone().autodiff();
        let mut checked = 0;
        for name in &tiny_model_names() {
            for (precision, tol) in [
                (MatmulPrecision::F32, Tolerance::absolute(1e-5)),
                // bfloat16 products in the fused kernel against float32 in blocks.
                (MatmulPrecision::Bf16, Tolerance::relative_to_max(2e-2)),
            ] {
                let model = CausalLm::from_pretrained(model_dir(name), &dev.device)
                    .expect("load")
                    .with_matmul_precision(precision);
                // Sliding-window and soft-capped layers never run fused (the kernel has
                // neither): check that, then compare on the first layer that can.
                for layer in 0..model.num_layers() {
                    if Some(layer) == first_plain_layer(&model) {
                        continue;
                    }
                    let c = model.config();
                    if c.layer_attention(layer).window.is_some() || c.attn_logit_softcap.is_some() {
                        let (inputs, mask) = attention_inputs(&model, layer, &dev.device);
                        let ctx = model.stack_context(mask, 8);
                        let (_, state) = model.attention_with_state(layer, inputs, &ctx);
                        assert!(state.is_none(), "{name} layer {layer} ran fused");
                    }
                }
                let Some(layer) = first_plain_layer(&model) else {
                    continue;
                };
                let (inputs, mask) = attention_inputs(&model, layer, &dev.device);
                let ctx = model.stack_context(mask, 8);
                assert!(ctx.fused_attention(), "{name}");
                let (fused, state) = model.attention_with_state(layer, inputs.clone(), &ctx);
                let state = state.unwrap_or_else(|| panic!("{name}: the fused path did not run"));
                let blocked_ctx = ctx.clone().with_fused_attention(false);
                let blocked = model.attention(layer, inputs.clone(), &blocked_ctx);
                let what = format!("[{}] {name} {}", dev.name, precision.name());
                assert_close(
                    &real_positions(fused.clone()),
                    &real_positions(blocked),
                    tol,
                    &format!("{what} output"),
                );

                // Autodiff through the blocked attention, seeded with the same gradient.
                let width = fused.dims()[2];
                let grad = output_gradient(width, &dev.device);
                let leaf = |t: &Tensor<4>| {
                    Tensor::<4>::from_data(t.to_data(), &tracked_device).require_grad()
                };
                let (q, k, v) = (leaf(&inputs.q), leaf(&inputs.k), leaf(&inputs.v));
                let tracked_model = model.clone().fork(&tracked_device);
                let tracked_ctx = tracked_model
                    .stack_context(
                        Tensor::from_data(
                            TensorData::new(right_padded(), [ROWS, SEQ]),
                            &tracked_device,
                        ),
                        8,
                    )
                    .with_fused_attention(false);
                let out = tracked_model.attention(
                    layer,
                    AttentionInputs {
                        q: q.clone(),
                        k: k.clone(),
                        v: v.clone(),
                    },
                    &tracked_ctx,
                );
                let seed = Tensor::<3>::from_data(grad.to_data(), &tracked_device);
                let grads = (out * seed).sum().backward();
                let (dq, dk, dv) = state
                    .backward(grad)
                    .unwrap_or_else(|| panic!("{what}: the fused backward did not run"));
                for (label, got, leaf) in [("dq", dq, &q), ("dk", dk, &k), ("dv", dv, &v)] {
                    let want = leaf.grad(&grads).expect("gradient");
                    assert_eq!(got.dims(), want.dims(), "{what} {label} shape");
                    assert_close(&host(got), &host(want), tol, &format!("{what} {label}"));
                }
                checked += 1;
            }
        }
        println!(
            "[{}] fused attention == blocked (output, dq, dk, dv): {checked} cases",
            dev.name
        );
    }
}
