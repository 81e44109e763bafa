//! Attention's one home: eager scaled dot-product attention with grouped key/value heads and
//! optional soft-capping, as transformers' `eager` implementation computes it (this file); the
//! masks, causal, padding, packed branches and sliding windows ([`mask`]); the fused kernels
//! (flex's host kernel, PyTorch's on LibTorch's CPU device: [`fused`]); the backward of the fused or query-blocked
//! attention ([`crate::CausalLm::attention_backward`]). The query-blocked forward that composes
//! them is [`crate::CausalLm::attention`].

use burn::prelude::*;

mod backward;
pub(crate) mod fused;
pub(crate) mod mask;

use mask::MASKED;

/// Repeats each key/value head `groups` times: kv head `j` serves query heads
/// `j * groups .. (j + 1) * groups` (transformers' `repeat_kv`).
///
/// # Shapes
/// - `x`: `[batch, kv_heads, seq, head_dim]`
/// - output: `[batch, kv_heads * groups, seq, head_dim]`
pub fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [batch, kv_heads, seq, head_dim] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, groups, seq, head_dim])
        .reshape([batch, kv_heads * groups, seq, head_dim])
}

/// `softmax((q · scale)·kᵀ, masked) · v`, then heads merged back into the model width.
///
/// The scale is applied to the queries (a `head_dim`-wide tensor) rather than to the
/// `[seq, keys]` scores: the same bits when the scale is a power of two (`head_dim` 64 or 256),
/// one rounding apart otherwise. Blocked scores are set to [`MASKED`], which `exp` turns into
/// exactly 0 next to any real score, as transformers' additive mask does.
///
/// The queries may be a block of the sequence and the keys a prefix of it (the forward in
/// pieces, [`crate::StackContext`]).
///
/// # Shapes
/// - `q`: `[batch, heads, seq, head_dim]`
/// - `k`, `v`: `[batch, kv_heads, keys, head_dim]` with `heads = kv_heads * groups`
/// - `blocked`: `[batch, 1, seq, keys]`, true where a query may not see a key (see
///   [`mask::attention_blocked`])
/// - output: `[batch, seq, heads * head_dim]`
pub fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    blocked: Tensor<4, Bool>,
    scale: f64,
    groups: usize,
    softcap: Option<f64>,
) -> Tensor<3> {
    let [batch, heads, seq, head_dim] = q.dims();
    let k = repeat_kv(k, groups);
    let v = repeat_kv(v, groups);
    let keys = k.dims()[2];
    let scores = (q * scale).matmul(k.swap_dims(2, 3));
    // Gemma 2: `cap · tanh(scores / cap)`, before the mask.
    let scores = match softcap {
        Some(cap) => (scores / cap).tanh() * cap,
        None => scores,
    };
    let scores = scores.mask_fill(blocked.expand([batch, heads, seq, keys]), MASKED);
    let weights = softmax_same_on_every_path(scores);
    weights
        .matmul(v)
        .swap_dims(1, 2)
        .reshape([batch, seq, heads * head_dim])
}

/// Splits `[batch, seq, heads * head_dim]` into `[batch, heads, seq, head_dim]`.
pub fn split_heads(x: Tensor<3>, heads: usize, head_dim: usize) -> Tensor<4> {
    let [batch, seq, _] = x.dims();
    x.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2)
}

/// Softmax over the last dimension from primitive operations.
///
/// burn's `softmax` is a fused kernel on some backends (flex) when no gradient is tracked, but a
/// composition of primitives under autodiff; the two differ by an ulp or so. The policy runs
/// tracked and the frozen reference untracked, so with the reference equal to the initial
/// policy the SDPO scores `ref - policy` would be that noise instead of exactly 0, and token
/// selection at the first step would follow it. Written out, both paths compute the same bits.
/// The max needs no gradient: softmax does not change when every input is shifted by a constant.
pub(crate) fn softmax_same_on_every_path(scores: Tensor<4>) -> Tensor<4> {
    let max = scores.clone().detach().max_dim(3);
    let exp = (scores - max).exp();
    exp.clone() / exp.sum_dim(3)
}
