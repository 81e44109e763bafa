//! The forward pass one piece at a time: the only way through a model.
//!
//! [`CausalLm::forward`] composes these pieces with one query block covering the sequence (one
//! graph: under autodiff every decoder layer keeps its `[rows, heads, T, T]` attention scores
//! and the head keeps `[rows, T, vocab]` logits until the backward pass). A trainer that bounds
//! memory (per-layer recomputation, chunked log-probs; see `sdpo_train::logps`) calls them
//! itself:
//!
//! 1. [`CausalLm::stack_context`]: what every layer shares (attention mask, positions, RoPE
//!    tables, the query block of the attention); [`CausalLm::packed_stack_context`] for rows
//!    that pack a shared prefix and several branches ([`PackedRows`]: a pair's prompt once,
//!    then both completions);
//! 2. [`CausalLm::embed`]: token (GPT-2: plus position) embeddings;
//! 3. [`CausalLm::layer_forward`]: one decoder layer, itself composed of
//!    [`CausalLm::layer_attention_inputs`] (norm, q/k/v projections, RoPE),
//!    [`CausalLm::attention`] (scaled dot-product attention in query blocks, each block
//!    [`CausalLm::attention_block`]) and [`CausalLm::layer_after_attention`] (output
//!    projection, residual, norm, MLP, residual), each delegating the family's math to its file
//!    in `src/families/`;
//! 4. [`CausalLm::final_norm`] and [`CausalLm::lm_head`].
//!
//! Block `[s, e)` scores its queries against the keys `0..e` only (the later keys are causally
//! masked and contribute exact zeros to the softmax), and a sliding-window layer only against
//! the keys inside some query's window ([`StackContext::block_keys`]), so the largest attention
//! tensor is `[rows, heads, query_block, keys]` instead of `[rows, heads, T, T]`, and a sliding
//! layer's cost grows with its window instead of with `T`. Every query row is computed by the
//! same per-row operations whatever the block size; results agree to float rounding (the matrix
//! products see different shapes), and the pieces give bit-identical results tracked and
//! untracked.
//!
//! Every method works on plain and on autodiff modules and tensors; the trainer runs them
//! untracked (on `model.valid()`) for the forward pass and tracked, one layer or one block at a
//! time, to recompute and differentiate.

use std::ops::Range;

use burn::prelude::*;

use crate::attention::attend;
use crate::attention::fused::{self, FusedAttention, FusedKernel, LayerScoring};
use crate::attention::mask::{block_blocked, first_visible_key};
use crate::causal_lm::CausalLm;
use crate::config::{LayerAttention, LayerRope};
use crate::output::HeadGradients;
use crate::rope::RopeTables;

/// Rows that pack a shared prefix and branches continuing it: for a preference pair, the prompt
/// once and then the chosen and the rejected completion (the shared-prompt forward).
///
/// A token attends to the earlier real tokens of the shared prefix (branch 0) and of its own
/// branch, never to another branch; its position (RoPE angle, GPT-2 position embedding) is
/// `position_ids`, so each branch continues the prefix's positions as if it followed the
/// prefix alone. Every branch therefore computes exactly what a separate row `prefix + branch`
/// computes (to float rounding: the matrix products see other shapes). Positions never exceed
/// a token's index in its row.
#[derive(Debug, Clone)]
pub struct PackedRows {
    /// `[rows, T]` position of each token (`<=` its index in the row).
    pub position_ids: Tensor<2, Int>,
    /// `[rows, T]` 0 on the shared prefix, `k >= 1` on branch `k`.
    pub branches: Tensor<2, Int>,
}

/// What every layer of one forward pass shares: the key padding mask, the positions and RoPE
/// tables, how the rows are packed, and how many query positions one attention block scores at
/// once.
#[derive(Debug, Clone)]
pub struct StackContext {
    /// `[rows, seq]`, 1 on real tokens.
    attention_mask: Tensor<2, Int>,
    /// Positions and branches of packed rows; `None` for plain rows (positions `0..T`).
    packed: Option<PackedRows>,
    /// `[1 or rows, T]` position of each token.
    positions: Tensor<2, Int>,
    /// The model's RoPE tables; `None` when no layer rotates.
    rope: Option<RopeTables>,
    /// The sliding layers' own RoPE tables (Gemma 3).
    local_rope: Option<RopeTables>,
    seq_len: usize,
    query_block: usize,
    /// The sliding windows of the model's layers (`None`: full attention), each once.
    windows: Vec<Option<usize>>,
    /// [`StackContext::block_mask`] of every query block for each of `windows`, built once for
    /// all layers.
    block_masks: Vec<Vec<Tensor<4, Bool>>>,
    /// The fused attention kernel these rows may run ([`crate::FusedAttention`]): flex, or
    /// LibTorch's CPU device for plain right-padded rows; `None` elsewhere or when turned off.
    fused: Option<FusedKernel>,
}

impl StackContext {
    /// Padded sequence length `T`.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Query positions per attention block (at least 1, at most `T`).
    pub fn query_block(&self) -> usize {
        self.query_block
    }

    /// The same context with another query block size (clamped to `1..=T`).
    pub fn with_query_block(mut self, query_block: usize) -> Self {
        self.query_block = query_block.clamp(1, self.seq_len.max(1));
        self.block_masks = self
            .windows
            .iter()
            .map(|window| {
                self.query_blocks()
                    .into_iter()
                    .map(|(s, e)| self.build_block_mask(s, e, *window))
                    .collect()
            })
            .collect();
        self
    }

    /// Whether the layers of this context run fused ([`CausalLm::attention_with_state`]) on
    /// untracked inputs: every layer on flex; on LibTorch's CPU device the full-attention
    /// layers without soft-capping, for plain right-padded rows.
    pub fn fused_attention(&self) -> bool {
        self.fused.is_some()
    }

    /// Whether the fused attention of this context also runs on tracked inputs, recorded in
    /// their autodiff graph (flex), so that a tracked and an untracked forward through this
    /// context compute the same bits. LibTorch's kernels run untracked only.
    pub fn fused_attention_differentiable(&self) -> bool {
        matches!(self.fused, Some(FusedKernel::Flex(_)))
    }

    /// The same context with the fused attention allowed (`true`, the default where it can
    /// run) or not (`false`: the attention always runs in query blocks, e.g. to compare the
    /// two).
    pub fn with_fused_attention(mut self, allowed: bool) -> Self {
        self.fused = if allowed {
            FusedKernel::for_rows(&self.attention_mask, self.packed.as_ref())
        } else {
            None
        };
        self
    }

    /// The query blocks `[start, end)` covering `0..T` in order.
    pub fn query_blocks(&self) -> Vec<(usize, usize)> {
        (0..self.seq_len)
            .step_by(self.query_block.max(1))
            .map(|s| (s, (s + self.query_block).min(self.seq_len)))
            .collect()
    }

    /// The keys the queries `start..end` of a layer with sliding `window` attend over: `0..end`,
    /// or for a sliding window in plain rows only those inside some query's window.
    pub fn block_keys(&self, start: usize, end: usize, window: Option<usize>) -> Range<usize> {
        first_visible_key(start, window, self.packed.is_some())..end
    }

    /// Which of the keys [`StackContext::block_keys`] the `[rows]` × `[start, end)` queries of a
    /// layer with sliding `window` may not see: true unless the key is at or before the query,
    /// inside its window, a real token and (packed rows) in the shared prefix or the query's own
    /// branch. For plain rows and full attention these are rows `start..end`, columns `0..end`
    /// of [`crate::attention_blocked`]. The context's own query blocks are built once.
    ///
    /// # Shapes
    /// - output: `[rows, 1, end - start, keys]`
    pub fn block_mask(&self, start: usize, end: usize, window: Option<usize>) -> Tensor<4, Bool> {
        let block = self.query_block.max(1);
        let index = start / block;
        let is_own_block = start.is_multiple_of(block) && (start + block).min(self.seq_len) == end;
        let cached = self
            .windows
            .iter()
            .position(|w| *w == window)
            .and_then(|i| self.block_masks.get(i))
            .and_then(|masks| masks.get(index));
        match cached {
            Some(mask) if is_own_block => mask.clone(),
            _ => self.build_block_mask(start, end, window),
        }
    }

    fn build_block_mask(&self, start: usize, end: usize, window: Option<usize>) -> Tensor<4, Bool> {
        let keys = self.block_keys(start, end, window);
        block_blocked(
            &self.attention_mask,
            self.packed.as_ref(),
            (start, end),
            keys.start,
            window,
        )
    }

    /// The RoPE tables a layer's attention uses.
    fn rope_for(&self, attention: LayerAttention) -> Option<&RopeTables> {
        match attention.rope {
            LayerRope::Global => self.rope.as_ref(),
            LayerRope::Local => self.local_rope.as_ref(),
            LayerRope::None => None,
        }
    }
}

/// A layer's attention inputs after projection (and RoPE), before the score computation.
#[derive(Debug, Clone)]
pub struct AttentionInputs {
    /// `[rows, heads, seq, head_dim]`.
    pub q: Tensor<4>,
    /// `[rows, kv_heads, seq, head_dim]`.
    pub k: Tensor<4>,
    /// `[rows, kv_heads, seq, head_dim]`.
    pub v: Tensor<4>,
}

impl CausalLm {
    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.decoder().num_layers()
    }

    /// The context shared by the layers of a forward pass over `attention_mask` (`[rows, T]`,
    /// right padded, positions `0..T`), with attention blocks of `query_block` query positions
    /// (clamped to `1..=T`; `usize::MAX` means one block, as in [`CausalLm::forward`]).
    pub fn stack_context(
        &self,
        attention_mask: Tensor<2, Int>,
        query_block: usize,
    ) -> StackContext {
        self.context(attention_mask, None, query_block)
    }

    /// The context of a forward pass over packed rows (see [`PackedRows`]): `attention_mask`
    /// (`[rows, T]`, 1 on real tokens) with the rows' positions and branches.
    pub fn packed_stack_context(
        &self,
        attention_mask: Tensor<2, Int>,
        packed: PackedRows,
        query_block: usize,
    ) -> StackContext {
        self.context(attention_mask, Some(packed), query_block)
    }

    fn context(
        &self,
        attention_mask: Tensor<2, Int>,
        packed: Option<PackedRows>,
        query_block: usize,
    ) -> StackContext {
        let c = self.config();
        let [_, seq] = attention_mask.dims();
        let device = attention_mask.device();
        let packed_positions = packed.as_ref().map(|p| &p.position_ids);
        // Positions never exceed the index in the row, so the tables for `0..T` cover them.
        let tables = |rope: Option<&crate::RopeConfig>, kind: LayerRope| {
            let used = c.layers.iter().any(|l| l.rope == kind);
            rope.filter(|_| used)
                .map(|r| RopeTables::new(r, c.rotary_dim, seq, packed_positions, &device))
        };
        let positions = match &packed {
            Some(p) => p.position_ids.clone(),
            None => Tensor::<1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>(),
        };
        let mut windows: Vec<Option<usize>> = Vec::new();
        for layer in &c.layers {
            if !windows.contains(&layer.window) {
                windows.push(layer.window);
            }
        }
        StackContext {
            rope: tables(c.rope.as_ref(), LayerRope::Global),
            local_rope: tables(c.local_rope.as_ref(), LayerRope::Local),
            attention_mask,
            packed,
            positions,
            seq_len: seq,
            query_block: 1,
            windows,
            block_masks: Vec::new(),
            fused: None,
        }
        .with_query_block(query_block)
        .with_fused_attention(true)
    }

    /// Input embeddings (GPT-2: token plus learned position embeddings for the context's
    /// positions, `0..T` for plain rows; Gemma: scaled).
    ///
    /// # Shapes
    /// - `input_ids`: `[rows, T]`; output `[rows, T, hidden]`
    pub fn embed(&self, input_ids: Tensor<2, Int>, ctx: &StackContext) -> Tensor<3> {
        self.decoder().embed(input_ids, ctx.positions.clone())
    }

    /// Layer `layer`'s attention inputs: pre-attention norm, q/k/v projections split into heads,
    /// per-head norms, RoPE, as the family computes them.
    ///
    /// # Shapes
    /// - `x`: `[rows, T, hidden]` (the layer's input); see [`AttentionInputs`]
    ///
    /// # Panics
    /// If `layer >= self.num_layers()`.
    pub fn layer_attention_inputs(
        &self,
        layer: usize,
        x: Tensor<3>,
        ctx: &StackContext,
    ) -> AttentionInputs {
        let rope = ctx.rope_for(self.config().layer_attention(layer));
        self.decoder().attention_inputs(layer, x, rope)
    }

    /// The keys the queries `start..end` of layer `layer` attend over (see
    /// [`StackContext::block_keys`]): what [`CausalLm::attention_block`] takes.
    pub fn attention_block_keys(
        &self,
        layer: usize,
        ctx: &StackContext,
        start: usize,
        end: usize,
    ) -> Range<usize> {
        ctx.block_keys(start, end, self.config().layer_attention(layer).window)
    }

    /// Layer `layer`'s attention of the queries `start..start + n` (`q` holds those `n`
    /// positions) against the keys [`CausalLm::attention_block_keys`] (`k`, `v` hold exactly
    /// those), heads merged.
    ///
    /// # Shapes
    /// - `q`: `[rows, heads, n, head_dim]`; `k`, `v`: `[rows, kv_heads, keys, head_dim]`
    /// - output: `[rows, n, heads * head_dim]`
    pub fn attention_block(
        &self,
        layer: usize,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        ctx: &StackContext,
        start: usize,
    ) -> Tensor<3> {
        let c = self.config();
        let [_, _, n, _] = q.dims();
        let window = c.layer_attention(layer).window;
        let blocked = ctx.block_mask(start, start + n, window);
        let softcap = c.attn_logit_softcap;
        attend(q, k, v, blocked, c.attention_scale, c.kv_groups(), softcap)
    }

    /// Layer `layer`'s attention over all positions: fused where
    /// [`CausalLm::attention_with_state`] can run it so, else one query block
    /// ([`StackContext::query_block`]) at a time.
    ///
    /// # Shapes
    /// - see [`AttentionInputs`]; output `[rows, T, heads * head_dim]`
    pub fn attention(
        &self,
        layer: usize,
        inputs: AttentionInputs,
        ctx: &StackContext,
    ) -> Tensor<3> {
        self.attention_with_state(layer, inputs, ctx).0
    }

    /// [`CausalLm::attention`], plus what its backward needs when it ran fused (untracked
    /// inputs; on flex the host kernel, on LibTorch's CPU device PyTorch's flash-attention
    /// kernels for plain right-padded rows and a full-attention layer without soft-capping;
    /// see [`FusedAttention`]). Otherwise the attention runs in query blocks and the state is
    /// `None`.
    ///
    /// # Shapes
    /// - see [`AttentionInputs`]; output `[rows, T, heads * head_dim]`
    pub fn attention_with_state(
        &self,
        layer: usize,
        inputs: AttentionInputs,
        ctx: &StackContext,
    ) -> (Tensor<3>, Option<FusedAttention>) {
        let c = self.config();
        if let Some(kernel) = &ctx.fused {
            let scoring = LayerScoring {
                scale: c.attention_scale,
                groups: c.kv_groups(),
                precision: c.matmul_precision,
                window: c.layer_attention(layer).window,
                softcap: c.attn_logit_softcap,
            };
            if let Some((output, state)) =
                fused::attention(&inputs.q, &inputs.k, &inputs.v, scoring, kernel)
            {
                return (output, state);
            }
        }
        (self.blocked_attention(layer, inputs, ctx), None)
    }

    fn blocked_attention(
        &self,
        layer: usize,
        inputs: AttentionInputs,
        ctx: &StackContext,
    ) -> Tensor<3> {
        let AttentionInputs { q, k, v } = inputs;
        let [rows, heads, seq, head_dim] = q.dims();
        let [_, kv_heads, _, _] = k.dims();
        let blocks: Vec<Tensor<3>> = ctx
            .query_blocks()
            .into_iter()
            .map(|(s, e)| {
                let keys = self.attention_block_keys(layer, ctx, s, e);
                self.attention_block(
                    layer,
                    q.clone().slice([0..rows, 0..heads, s..e, 0..head_dim]),
                    k.clone()
                        .slice([0..rows, 0..kv_heads, keys.clone(), 0..head_dim]),
                    v.clone().slice([0..rows, 0..kv_heads, keys, 0..head_dim]),
                    ctx,
                    s,
                )
            })
            .collect();
        debug_assert!(seq == 0 || !blocks.is_empty());
        if blocks.len() == 1 {
            blocks.into_iter().next().expect("one block")
        } else {
            Tensor::cat(blocks, 1)
        }
    }

    /// The rest of layer `layer` after the attention: output projection, norms, MLP,
    /// residuals, as the family computes them.
    ///
    /// # Shapes
    /// - `x`: the layer's input `[rows, T, hidden]`; `attention`: `[rows, T, heads * head_dim]`
    /// - output: the layer's output `[rows, T, hidden]`
    pub fn layer_after_attention(
        &self,
        layer: usize,
        x: Tensor<3>,
        attention: Tensor<3>,
    ) -> Tensor<3> {
        self.decoder().after_attention(layer, x, attention)
    }

    /// One decoder layer: [`CausalLm::layer_attention_inputs`], [`CausalLm::attention`],
    /// [`CausalLm::layer_after_attention`].
    ///
    /// # Shapes
    /// - `x`: `[rows, T, hidden]`; output `[rows, T, hidden]`
    pub fn layer_forward(&self, layer: usize, x: Tensor<3>, ctx: &StackContext) -> Tensor<3> {
        let inputs = self.layer_attention_inputs(layer, x.clone(), ctx);
        let attention = self.attention(layer, inputs, ctx);
        self.layer_after_attention(layer, x, attention)
    }

    /// The final norm (`model.norm`; GPT-2: `transformer.ln_f`).
    ///
    /// # Shapes
    /// - `x`: `[rows, T, hidden]` (the last layer's output); output the same shape
    pub fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        self.decoder().final_norm(x)
    }

    /// Logits from final-norm outputs: the output head, or the token embedding when tied
    /// (soft-capped where the family does so).
    ///
    /// # Shapes
    /// - `x`: `[rows, n, hidden]`; output `[rows, n, vocab]`
    pub fn lm_head(&self, x: Tensor<3>) -> Tensor<3> {
        self.decoder().output_head().logits(x)
    }

    /// The output head's backward for the positions `x` (final-norm outputs, untracked) without
    /// autodiff: `seed` receives their logits (the bits [`CausalLm::lm_head`] gives) and
    /// returns the gradient of the loss with respect to them; the result holds the gradient of
    /// `x` and, for a trained head (or tied embedding), of its parameters. Nothing of the
    /// product is kept for a backward, so a head stored in a lower dtype than its product is
    /// never widened whole (the memory-bounded engine's head pass).
    ///
    /// # Shapes
    /// - `x`: `[n, hidden]`; `seed`: `[n, vocab]` → `[n, vocab]`
    pub fn lm_head_backward(
        &self,
        x: Tensor<2>,
        seed: impl FnOnce(Tensor<2>) -> Tensor<2>,
    ) -> HeadGradients {
        self.decoder().output_head().backward(x, seed)
    }
}
