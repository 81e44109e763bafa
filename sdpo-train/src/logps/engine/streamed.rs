//! The engine's pass 1 over a model read one piece at a time ([`StreamedLm`]): the
//! reference larger than memory (`ref_layer_streaming`).
//!
//! Several batches go through together, piece by piece: their embeddings, then decoder layer 0
//! applied to every batch's hidden states, then layer 1, and so on, each layer's weights read
//! once for all of them and released before the next; then the final norm and the head at the
//! completion positions, batch by batch. Each batch sees the operations of
//! [`super::chunked_logps_with`] on the same weights, in the same shapes (its own context,
//! query blocks and head chunks), so the log-probs are those of the model held in memory, bit
//! for bit. What stays in memory is one piece's weights and every batch's `[rows, T, hidden]`
//! hidden states ([`hidden_state_bytes`] each; the caller keeps their sum within a budget).

use burn::tensor::Tensor;

use sdpo_models::{CausalLm, Piece, StackContext, StreamedLm};

use super::budget::MemoryBudget;
use super::forward::{head_logps, sided};
use crate::error::TrainError;
use crate::logps::batch::{DeviceBatch, SidedLogps};
use crate::logps::layout::{HostRows, RowLayout};

/// The bytes of a batch's hidden states between two layers: `2 * pairs` rows (the
/// shared-prompt layout has fewer) of `seq_len` float32 vectors of width `hidden`.
pub fn hidden_state_bytes(pairs: usize, seq_len: usize, hidden: usize) -> u64 {
    4 * 2 * pairs as u64 * seq_len as u64 * hidden as u64
}

/// Per-token completion log-probs of the streamed `model` on each of `batches`, as
/// [`super::chunked_logps_with`] computes them on the model in memory (without an extra).
/// Every piece is released when this returns.
pub fn streamed_logps(
    model: &mut StreamedLm,
    batches: &[DeviceBatch],
    budget: &MemoryBudget,
    layout: RowLayout,
) -> Result<Vec<SidedLogps>, TrainError> {
    let out = run(model, batches, budget, layout);
    model.release();
    out
}

fn run(
    model: &mut StreamedLm,
    batches: &[DeviceBatch],
    budget: &MemoryBudget,
    layout: RowLayout,
) -> Result<Vec<SidedLogps>, TrainError> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let device = first.input_ids.device();
    let rows = batches
        .iter()
        .map(|b| HostRows::read(b, layout))
        .collect::<Result<Vec<_>, _>>()?;
    let heads = model.config().num_attention_heads;
    let contexts: Vec<StackContext> = rows
        .iter()
        .map(|r| {
            r.context(
                model.model(),
                budget.query_block(r.rows, heads, r.len),
                &device,
            )
        })
        .collect();
    let embedding = load(model, Piece::Embedding)?;
    let mut hidden: Vec<Tensor<3>> = rows
        .iter()
        .zip(&contexts)
        .map(|(r, ctx)| embedding.embed(r.input_ids(&device), ctx))
        .collect();
    let layers = model.model().num_layers();
    for layer in 0..layers {
        let weights = load(model, Piece::Layer(layer))?;
        hidden = hidden
            .into_iter()
            .zip(&contexts)
            .map(|(x, ctx)| weights.layer_forward(layer, x, ctx))
            .collect();
    }
    let head = load(model, Piece::Head)?;
    hidden
        .into_iter()
        .zip(&rows)
        .zip(batches)
        .map(|((x, rows), batch)| {
            let forward = head_logps(head, x, rows, &device, budget, None, Vec::new())?;
            Ok(sided(&forward, rows, batch)?.logps)
        })
        .collect()
}

/// Reads `piece` into `model`, releasing the piece before it.
fn load(model: &mut StreamedLm, piece: Piece) -> Result<&CausalLm, TrainError> {
    let path = model.dir().to_path_buf();
    model
        .load(piece)
        .map_err(|source| TrainError::Model { path, source })
}
