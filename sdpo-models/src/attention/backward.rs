//! The attention's backward: the fused kernel's where the forward ran fused, else autodiff
//! one query block at a time, each block recomputed from the (untracked) queries, keys and
//! values and its backward seeded with its slice of the output gradient.

use burn::prelude::*;

use super::fused::FusedAttention;
use crate::CausalLm;
use crate::grad::{Tracking, grad_or_zeros, leaf, leaf_constant};
use crate::stack::{AttentionInputs, StackContext};

impl CausalLm {
    /// The gradients of layer `layer`'s queries, keys and values from `g_attention`, the
    /// gradient of its merged attention output. `inputs` are the untracked inputs the forward
    /// ([`CausalLm::attention_with_state`]) saw and `fused` what it returned; `self` is the
    /// tracked model (its `tracking` strategy marks the recomputed blocks).
    ///
    /// # Shapes
    /// - `inputs`: see [`AttentionInputs`]; `g_attention`: `[rows, T, heads * head_dim]`
    /// - output: `dq` `[rows, heads, T, head_dim]`, `dk`, `dv` `[rows, kv_heads, T, head_dim]`
    pub fn attention_backward(
        &self,
        layer: usize,
        inputs: &AttentionInputs,
        fused: Option<FusedAttention>,
        g_attention: Tensor<3>,
        ctx: &StackContext,
        tracking: Tracking,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        if let Some(grads) = fused.and_then(|state| state.backward(g_attention.clone())) {
            return grads;
        }
        let AttentionInputs { q, k, v } = inputs;
        let [rows, heads, seq, head_dim] = q.dims();
        let [_, kv_heads, _, _] = k.dims();
        let width = heads * head_dim;
        let mut dq_parts = Vec::new();
        let mut dk = Tensor::<4>::zeros(k.shape(), (&k.device(), k.dtype()));
        let mut dv = Tensor::<4>::zeros(v.shape(), (&v.device(), v.dtype()));
        for (s, e) in ctx.query_blocks() {
            let keys = self.attention_block_keys(layer, ctx, s, e);
            let whole = keys.start == 0 && e == seq;
            let range = [0..rows, 0..kv_heads, keys, 0..head_dim];
            let qb = leaf(
                q.clone().slice([0..rows, 0..heads, s..e, 0..head_dim]),
                tracking,
            );
            let kb = leaf(k.clone().slice(range.clone()), tracking);
            let vb = leaf(v.clone().slice(range.clone()), tracking);
            let ob = self.attention_block(layer, qb.clone(), kb.clone(), vb.clone(), ctx, s);
            let gb = g_attention.clone().slice([0..rows, s..e, 0..width]);
            let grads = (ob * leaf_constant(gb, tracking)).sum().backward();
            dq_parts.push(grad_or_zeros(&qb, &grads));
            let dkb = grad_or_zeros(&kb, &grads);
            let dvb = grad_or_zeros(&vb, &grads);
            dk = if whole {
                dk + dkb
            } else {
                let sum = dk.clone().slice(range.clone()) + dkb;
                dk.slice_assign(range.clone(), sum)
            };
            dv = if whole {
                dv + dvb
            } else {
                let sum = dv.clone().slice(range.clone()) + dvb;
                dv.slice_assign(range, sum)
            };
        }
        let dq = match dq_parts.len() {
            1 => dq_parts.swap_remove(0),
            _ => Tensor::cat(dq_parts, 2),
        };
        (dq, dk, dv)
    }
}
