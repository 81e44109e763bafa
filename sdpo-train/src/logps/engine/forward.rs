//! Pass 1 of the engine: the forward over the laid-out rows (untracked, or tracked on the
//! whole-graph shared-prompt path), then the output head at the completion positions in
//! chunks; and the log-probs of a frozen model or an evaluation from it alone.

use burn::module::Module;
use burn::tensor::{Bool, Device, IndexingUpdateOp, Int, Tensor, TensorData};

use sdpo_core::{
    label_is_top1, masked_mean, masked_sum, next_token_targets, token_entropy, token_logps,
};
use sdpo_models::CausalLm;

use super::budget::{MemoryBudget, WHOLE_GRAPH_BUDGET};
use crate::error::TrainError;
use crate::logps::batch::{DeviceBatch, SidedLogps};
use crate::logps::layout::{HostRows, RowLayout};

/// A per-position quantity computed from one chunk of logits `[n, vocab]` → `[n]`, without
/// gradient (e.g. WPO's `log(sum(p^2))`). It sees only the completion positions.
pub type PositionExtra<'a> = &'a dyn Fn(Tensor<2>) -> Tensor<1>;

/// Per-token log-probs of a batch, with the optional per-position extra.
#[derive(Debug, Clone)]
pub struct ChunkedLogps {
    /// Log-probs, masks and the `logits/*` means, as [`crate::logps::model_logps`] returns
    /// them. In [`super::policy_step`]'s closure, `chosen` and `rejected` are slices of one autodiff
    /// leaf on the policy's device; everything else is a constant.
    pub logps: SidedLogps,
    /// The [`PositionExtra`] at the completion positions, 0 elsewhere: `(chosen, rejected)`,
    /// `[B, T-1]` each; `None` without an extra.
    pub extra: Option<(Tensor<2>, Tensor<2>)>,
}

pub(super) fn ints1(values: &[i64], device: &Device) -> Tensor<1, Int> {
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
pub(super) struct Forward {
    /// Input of every layer, then the last layer's output (untracked).
    pub layer_inputs: Vec<Tensor<3>>,
    /// Final-norm output flattened to `[rows * T, hidden]` (untracked).
    pub normed: Tensor<2>,
    /// `[N]` log-probs, logit sums, entropies, top-1 hits (1.0 / 0.0) and extras at the
    /// completion positions, in position order.
    pub logps: Tensor<1>,
    pub logit_sums: Tensor<1>,
    pub entropy: Tensor<1>,
    pub top1: Tensor<1>,
    pub extra: Option<Tensor<1>>,
    pub vocab: usize,
}

/// Pass 1: the forward over `rows` (untracked, except on the whole-graph shared-prompt path,
/// which runs it on the tracked policy), then the head at the completion positions. The
/// attention runs fused where the backend has a kernel ([`sdpo_models::FusedAttention`]); with
/// `whole_graph` (the whole-graph path, which runs the policy tracked and its reference
/// untracked through this function) only where the kernel also runs tracked, so that the two
/// compute the same bits.
pub(super) fn forward_rows(
    model: &CausalLm,
    rows: &HostRows,
    device: &Device,
    budget: &MemoryBudget,
    extra: Option<PositionExtra<'_>>,
    keep_layer_inputs: bool,
    whole_graph: bool,
) -> Result<Forward, TrainError> {
    let c = model.config();
    let block = budget.query_block(rows.rows, c.num_attention_heads, rows.len);
    let ctx = rows.context(model, block, device);
    let ctx = &if whole_graph && !ctx.fused_attention_differentiable() {
        ctx.with_fused_attention(false)
    } else {
        ctx
    };
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
    head_logps(model, x, rows, device, budget, extra, layer_inputs)
}

/// The end of pass 1 from the last layer's output `x`: the final norm, then the head at the
/// completion positions in chunks of `budget`'s size (with the optional extra).
pub(super) fn head_logps(
    model: &CausalLm,
    x: Tensor<3>,
    rows: &HostRows,
    device: &Device,
    budget: &MemoryBudget,
    extra: Option<PositionExtra<'_>>,
    layer_inputs: Vec<Tensor<3>>,
) -> Result<Forward, TrainError> {
    let c = model.config();
    let positions = &rows.positions;
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
pub(super) fn sided(
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
/// reference, evaluation, the precomputed cache): pass 1 of [`super::policy_step`]. Attention runs in
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
    let forward = forward_rows(&model, &rows, &device, budget, extra, false, false)?;
    sided(&forward, &rows, &batch)
}

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
    let forward = forward_rows(
        model,
        &rows,
        &device,
        &WHOLE_GRAPH_BUDGET,
        extra,
        false,
        true,
    )?;
    sided(&forward, &rows, &plain_batch)
}

/// The batch's tensors without autodiff (they are integers; this only drops the association).
pub(crate) fn untracked_batch(batch: &DeviceBatch) -> DeviceBatch {
    DeviceBatch {
        batch_size: batch.batch_size,
        seq_len: batch.seq_len,
        input_ids: batch.input_ids.clone().without_autodiff(),
        attention_mask: batch.attention_mask.clone().without_autodiff(),
        completion_mask: batch.completion_mask.clone().without_autodiff(),
        host: batch.host.clone(),
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

/// WPO's `log(sum_v p_v^2)` of each position of one logits chunk `[n, vocab]` → `[n]`, as a
/// [`PositionExtra`].
pub fn wpo_log_sum_sq_probs(logits: Tensor<2>) -> Tensor<1> {
    // Rank 2 → 1 is the shape log_sum_sq_probs accepts; it cannot fail here.
    sdpo_core::log_sum_sq_probs::<2, 1>(logits).expect("a [n, vocab] chunk reduces to [n]")
}
