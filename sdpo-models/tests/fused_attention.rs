//! The fused attention (the host kernel on flex; PyTorch's flash-attention kernels on
//! LibTorch's CPU device) runs exactly where it computes what the blocked attention computes,
//! and there its output and its backward match the blocked attention and autodiff through it,
//! on every tiny checkpoint (grouped key/value heads, sliding windows and soft-capping
//! included), with right padding, padding inside and before the real tokens, and packed rows;
//! on flex the kernel also runs tracked (an autodiff operation) with the same bits.

mod common;

use burn::prelude::*;
use common::{host, model_dir, tiny_model_names};
use sdpo_models::{AttentionInputs, CausalLm, MatmulPrecision, PackedRows, StackContext};
use sdpo_testkit::{Tolerance, assert_close};

const ROWS: usize = 2;
const SEQ: usize = 23;

/// The rows of one comparison: their attention mask and, for packed rows, branches and
/// positions.
struct Rows {
    name: &'static str,
    mask: Vec<i64>,
    packed: Option<(Vec<i64>, Vec<i64>)>,
}

impl Rows {
    /// Right padding: the second row has 15 real tokens.
    fn right_padded() -> Self {
        Self {
            name: "right-padded",
            mask: (0..ROWS * SEQ)
                .map(|i| i64::from(row_of(i) == 0 || i % SEQ < 15))
                .collect(),
            packed: None,
        }
    }

    /// Padding inside the first row and before the real tokens of the second (left padding).
    fn holes() -> Self {
        let mut mask = vec![1i64; ROWS * SEQ];
        mask[3] = 0;
        mask[4] = 0;
        for t in 0..5 {
            mask[SEQ + t] = 0;
        }
        Self {
            name: "padding inside and before",
            mask,
            packed: None,
        }
    }

    /// A shared prefix of 8 tokens, then two branches; the second row's second branch is
    /// shorter, padded at the end.
    fn packed() -> Self {
        let (mut branches, mut positions) = (Vec::new(), Vec::new());
        for _ in 0..ROWS {
            for t in 0..SEQ {
                let (branch, position) = match t {
                    0..8 => (0, t),
                    8..15 => (1, t),
                    _ => (2, t - 7),
                };
                branches.push(branch as i64);
                positions.push(position as i64);
            }
        }
        Self {
            name: "packed",
            mask: (0..ROWS * SEQ)
                .map(|i| i64::from(row_of(i) == 0 || i % SEQ < 20))
                .collect(),
            packed: Some((branches, positions)),
        }
    }

    fn all() -> Vec<Self> {
        vec![Self::right_padded(), Self::holes(), Self::packed()]
    }

    fn context(&self, model: &CausalLm, device: &Device) -> StackContext {
        let mask = ints(&self.mask, device);
        match &self.packed {
            None => model.stack_context(mask, 8),
            Some((branches, positions)) => model.packed_stack_context(
                mask,
                PackedRows {
                    position_ids: ints(positions, device),
                    branches: ints(branches, device),
                },
                8,
            ),
        }
    }
}

fn row_of(i: usize) -> usize {
    i / SEQ
}

fn ints(values: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [ROWS, SEQ]), device)
}

fn ids(device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..ROWS * SEQ)
        .map(|i| (i as i64 * 7 + 3) % 60 + 1)
        .collect();
    ints(&ids, device)
}

/// Where each backend's fused kernel runs: flex everywhere, LibTorch's CPU device for plain
/// right-padded rows only.
fn runs_fused(device_name: &str, rows: &Rows) -> bool {
    match device_name {
        "flex" => true,
        "tch" => rows.name == "right-padded",
        _ => false,
    }
}

/// Whether the backend's kernel runs layer `layer` of `model` in `precision`: flex in float32
/// on every layer; LibTorch on full-attention layers without soft-capping, in any precision.
fn runs_layer(
    device_name: &str,
    model: &CausalLm,
    layer: usize,
    precision: MatmulPrecision,
) -> bool {
    let c = model.config();
    match device_name {
        "flex" => precision == MatmulPrecision::F32,
        "tch" => c.layer_attention(layer).window.is_none() && c.attn_logit_softcap.is_none(),
        _ => false,
    }
}

#[test]
fn fused_attention_runs_only_where_it_is_exact() {
    for dev in sdpo_testkit::test_devices!() {
        let model = CausalLm::from_pretrained(model_dir("llama"), &dev.device).expect("load");
        let kernels = match dev.name {
            "flex" => "flex-fused/1",
            "tch" => "libtorch-fused/1",
            _ => "blocked",
        };
        assert_eq!(
            sdpo_models::kernel_set(&dev.device),
            kernels,
            "[{}]",
            dev.name
        );
        assert_eq!(
            sdpo_models::kernel_set(&dev.device.clone().autodiff()),
            kernels,
            "[{}] autodiff",
            dev.name
        );
        for rows in Rows::all() {
            let ctx = rows.context(&model, &dev.device);
            assert_eq!(
                ctx.fused_attention(),
                runs_fused(dev.name, &rows),
                "[{}] {}",
                dev.name,
                rows.name
            );
            assert!(
                !ctx.with_fused_attention(false).fused_attention(),
                "[{}] {} turned off",
                dev.name,
                rows.name
            );
        }
        // Nothing above reads a float tensor back: dropping `dev` waits for the device's
        // queued work (sdpo-testkit's `TestDevice`), which lavapipe needs before the process
        // exits.
    }
}

/// Layer `layer`'s attention inputs of `model` on `rows` (the layers before it run too).
fn attention_inputs(
    model: &CausalLm,
    layer: usize,
    ctx: &StackContext,
    device: &Device,
) -> AttentionInputs {
    let mut x = model.embed(ids(device), ctx);
    for earlier in 0..layer {
        x = model.layer_forward(earlier, x, ctx);
    }
    model.layer_attention_inputs(layer, x, ctx)
}

/// A fixed gradient for the merged attention output, zero at padded query positions (no loss
/// reads them).
fn output_gradient(mask: &[i64], width: usize, device: &Device) -> Tensor<3> {
    let mut values = Vec::with_capacity(ROWS * SEQ * width);
    for (i, &real) in mask.iter().enumerate() {
        for j in 0..width {
            let v = ((row_of(i) * 131 + (i % SEQ) * 17 + j * 5) % 23) as f32 / 23.0 - 0.5;
            values.push(if real == 1 { v } else { 0.0 });
        }
    }
    Tensor::from_data(TensorData::new(values, [ROWS, SEQ, width]), device)
}

/// Host values at the real query positions of `[rows, T, width]`.
fn real_positions(t: Tensor<3>, mask: &[i64]) -> Vec<f32> {
    let [_, _, width] = t.dims();
    let all = host(t);
    mask.iter()
        .enumerate()
        .filter(|(_, real)| **real == 1)
        .flat_map(|(i, _)| all[i * width..(i + 1) * width].to_vec())
        .collect()
}

#[test]
fn fused_attention_and_its_backward_match_the_blocked_attention() {
    for dev in sdpo_testkit::test_devices!() {
        if !Rows::all().iter().any(|rows| runs_fused(dev.name, rows)) {
            // Checked by `fused_attention_runs_only_where_it_is_exact`: no fused path here.
            println!("[{}] no fused kernel: compared on flex and tch", dev.name);
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
                for rows in Rows::all().into_iter().filter(|r| runs_fused(dev.name, r)) {
                    let ctx = rows.context(&model, &dev.device);
                    for layer in 0..model.num_layers() {
                        let inputs = attention_inputs(&model, layer, &ctx, &dev.device);
                        let (fused, state) =
                            model.attention_with_state(layer, inputs.clone(), &ctx);
                        let what = format!(
                            "[{}] {name} {} {} layer {layer}",
                            dev.name,
                            precision.name(),
                            rows.name
                        );
                        if !runs_layer(dev.name, &model, layer, precision) {
                            assert!(state.is_none(), "{what} ran fused");
                            continue;
                        }
                        let state =
                            state.unwrap_or_else(|| panic!("{what}: the fused path did not run"));
                        let blocked_ctx = ctx.clone().with_fused_attention(false);
                        let blocked = model.attention(layer, inputs.clone(), &blocked_ctx);
                        assert_close(
                            &real_positions(fused.clone(), &rows.mask),
                            &real_positions(blocked, &rows.mask),
                            tol,
                            &format!("{what} output"),
                        );

                        // Autodiff through the blocked attention, seeded with the same gradient.
                        let width = fused.dims()[2];
                        let grad = output_gradient(&rows.mask, width, &dev.device);
                        let leaf = |t: &Tensor<4>| {
                            Tensor::<4>::from_data(t.to_data(), &tracked_device).require_grad()
                        };
                        let (q, k, v) = (leaf(&inputs.q), leaf(&inputs.k), leaf(&inputs.v));
                        let tracked_model = model.clone().fork(&tracked_device);
                        let tracked_ctx = rows
                            .context(&tracked_model, &tracked_device)
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
                        let fused_grads = [dq, dk, dv];
                        for (label, got, leaf) in [("dq", &q), ("dk", &k), ("dv", &v)]
                            .into_iter()
                            .zip(&fused_grads)
                            .map(|((label, leaf), got)| (label, got.clone(), leaf))
                        {
                            let want = leaf.grad(&grads).expect("gradient");
                            assert_eq!(got.dims(), want.dims(), "{what} {label} shape");
                            assert_close(&host(got), &host(want), tol, &format!("{what} {label}"));
                        }
                        if dev.name == "flex" {
                            // Tracked, the kernel runs as an autodiff operation: the same bits
                            // as untracked, forward and backward.
                            let fused_ctx = rows.context(&tracked_model, &tracked_device);
                            assert!(fused_ctx.fused_attention_differentiable(), "{what}");
                            let (q, k, v) = (leaf(&inputs.q), leaf(&inputs.k), leaf(&inputs.v));
                            let tracked_inputs = AttentionInputs {
                                q: q.clone(),
                                k: k.clone(),
                                v: v.clone(),
                            };
                            let (out, state) = tracked_model.attention_with_state(
                                layer,
                                tracked_inputs,
                                &fused_ctx,
                            );
                            assert!(state.is_none(), "{what}: tracked run kept a state");
                            assert_eq!(host(out.clone()), host(fused.clone()), "{what} tracked");
                            let seed = Tensor::<3>::from_data(
                                output_gradient(&rows.mask, width, &dev.device).to_data(),
                                &tracked_device,
                            );
                            let grads = (out * seed).sum().backward();
                            for ((label, leaf), want) in [("dq", &q), ("dk", &k), ("dv", &v)]
                                .into_iter()
                                .zip(&fused_grads)
                            {
                                let got = leaf.grad(&grads).expect("gradient");
                                assert_eq!(host(got), host(want.clone()), "{what} tracked {label}");
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 0, "[{}] nothing compared", dev.name);
        println!(
            "[{}] fused attention == blocked (output, dq, dk, dv): {checked} cases",
            dev.name
        );
    }
}
