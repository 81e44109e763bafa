//! Memory-bounded log-probs and gradients for long sequences: per-layer recomputation,
//! attention in query blocks and chunked LM-head log-probs.
//!
//! Autodiff through [`CausalLm::forward`] keeps every decoder layer's activations, including
//! the `[rows, heads, T, T]` attention scores and probabilities (burn 0.22's attention under
//! autodiff is the naive one), plus the `[rows, T, vocab]` logits, until the backward pass:
//! 23.5 GB for SmolLM2-135M at 2 pairs of 1024 tokens. [`policy_step`] computes the same
//! log-probs and exactly the same gradients in five passes, and holds at any time the saved
//! layer inputs (`layers x [rows, T, hidden]`) plus one layer's recomputation, one attention
//! block or one head chunk:
//!
//! 1. **Forward without tracking** (on `policy.valid()`), keeping each layer's input; the final
//!    norm; then the output head in chunks of the positions whose next token is a completion
//!    token (the only log-probs a preference loss reads): `log p(token)` per position, the
//!    per-position logit sums (TRL's `logits/chosen|rejected`) and an optional per-position
//!    extra computed from the logits chunk (e.g. WPO's weights). At most one chunk's
//!    `[chunk, vocab]` logits exist at a time.
//! 2. **The loss** on those log-probs as autodiff leaves, by the caller's closure; its backward
//!    gives `dL/dlogp`.
//! 3. **Head**: per chunk, the logits recomputed from the saved final-norm output and the head's
//!    backward for the seed `dL/dlogp · (onehot(label) - softmax)`, with plain products
//!    ([`CausalLm::lm_head_backward`]: nothing kept for autodiff): the head's weight gradient
//!    and `dL/dh`; then the final norm recomputed from the last layer's output: its gradient
//!    and the gradient of the last layer's output.
//! 4. **Layers, top down**: layer `i` recomputed from its saved input in three tracked pieces
//!    (q/k/v; the attention, one query block at a time, or where it ran fused (flex, LibTorch's
//!    CPU device) the fused kernel's backward, [`sdpo_models::FusedAttention`]; output
//!    projection and MLP), each piece's
//!    backward seeded with the gradient of its output (the surrogate `sum(out * g)`), giving the
//!    layer's parameter gradients and the gradient of its input.
//! 5. **Embedding**: backward of `sum(x0 * g0)`.
//!
//! Every backward's parameter gradients are summed into one [`GradientsParams`] for the whole
//! policy; a parameter used twice (tied embeddings: the embedding and the output head) gets the
//! sum of both contributions, as autodiff would give it.
//!
//! Memory ([`MemoryBudget`]): the head chunk and the attention query block are sized so that
//! the tensors of one chunk or block, with what autodiff keeps of them, fit in
//! [`MemoryBudget::bytes`], and no single tensor exceeds [`MemoryBudget::max_buffer_bytes`]
//! (wgpu adapters cap one buffer; lavapipe at 128 MiB). What stays is the model, its
//! gradients, the optimizer state and `(layers + 2) x rows x T x hidden` floats of saved
//! activations (SmolLM2-135M, 4 rows of 4096: 1.2 GB).
//!
//! [`chunked_logps`] is pass 1 alone, for the frozen reference, evaluation and the
//! precomputed reference cache; run on the initial policy it gives bit for bit the log-probs
//! that [`policy_step`] hands to the loss, so SDPO's scores `ref - policy` start at exactly 0.

mod budget;
mod forward;
mod streamed;

use burn::module::{Module, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Gradients, IndexingUpdateOp, Tensor};

use sdpo_models::grad::{Tracking, grad_or_zeros, leaf, leaf_constant, tracking_of};
use sdpo_models::{AttentionInputs, CausalLm, StackContext};

pub use budget::{
    DEFAULT_MAX_BUFFER_BYTES, DEFAULT_MEMORY_BUDGET_BYTES, MAX_QUERY_BLOCK, MemoryBudget,
};
pub(crate) use forward::untracked_batch;
pub use forward::{
    ChunkedLogps, PositionExtra, chunked_logps, chunked_logps_with, layout_logps,
    wpo_log_sum_sq_probs,
};
pub use streamed::{hidden_state_bytes, streamed_logps};

use crate::error::TrainError;
use crate::logps::batch::DeviceBatch;
use crate::logps::layout::{HostRows, RowLayout};
use forward::{Forward, forward_rows, ints1, sided};

/// Gradients of one backward, summed into the policy's accumulator.
struct Collector<'a> {
    policy: &'a CausalLm,
    accumulator: GradientsAccumulator<CausalLm>,
}

impl Collector<'_> {
    fn add(&mut self, grads: Gradients) {
        self.accumulate(GradientsParams::from_grads(grads, self.policy));
    }

    /// The output head's parameter gradients from its backward without autodiff.
    fn add_head(
        &mut self,
        weight: Option<(ParamId, Tensor<2>)>,
        bias: Option<(ParamId, Tensor<1>)>,
    ) {
        let mut params = GradientsParams::new();
        if let Some((id, grad)) = weight {
            params.register(id, grad);
        }
        if let Some((id, grad)) = bias {
            params.register(id, grad);
        }
        self.accumulate(params);
    }

    fn accumulate(&mut self, params: GradientsParams) {
        if !params.is_empty() {
            self.accumulator.accumulate(self.policy, params);
        }
    }
}

/// One memory-bounded training micro-step of `policy` (on an autodiff device) on `batch`:
/// the policy's per-token log-probs (pass 1), `loss` on them (pass 2), and the gradient of
/// the returned loss with respect to every trainable parameter (passes 3-5), equal to what
/// `loss(...).backward()` through [`CausalLm::forward`] gives.
///
/// `loss` receives the log-probs with `chosen` and `rejected` as slices of one autodiff leaf
/// (see [`ChunkedLogps`]) and returns the scalar `[1]` to differentiate (scale it there, e.g.
/// by a gradient-accumulation weight) and anything else the caller wants back (metrics,
/// detached). `extra` is evaluated on each logits chunk of pass 1 and handed to `loss`.
///
/// Returns `loss`'s second value and the policy's gradients (empty when the loss does not
/// depend on the policy's log-probs or the batch has no completion token).
pub fn policy_step<M>(
    policy: &CausalLm,
    batch: &DeviceBatch,
    budget: &MemoryBudget,
    layout: RowLayout,
    extra: Option<PositionExtra<'_>>,
    loss: impl FnOnce(ChunkedLogps) -> Result<(Tensor<1>, M), TrainError>,
) -> Result<(M, GradientsParams), TrainError> {
    let tracking = tracking_of(policy);
    let plain = policy.valid();
    let batch = untracked_batch(batch);
    let host_rows = HostRows::read(&batch, layout)?;
    let positions = &host_rows.positions;
    let (rows, seq) = (positions.out_rows, positions.out_seq);
    let (fwd_rows, fwd_len) = (host_rows.rows, host_rows.len);
    let c = plain.config().clone();
    let hidden = c.hidden_size;
    let plain_device = batch.input_ids.device();

    // Pass 1: untracked forward, keeping layer inputs.
    let forward = forward_rows(
        &plain,
        &host_rows,
        &plain_device,
        budget,
        extra,
        true,
        false,
    )?;
    let mut inputs = sided(&forward, &host_rows, &batch)?;

    // Pass 2: the loss on the log-probs as a leaf.
    let b = batch.batch_size;
    let logps_leaf = leaf(
        Tensor::cat(
            vec![inputs.logps.chosen.clone(), inputs.logps.rejected.clone()],
            0,
        ),
        tracking,
    );
    inputs.logps.chosen = logps_leaf.clone().slice([0..b, 0..seq - 1]);
    inputs.logps.rejected = logps_leaf.clone().slice([b..rows, 0..seq - 1]);
    let (loss_value, output) = loss(inputs)?;
    if !loss_value.is_autodiff() || !loss_value.is_tracked() {
        return Ok((output, GradientsParams::new()));
    }
    let grads = loss_value.backward();
    let Some(dlogp) = logps_leaf.grad(&grads) else {
        return Ok((output, GradientsParams::new()));
    };
    drop(grads);
    if positions.len() == 0 {
        return Ok((output, GradientsParams::new()));
    }
    let device = dlogp.device();
    let dlogp_flat = dlogp
        .reshape([rows * (seq - 1)])
        .select(0, ints1(&positions.target, &device));

    let mut collector = Collector {
        policy,
        accumulator: GradientsAccumulator::new(),
    };

    // Pass 3: the head per chunk, then the final norm.
    let vocab = c.vocab_size;
    let chunk = budget.head_chunk(vocab);
    let mut dnormed = Tensor::<2>::zeros(
        [fwd_rows * fwd_len, hidden],
        (&device, forward.normed.dtype()),
    );
    for (s, e) in positions.chunks(chunk) {
        let n = e - s;
        let source = ints1(&positions.source[s..e], &device);
        let h = forward.normed.clone().select(0, source.clone());
        let g = dlogp_flat.clone().narrow(0, s, n);
        let at_labels: Vec<i64> = positions.labels[s..e]
            .iter()
            .enumerate()
            .map(|(i, &label)| i as i64 * vocab as i64 + label)
            .collect();
        // d log p(label) / d logits = onehot(label) - softmax(logits), so the gradient of the
        // logits is dL/dlogp · (onehot - p); the head's backward runs without autodiff, which
        // would keep the product's operands (a widened copy of a bfloat16 head).
        let head = policy.lm_head_backward(h, |logits| {
            // Softmax from primitives: flex's fused softmax kernel over [682, 49152] chunks
            // put SmolLM2's layer-0 gradient norms 0.3 % off transformers' (the 1024-token
            // oracle).
            let shifted = (logits.clone() - logits.max_dim(1)).exp();
            let probs = shifted.clone() / shifted.sum_dim(1);
            (probs * g.clone().neg().reshape([n, 1]))
                .reshape([n * vocab])
                .select_assign(0, ints1(&at_labels, &device), g, IndexingUpdateOp::Add)
                .reshape([n, vocab])
        });
        collector.add_head(head.weight, head.bias);
        dnormed = dnormed.select_assign(0, source, head.input, IndexingUpdateOp::Add);
    }
    let Forward {
        mut layer_inputs, ..
    } = forward;
    let last_output = layer_inputs.pop().expect("the last layer's output");
    let x = leaf(last_output, tracking);
    let normed = policy.final_norm(x.clone());
    let g = leaf_constant(dnormed.reshape([fwd_rows, fwd_len, hidden]), tracking);
    let grads = (normed * g).sum().backward();
    let mut g_out = grad_or_zeros(&x, &grads);
    collector.add(grads);

    // Pass 4: layers, top down.
    let block = budget.query_block(fwd_rows, c.num_attention_heads, fwd_len);
    let ctx = host_rows.context(&plain, block, &plain_device);
    for layer in (0..layer_inputs.len()).rev() {
        let x_in = layer_inputs.pop().expect("layer input");
        g_out = layer_backward(
            policy,
            &plain,
            layer,
            x_in,
            g_out,
            &ctx,
            tracking,
            &mut collector,
        );
    }

    // Pass 5: the embedding (nothing to do when it is frozen, e.g. a LoRA base).
    let x0 = policy.embed(host_rows.input_ids(&plain_device), &ctx);
    if x0.is_tracked() {
        let g = leaf_constant(g_out, tracking);
        collector.add((x0 * g).sum().backward());
    }

    let mut accumulator = collector.accumulator;
    Ok((output, accumulator.grads()))
}

/// Recomputes layer `layer` from its input `x_in` under autodiff, backpropagates `g_out` (the
/// gradient of its output), adds the parameter gradients to `collector` and returns the
/// gradient of its input. The attention is differentiated by the fused kernel's backward where
/// it ran fused, else one query block at a time.
#[allow(clippy::too_many_arguments)]
fn layer_backward(
    policy: &CausalLm,
    plain: &CausalLm,
    layer: usize,
    x_in: Tensor<3>,
    g_out: Tensor<3>,
    ctx: &StackContext,
    tracking: Tracking,
    collector: &mut Collector<'_>,
) -> Tensor<3> {
    // q/k/v, tracked; kept until the attention's gradient is known.
    let x_a = leaf(x_in.clone(), tracking);
    let tracked = policy.layer_attention_inputs(layer, x_a.clone(), ctx);
    let untracked = AttentionInputs {
        q: tracked.q.clone().without_autodiff(),
        k: tracked.k.clone().without_autodiff(),
        v: tracked.v.clone().without_autodiff(),
    };
    // The attention's value, untracked (the plain module computes the same bits); fused where
    // the backend has a kernel for it, with what its backward needs.
    let (attention, fused) = plain.attention_with_state(layer, untracked.clone(), ctx);

    // Output projection + MLP.
    let x_c = leaf(x_in, tracking);
    let attention_leaf = leaf(attention, tracking);
    let out = policy.layer_after_attention(layer, x_c.clone(), attention_leaf.clone());
    let grads = (out * leaf_constant(g_out, tracking)).sum().backward();
    let mut g_in = grad_or_zeros(&x_c, &grads);
    let g_attention = grad_or_zeros(&attention_leaf, &grads);
    collector.add(grads);

    // The attention: the fused kernel's backward, or autodiff one query block at a time.
    let (dq, dk, dv) =
        policy.attention_backward(layer, &untracked, fused, g_attention, ctx, tracking);

    // q/k/v projections, norm.
    let surrogate = (tracked.q * leaf_constant(dq, tracking)).sum()
        + (tracked.k * leaf_constant(dk, tracking)).sum()
        + (tracked.v * leaf_constant(dv, tracking)).sum();
    let grads = surrogate.backward();
    g_in = g_in + grad_or_zeros(&x_a, &grads);
    collector.add(grads);
    g_in
}
