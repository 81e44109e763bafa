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
//! 3. **Head**: per chunk, the logits recomputed under autodiff from the saved final-norm
//!    output and seeded with `dL/dlogp · (onehot(label) - softmax)`: the head's weight gradient
//!    and `dL/dh`; then the final norm recomputed from the last layer's output: its gradient
//!    and the gradient of the last layer's output.
//! 4. **Layers, top down**: layer `i` recomputed from its saved input in three tracked pieces
//!    (q/k/v; the attention, one query block at a time, or on LibTorch's CPU device the fused
//!    kernel's backward, [`sdpo_models::FusedAttention`]; output projection and MLP), each piece's
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

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Bool, Device, Gradients, IndexingUpdateOp, Int, Tensor, TensorData};

use sdpo_core::{
    label_is_top1, masked_mean, masked_sum, next_token_targets, token_entropy, token_logps,
};
use sdpo_models::grad::{Tracking, grad_or_zeros, leaf, leaf_constant, tracking_of};
use sdpo_models::{AttentionInputs, CausalLm, StackContext};

use crate::batch::{DeviceBatch, SidedLogps};
use crate::error::TrainError;
use crate::layout::{HostRows, RowLayout};

/// Default [`MemoryBudget::bytes`]: 512 MiB for one head chunk or attention block.
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 512 << 20;

/// Default [`MemoryBudget::max_buffer_bytes`]: 128 MiB, the largest storage buffer every
/// WebGPU adapter must support (`maxStorageBufferBindingSize`'s guaranteed minimum; lavapipe's
/// actual limit).
pub const DEFAULT_MAX_BUFFER_BYTES: u64 = 128 << 20;

/// How much transient memory the engine's chunks and blocks may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes for the tensors of one head chunk or one attention query block, including what
    /// autodiff keeps of them for the backward pass.
    pub bytes: u64,
    /// The largest single tensor, in bytes (a GPU adapter's buffer limit).
    pub max_buffer_bytes: u64,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self {
            bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
        }
    }
}

/// Bytes per element of the tensors the budget is counted in (f32).
const FLOAT_BYTES: u64 = 4;
/// `[chunk, vocab]` tensors alive at the peak of one head chunk's backward (logits, shifted
/// logits, their exponential kept for the backward, the gradient).
const HEAD_COPIES: u64 = 4;
/// `[rows, heads, block, T]` tensors alive at the peak of one attention block's backward
/// (scores, exponentials and probabilities kept for the backward, the bias, two gradients).
const ATTENTION_COPIES: u64 = 6;

impl MemoryBudget {
    /// A budget of `bytes` with the default buffer limit.
    pub fn new(bytes: u64) -> Self {
        Self {
            bytes,
            ..Self::default()
        }
    }

    /// Positions per head chunk for a vocabulary of `vocab` (at least 1).
    pub fn head_chunk(&self, vocab: usize) -> usize {
        let row = FLOAT_BYTES * vocab.max(1) as u64;
        let by_budget = self.bytes / (HEAD_COPIES * row);
        let by_buffer = self.max_buffer_bytes / row;
        by_budget.min(by_buffer).max(1) as usize
    }

    /// Query positions per attention block for `rows` rows, `heads` query heads and `seq`
    /// keys (at least 1, at most [`MAX_QUERY_BLOCK`] and `seq`).
    pub fn query_block(&self, rows: usize, heads: usize, seq: usize) -> usize {
        let row = FLOAT_BYTES * (rows.max(1) * heads.max(1) * seq.max(1)) as u64;
        let by_budget = self.bytes / (ATTENTION_COPIES * row);
        let by_buffer = self.max_buffer_bytes / row;
        (by_budget.min(by_buffer).max(1) as usize)
            .min(MAX_QUERY_BLOCK)
            .min(seq.max(1))
    }
}

/// A per-position quantity computed from one chunk of logits `[n, vocab]` → `[n]`, without
/// gradient (e.g. WPO's `log(sum(p^2))`). It sees only the completion positions.
pub type PositionExtra<'a> = &'a dyn Fn(Tensor<2>) -> Tensor<1>;

/// Per-token log-probs of a batch, with the optional per-position extra.
#[derive(Debug, Clone)]
pub struct ChunkedLogps {
    /// Log-probs, masks and the `logits/*` means, as [`crate::batch::model_logps`] returns
    /// them. In [`policy_step`]'s closure, `chosen` and `rejected` are slices of one autodiff
    /// leaf on the policy's device; everything else is a constant.
    pub logps: SidedLogps,
    /// The [`PositionExtra`] at the completion positions, 0 elsewhere: `(chosen, rejected)`,
    /// `[B, T-1]` each; `None` without an extra.
    pub extra: Option<(Tensor<2>, Tensor<2>)>,
}

fn ints1(values: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// `[rows * (T - 1)]` zeros with `values` (`[n]`) placed at `target` → `[rows, T - 1]`.
fn scatter(values: Tensor<1>, target: &[i64], rows: usize, seq: usize) -> Tensor<2> {
    let device = values.device();
    let zeros = Tensor::<1>::zeros([rows * (seq - 1)], (&device, values.dtype()));
    zeros
        .select_assign(0, ints1(target, &device), values, IndexingUpdateOp::Add)
        .reshape([rows, seq - 1])
}

/// What pass 1 produced.
struct Forward {
    /// Input of every layer, then the last layer's output (untracked).
    layer_inputs: Vec<Tensor<3>>,
    /// Final-norm output flattened to `[rows * T, hidden]` (untracked).
    normed: Tensor<2>,
    /// `[N]` log-probs, logit sums, entropies, top-1 hits (1.0 / 0.0) and extras at the
    /// completion positions, in position order.
    logps: Tensor<1>,
    logit_sums: Tensor<1>,
    entropy: Tensor<1>,
    top1: Tensor<1>,
    extra: Option<Tensor<1>>,
    vocab: usize,
}

/// Pass 1: the forward over `rows` (untracked, except on the whole-graph shared-prompt path,
/// which runs it on the tracked policy), then the head at the completion positions.
fn forward_rows(
    model: &CausalLm,
    rows: &HostRows,
    device: &Device,
    budget: &MemoryBudget,
    extra: Option<PositionExtra<'_>>,
    keep_layer_inputs: bool,
) -> Result<Forward, TrainError> {
    let c = model.config();
    let block = budget.query_block(rows.rows, c.num_attention_heads, rows.len);
    let ctx = &rows.context(model, block, device);
    let positions = &rows.positions;
    let mut x = model.embed(rows.input_ids(device), ctx);
    let mut layer_inputs = Vec::new();
    for layer in 0..model.num_layers() {
        if keep_layer_inputs {
            layer_inputs.push(x.clone());
        }
        x = model.layer_forward(layer, x, ctx);
    }
    if keep_layer_inputs {
        layer_inputs.push(x.clone());
    }
    let hidden = c.hidden_size;
    let normed = model.final_norm(x).reshape([rows.rows * rows.len, hidden]);
    let vocab = c.vocab_size;
    let chunk = budget.head_chunk(vocab);
    let (mut logps, mut sums, mut extras) = (Vec::new(), Vec::new(), Vec::new());
    let (mut entropies, mut top1s) = (Vec::new(), Vec::new());
    for (s, e) in positions.chunks(chunk) {
        let n = e - s;
        let h = normed
            .clone()
            .select(0, ints1(&positions.source[s..e], device));
        let logits = model.lm_head(h.reshape([1, n, hidden]));
        let labels = Tensor::<2, Int>::from_data(
            TensorData::new(positions.labels[s..e].to_vec(), [1, n]),
            device,
        );
        sums.push(logits.clone().detach().sum_dim(2).reshape([n]));
        // TRL's `entropy` and `mean_token_accuracy` from the same chunk (no gradient).
        let values = logits.clone().detach().reshape([n, vocab]);
        entropies.push(token_entropy::<2, 1>(values.clone()).map_err(TrainError::Compute)?);
        top1s.push(
            label_is_top1::<2, 1>(values.clone(), labels.clone().reshape([n]))
                .map_err(TrainError::Compute)?,
        );
        if let Some(f) = extra {
            extras.push(f(values));
        }
        logps.push(
            token_logps(logits, labels)
                .map_err(TrainError::Compute)?
                .reshape([n]),
        );
    }
    let cat = |parts: Vec<Tensor<1>>| {
        if parts.is_empty() {
            Tensor::<1>::zeros([0], device)
        } else {
            Tensor::cat(parts, 0)
        }
    };
    Ok(Forward {
        layer_inputs,
        normed,
        logps: cat(logps),
        logit_sums: cat(sums),
        entropy: cat(entropies),
        top1: cat(top1s),
        extra: extra.map(|_| cat(extras)),
        vocab,
    })
}

/// Scatters pass 1's per-position values into [`ChunkedLogps`] (`[B, T-1]` per side).
fn sided(
    forward: &Forward,
    rows: &HostRows,
    batch: &DeviceBatch,
) -> Result<ChunkedLogps, TrainError> {
    let positions = &rows.positions;
    let (rows, seq) = (positions.out_rows, positions.out_seq);
    let b = batch.batch_size;
    let targets = next_token_targets(batch.input_ids.clone(), batch.completion_mask.clone())
        .map_err(TrainError::Compute)?;
    let mask: Tensor<2, Bool> = targets.loss_mask;
    let logps = scatter(forward.logps.clone(), &positions.target, rows, seq);
    let sums = scatter(forward.logit_sums.clone(), &positions.target, rows, seq);
    let row_sums = masked_sum(sums, mask.clone());
    let vocab = forward.vocab;
    let logits_mean = |range: std::ops::Range<usize>| {
        sdpo_core::logits_mean_from_sums(
            row_sums.clone().slice([range.clone()]),
            mask.clone().slice([range, 0..seq - 1]),
            vocab,
        )
    };
    let extra = forward.extra.clone().map(|values| {
        let all = scatter(values, &positions.target, rows, seq);
        (
            all.clone().slice([0..b, 0..seq - 1]),
            all.slice([b..rows, 0..seq - 1]),
        )
    });
    let (chosen_logits_mean, rejected_logits_mean) = (logits_mean(0..b), logits_mean(b..rows));
    let entropy = scatter(forward.entropy.clone(), &positions.target, rows, seq);
    let top1 = scatter(forward.top1.clone(), &positions.target, rows, seq);
    Ok(ChunkedLogps {
        logps: SidedLogps {
            entropy: masked_mean(entropy, mask.clone()),
            mean_token_accuracy: masked_mean(
                top1.slice([0..b, 0..seq - 1]),
                mask.clone().slice([0..b, 0..seq - 1]),
            ),
            chosen: logps.clone().slice([0..b, 0..seq - 1]),
            rejected: logps.slice([b..rows, 0..seq - 1]),
            chosen_mask: mask.clone().slice([0..b, 0..seq - 1]),
            rejected_mask: mask.slice([b..rows, 0..seq - 1]),
            chosen_logits_mean,
            rejected_logits_mean,
            chosen_log_sum_sq_probs: None,
            rejected_log_sum_sq_probs: None,
        },
        extra,
    })
}

/// Per-token completion log-probs of `model` on `batch` without gradient tracking (the
/// reference, evaluation, the precomputed cache): pass 1 of [`policy_step`]. Attention runs in
/// query blocks and the output head in chunks of completion positions, both sized by
/// `budget`, so no `[rows, heads, T, T]` or `[rows, T, vocab]` tensor is built. On an
/// autodiff model it runs on `model.valid()`.
///
/// # Shapes
/// - `batch`: `2B` rows of `T` (chosen first); output `[B, T-1]` per side
pub fn chunked_logps(
    model: &CausalLm,
    batch: &DeviceBatch,
    budget: &MemoryBudget,
) -> Result<SidedLogps, TrainError> {
    Ok(chunked_logps_with(model, batch, budget, RowLayout::TwoRows, None)?.logps)
}

/// [`chunked_logps`] with the rows laid out as `layout` says, plus an optional per-position
/// extra computed from each logits chunk.
pub fn chunked_logps_with(
    model: &CausalLm,
    batch: &DeviceBatch,
    budget: &MemoryBudget,
    layout: RowLayout,
    extra: Option<PositionExtra<'_>>,
) -> Result<ChunkedLogps, TrainError> {
    let model = model.valid();
    let batch = untracked_batch(batch);
    let rows = HostRows::read(&batch, layout)?;
    let device = batch.input_ids.device();
    let forward = forward_rows(&model, &rows, &device, budget, extra, false)?;
    sided(&forward, &rows, &batch)
}

/// The budget of the whole-graph path through the forward in pieces: head chunks of
/// [`crate::batch::MAX_LOGITS_PER_PASS`], attention blocks within one GPU buffer.
const WHOLE_GRAPH_BUDGET: MemoryBudget = MemoryBudget {
    bytes: u64::MAX,
    max_buffer_bytes: crate::batch::MAX_LOGITS_PER_PASS as u64 * FLOAT_BYTES,
};

/// The most query positions of one attention block, on every path: block `[s, e)` scores
/// only the keys `0..e`, so small blocks skip most of the causally masked half of the scores
/// (and the `exp` of masked scores, which is slow on the CPU). Measured on SmolLM2 at 1024
/// tokens with the shared-prompt rows, where large blocks also score much of the other
/// completion: docs/benchmarks.md.
pub const MAX_QUERY_BLOCK: usize = 128;

/// Per-token completion log-probs through the forward in pieces with the rows laid out as
/// `layout` says, the output head only at the completion positions; on a tracked `model` the
/// result keeps its graph (plain autodiff through the whole forward, the whole-graph
/// shared-prompt path). The reference and evaluation run the same function untracked, so the
/// bits agree.
pub fn layout_logps(
    model: &CausalLm,
    batch: &DeviceBatch,
    layout: RowLayout,
    extra: Option<PositionExtra<'_>>,
) -> Result<ChunkedLogps, TrainError> {
    let plain_batch = untracked_batch(batch);
    let rows = HostRows::read(&plain_batch, layout)?;
    let device = batch.input_ids.device();
    let forward = forward_rows(model, &rows, &device, &WHOLE_GRAPH_BUDGET, extra, false)?;
    sided(&forward, &rows, &plain_batch)
}

/// The batch's tensors without autodiff (they are integers; this only drops the association).
fn untracked_batch(batch: &DeviceBatch) -> DeviceBatch {
    DeviceBatch {
        batch_size: batch.batch_size,
        seq_len: batch.seq_len,
        input_ids: batch.input_ids.clone().without_autodiff(),
        attention_mask: batch.attention_mask.clone().without_autodiff(),
        completion_mask: batch.completion_mask.clone().without_autodiff(),
        host: batch.host.clone(),
    }
}

/// Gradients of one backward, summed into the policy's accumulator.
struct Collector<'a> {
    policy: &'a CausalLm,
    accumulator: GradientsAccumulator<CausalLm>,
}

impl Collector<'_> {
    fn add(&mut self, grads: Gradients) {
        let params = GradientsParams::from_grads(grads, self.policy);
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
    let forward = forward_rows(&plain, &host_rows, &plain_device, budget, extra, true)?;
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
        let h = leaf(forward.normed.clone().select(0, source.clone()), tracking);
        let logits = policy
            .lm_head(h.clone().reshape([1, n, hidden]))
            .reshape([n, vocab]);
        // d log p(label) / d logits = onehot(label) - softmax(logits), so the gradient of the
        // logits is dL/dlogp · (onehot - p), built untracked and fed to the head's backward.
        let g = dlogp_flat.clone().narrow(0, s, n);
        // Softmax from primitives: flex's fused softmax kernel over [682, 49152] chunks put
        // SmolLM2's layer-0 gradient norms 0.3 % off transformers' (the 1024-token oracle).
        let values = logits.clone().without_autodiff();
        let shifted = (values.clone() - values.max_dim(1)).exp();
        let probs = shifted.clone() / shifted.sum_dim(1);
        let at_labels: Vec<i64> = positions.labels[s..e]
            .iter()
            .enumerate()
            .map(|(i, &label)| i as i64 * vocab as i64 + label)
            .collect();
        let dlogits = (probs * g.clone().neg().reshape([n, 1]))
            .reshape([n * vocab])
            .select_assign(0, ints1(&at_labels, &device), g, IndexingUpdateOp::Add)
            .reshape([n, vocab]);
        let grads = (logits * leaf_constant(dlogits, tracking)).sum().backward();
        let dh = grad_or_zeros(&h, &grads);
        collector.add(grads);
        dnormed = dnormed.select_assign(0, source, dh, IndexingUpdateOp::Add);
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

/// WPO's `log(sum_v p_v^2)` of each position of one logits chunk `[n, vocab]` → `[n]`, as a
/// [`PositionExtra`].
pub fn wpo_log_sum_sq_probs(logits: Tensor<2>) -> Tensor<1> {
    // Rank 2 → 1 is the shape log_sum_sq_probs accepts; it cannot fail here.
    sdpo_core::log_sum_sq_probs::<2, 1>(logits).expect("a [n, vocab] chunk reduces to [n]")
}

/// How much of the policy's graph one training micro-step keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMode {
    /// One forward of the whole batch; the policy's backward is autodiff through it.
    Whole,
    /// The memory-bounded engine: attention in query blocks, the head only at completion
    /// positions in chunks, and for the policy per-layer recomputation ([`policy_step`]).
    Bounded(MemoryBudget),
}

/// How a model's per-token completion log-probs are computed, for the policy, the reference,
/// evaluation and the precomputed reference cache alike (one path for all of them, so that
/// SDPO's scores `ref - policy` start at exactly 0 when the reference is the initial policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogpsPath {
    /// Whole graph or memory-bounded.
    pub memory: MemoryMode,
    /// Two rows per pair or the shared-prompt rows.
    pub layout: RowLayout,
}

impl LogpsPath {
    /// The whole-graph path over two rows per pair through [`CausalLm::forward`] (TRL's
    /// concatenated forward; in row chunks when the logits would exceed
    /// [`crate::batch::MAX_LOGITS_PER_PASS`]).
    pub const WHOLE: Self = Self {
        memory: MemoryMode::Whole,
        layout: RowLayout::TwoRows,
    };

    /// The memory-bounded engine over two rows per pair.
    pub fn bounded(budget: MemoryBudget) -> Self {
        Self {
            memory: MemoryMode::Bounded(budget),
            layout: RowLayout::TwoRows,
        }
    }

    /// The same path with the rows laid out as `layout` says.
    pub fn with_layout(self, layout: RowLayout) -> Self {
        Self { layout, ..self }
    }

    /// The path a run's configuration asks for: [`MemoryMode::Bounded`] with
    /// `gradient_checkpointing`, else [`MemoryMode::Whole`]; the shared-prompt rows with
    /// `shared_prompt_forward`.
    pub fn for_run(
        gradient_checkpointing: bool,
        budget: MemoryBudget,
        shared_prompt_forward: bool,
    ) -> Self {
        let memory = if gradient_checkpointing {
            MemoryMode::Bounded(budget)
        } else {
            MemoryMode::Whole
        };
        Self {
            memory,
            layout: RowLayout::for_run(shared_prompt_forward),
        }
    }

    /// Per-token completion log-probs of `model` on `batch`; with `log_sum_sq_probs`, also
    /// WPO's `log(sum_v p_v^2)` per completion position. On [`MemoryMode::Whole`] the result
    /// keeps `model`'s graph when it is on an autodiff device; [`MemoryMode::Bounded`] never
    /// tracks (the policy's bounded backward is [`policy_step`]).
    pub fn logps(
        &self,
        model: &CausalLm,
        batch: &DeviceBatch,
        log_sum_sq_probs: bool,
    ) -> Result<SidedLogps, TrainError> {
        let extra: Option<PositionExtra<'_>> = log_sum_sq_probs.then_some(&wpo_log_sum_sq_probs);
        match (self.memory, self.layout) {
            (MemoryMode::Whole, RowLayout::TwoRows) => crate::batch::model_logps_chunked(
                model,
                batch,
                crate::batch::MAX_LOGITS_PER_PASS,
                log_sum_sq_probs,
            ),
            (MemoryMode::Whole, layout) => {
                Ok(layout_logps(model, batch, layout, extra)?.into_sided())
            }
            (MemoryMode::Bounded(budget), layout) => {
                Ok(chunked_logps_with(model, batch, &budget, layout, extra)?.into_sided())
            }
        }
    }
}

impl ChunkedLogps {
    /// The log-probs with the extra (when there is one) as WPO's `log(sum_v p_v^2)`.
    pub fn into_sided(self) -> SidedLogps {
        let mut logps = self.logps;
        if let Some((chosen, rejected)) = self.extra {
            logps.chosen_log_sum_sq_probs = Some(chosen);
            logps.rejected_log_sum_sq_probs = Some(rejected);
        }
        logps
    }
}
