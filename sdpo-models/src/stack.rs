//! The forward pass one piece at a time, for memory-bounded training on long sequences.
//!
//! [`CausalLm::forward`] runs the whole model as one graph: under autodiff every decoder layer
//! keeps its `[rows, heads, T, T]` attention scores and the head keeps `[rows, T, vocab]`
//! logits until the backward pass. A trainer that bounds memory (per-layer recomputation,
//! chunked log-probs; see `sdpo_train::engine`) needs the pieces instead:
//!
//! 1. [`CausalLm::stack_context`]: what every layer shares (attention mask, RoPE tables,
//!    the query block of the attention); [`CausalLm::packed_stack_context`] for rows that
//!    pack a shared prefix and several branches ([`PackedRows`]: a pair's prompt once, then
//!    both completions);
//! 2. [`CausalLm::embed`]: token (GPT-2: plus position) embeddings;
//! 3. [`CausalLm::layer_forward`]: one decoder layer, itself composed of
//!    [`CausalLm::layer_attention_inputs`] (norm, q/k/v projections, RoPE),
//!    [`CausalLm::attention`] (scaled dot-product attention in query blocks, each block
//!    [`CausalLm::attention_block`]) and [`CausalLm::layer_after_attention`] (output
//!    projection, residual, norm, MLP, residual);
//! 4. [`CausalLm::final_norm`] and [`CausalLm::lm_head`].
//!
//! Composed, they compute what `forward` computes with the same operations, except that the
//! attention runs in blocks of query positions: block `[s, e)` scores its queries against the
//! keys `0..e` only (the later keys are causally masked and contribute exact zeros to the
//! softmax), so the largest attention tensor is `[rows, heads, query_block, T]` instead of
//! `[rows, heads, T, T]`. Every query row is computed by the same per-row operations as in
//! `forward`; results agree with it to float rounding (the matrix products see different
//! shapes), and the pieces give bit-identical results tracked and untracked.
//!
//! Every method works on plain and on autodiff modules and tensors; the trainer runs them
//! untracked (on `model.valid()`) for the forward pass and tracked, one layer or one block at a
//! time, to recompute and differentiate.

use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate};

use crate::attention::{attend, split_heads};
use crate::causal_lm::CausalLm;
use crate::config::{Activation, ModelConfig};
use crate::fused::FusedAttention;
use crate::gpt2::layer_norm;
use crate::output::{embed, head_logits};
use crate::rope::{apply_rope_tables, rope_tables};

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

/// What every layer of one forward pass shares: the key padding mask, the RoPE tables for
/// the rows' positions, how the rows are packed, and how many query positions one attention
/// block scores at once.
#[derive(Debug, Clone)]
pub struct StackContext {
    /// `[rows, seq]`, 1 on real tokens.
    attention_mask: Tensor<2, Int>,
    /// Positions and branches of packed rows; `None` for plain rows (positions `0..T`).
    packed: Option<PackedRows>,
    /// RoPE cosine and sine tables `[1 or rows, 1, seq, head_dim]` (Llama, Qwen2); `None` for
    /// GPT-2.
    rope: Option<(Tensor<4>, Tensor<4>)>,
    seq_len: usize,
    query_block: usize,
    /// [`StackContext::block_mask`] of every query block, built once for all layers.
    block_masks: Vec<Tensor<4, Bool>>,
    /// Plain rows whose real tokens are a prefix of the row, on a device with a fused causal
    /// attention kernel (LibTorch's CPU device): the attention may run fused ([`crate::fused`]).
    fused_causal: bool,
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
            .query_blocks()
            .into_iter()
            .map(|(s, e)| self.build_block_mask(s, e))
            .collect();
        self
    }

    /// Whether the attention of this context runs fused ([`CausalLm::attention_with_state`]):
    /// plain right-padded rows on LibTorch's CPU device.
    pub fn fused_attention(&self) -> bool {
        self.fused_causal
    }

    /// The same context with the fused attention allowed (`true`, the default where it can
    /// run) or not (`false`: the attention always runs in query blocks, e.g. to compare the
    /// two).
    pub fn with_fused_attention(mut self, allowed: bool) -> Self {
        self.fused_causal = allowed
            && self.packed.is_none()
            && crate::fused::available(&self.attention_mask)
            && real_tokens_lead(&self.attention_mask);
        self
    }

    /// The query blocks `[start, end)` covering `0..T` in order.
    pub fn query_blocks(&self) -> Vec<(usize, usize)> {
        (0..self.seq_len)
            .step_by(self.query_block.max(1))
            .map(|s| (s, (s + self.query_block).min(self.seq_len)))
            .collect()
    }

    /// Which keys `0..end` the `[rows]` × `[start, end)` queries may not see: true unless the
    /// key is at or before the query, is a real token and (packed rows) lies in the shared
    /// prefix or the query's own branch (for plain rows, the rows `start..end`, columns
    /// `0..end` of [`crate::attention_blocked`]). The context's own query blocks are built once.
    ///
    /// # Shapes
    /// - output: `[rows, 1, end - start, end]`
    pub fn block_mask(&self, start: usize, end: usize) -> Tensor<4, Bool> {
        let block = self.query_block.max(1);
        let index = start / block;
        let is_own_block = start.is_multiple_of(block) && (start + block).min(self.seq_len) == end;
        match self.block_masks.get(index) {
            Some(mask) if is_own_block => mask.clone(),
            _ => self.build_block_mask(start, end),
        }
    }

    fn build_block_mask(&self, start: usize, end: usize) -> Tensor<4, Bool> {
        let device = self.attention_mask.device();
        let [rows, seq] = self.attention_mask.dims();
        let n = end - start;
        let future: Tensor<4, Bool> = Tensor::<2, Bool>::tril_mask([n, end], start as i64, &device)
            .unsqueeze::<4>()
            .expand([rows, 1, n, end]);
        let padded_key: Tensor<4, Bool> = self
            .attention_mask
            .clone()
            .slice([0..rows, 0..end.min(seq)])
            .equal_elem(0)
            .reshape([rows, 1, 1, end])
            .expand([rows, 1, n, end]);
        let mut blocked = future.bool_or(padded_key);
        if let Some(packed) = &self.packed {
            let query_branch = packed
                .branches
                .clone()
                .slice([0..rows, start..end])
                .reshape([rows, 1, n, 1])
                .expand([rows, 1, n, end]);
            let key_branch = packed
                .branches
                .clone()
                .slice([0..rows, 0..end])
                .reshape([rows, 1, 1, end])
                .expand([rows, 1, n, end]);
            let other_branch = key_branch
                .clone()
                .not_equal_elem(0)
                .bool_and(key_branch.not_equal(query_branch));
            blocked = blocked.bool_or(other_branch);
        }
        blocked
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
        match self {
            Self::Llama(m) | Self::Qwen2(m) => m.model.layers.len(),
            Self::Gpt2(m) => m.transformer.h.len(),
        }
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
        let [rows, seq] = attention_mask.dims();
        let device = attention_mask.device();
        let tables = match (c.architecture, &c.rope) {
            (crate::Architecture::Gpt2, _) => None,
            (_, Some(r)) => Some(rope_tables(r, c.head_dim, seq, &device)),
            // Unreachable for configs resolved by this crate; identity rotation as in `forward`.
            (_, None) => Some((
                Tensor::ones([seq, c.head_dim], &device),
                Tensor::zeros([seq, c.head_dim], &device),
            )),
        };
        // Positions never exceed the index in the row, so the tables for `0..T` cover them.
        let rope = tables.map(|(cos, sin)| match &packed {
            None => (cos.unsqueeze::<4>(), sin.unsqueeze::<4>()),
            Some(p) => {
                let at = |table: Tensor<2>| {
                    table
                        .select(0, p.position_ids.clone().reshape([rows * seq]))
                        .reshape([rows, 1, seq, c.head_dim])
                };
                (at(cos), at(sin))
            }
        });
        StackContext {
            attention_mask,
            packed,
            rope,
            seq_len: seq,
            query_block: 1,
            block_masks: Vec::new(),
            fused_causal: false,
        }
        .with_query_block(query_block)
        .with_fused_attention(true)
    }

    /// Input embeddings (GPT-2: token plus learned position embeddings for the context's
    /// positions, `0..T` for plain rows).
    ///
    /// # Shapes
    /// - `input_ids`: `[rows, T]`; output `[rows, T, hidden]`
    pub fn embed(&self, input_ids: Tensor<2, Int>, ctx: &StackContext) -> Tensor<3> {
        match self {
            Self::Llama(m) | Self::Qwen2(m) => embed(&m.model.embed_tokens, input_ids),
            Self::Gpt2(m) => {
                let [_, seq] = input_ids.dims();
                let device = input_ids.device();
                let positions = match &ctx.packed {
                    Some(p) => p.position_ids.clone(),
                    None => Tensor::<1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>(),
                };
                let t = &m.transformer;
                embed(&t.wte, input_ids) + embed(&t.wpe, positions)
            }
        }
    }

    /// Layer `layer`'s attention inputs: pre-attention norm, q/k/v projections split into heads,
    /// RoPE (Llama, Qwen2).
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
        let c = self.config();
        match self {
            Self::Llama(m) | Self::Qwen2(m) => {
                let l = &m.model.layers[layer];
                let a = &l.self_attn;
                let x = l.input_layernorm.forward(x);
                let q = split_heads(
                    a.q_proj.forward(x.clone(), c.matmul_precision),
                    c.num_attention_heads,
                    c.head_dim,
                );
                let k = split_heads(
                    a.k_proj.forward(x.clone(), c.matmul_precision),
                    c.num_key_value_heads,
                    c.head_dim,
                );
                let v = split_heads(
                    a.v_proj.forward(x, c.matmul_precision),
                    c.num_key_value_heads,
                    c.head_dim,
                );
                let (q, k) = match &ctx.rope {
                    Some((cos, sin)) => (
                        apply_rope_tables(q, cos.clone(), sin.clone()),
                        apply_rope_tables(k, cos.clone(), sin.clone()),
                    ),
                    None => (q, k),
                };
                AttentionInputs { q, k, v }
            }
            Self::Gpt2(m) => {
                let b = &m.transformer.h[layer];
                let h = c.hidden_size;
                let qkv = b
                    .attn
                    .c_attn
                    .forward(layer_norm(&b.ln_1, x, c.norm_eps), c.matmul_precision);
                let heads = |i: usize| {
                    split_heads(
                        qkv.clone().narrow(2, i * h, h),
                        c.num_attention_heads,
                        c.head_dim,
                    )
                };
                AttentionInputs {
                    q: heads(0),
                    k: heads(1),
                    v: heads(2),
                }
            }
        }
    }

    /// Attention of the queries `start..start + n` (`q` holds those `n` positions) against
    /// the keys `0..start + n` (`k`, `v` hold exactly those), heads merged.
    ///
    /// # Shapes
    /// - `q`: `[rows, heads, n, head_dim]`; `k`, `v`: `[rows, kv_heads, start + n, head_dim]`
    /// - output: `[rows, n, heads * head_dim]`
    pub fn attention_block(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        ctx: &StackContext,
        start: usize,
    ) -> Tensor<3> {
        let c = self.config();
        let [_, _, n, _] = q.dims();
        let blocked = ctx.block_mask(start, start + n);
        attend(q, k, v, blocked, c.attention_scale, c.kv_groups())
    }

    /// Causal attention over all positions: fused where [`CausalLm::attention_with_state`] can
    /// run it so, else one query block ([`StackContext::query_block`]) at a time.
    ///
    /// # Shapes
    /// - see [`AttentionInputs`]; output `[rows, T, heads * head_dim]`
    pub fn attention(&self, inputs: AttentionInputs, ctx: &StackContext) -> Tensor<3> {
        self.attention_with_state(inputs, ctx).0
    }

    /// [`CausalLm::attention`], plus what its backward needs when it ran fused (PyTorch's
    /// flash-attention kernels on LibTorch's CPU device, for plain right-padded rows and
    /// untracked inputs; see [`FusedAttention`]). Otherwise the attention runs in query blocks
    /// and the state is `None`.
    ///
    /// # Shapes
    /// - see [`AttentionInputs`]; output `[rows, T, heads * head_dim]`
    pub fn attention_with_state(
        &self,
        inputs: AttentionInputs,
        ctx: &StackContext,
    ) -> (Tensor<3>, Option<FusedAttention>) {
        if ctx.fused_causal {
            let c = self.config();
            let fused = crate::fused::causal_attention(
                &inputs.q,
                &inputs.k,
                &inputs.v,
                c.attention_scale,
                c.kv_groups(),
                c.matmul_precision,
            );
            if let Some((output, state)) = fused {
                return (output, Some(state));
            }
        }
        (self.blocked_attention(inputs, ctx), None)
    }

    fn blocked_attention(&self, inputs: AttentionInputs, ctx: &StackContext) -> Tensor<3> {
        let AttentionInputs { q, k, v } = inputs;
        let [rows, heads, seq, head_dim] = q.dims();
        let [_, kv_heads, _, _] = k.dims();
        let blocks: Vec<Tensor<3>> = ctx
            .query_blocks()
            .into_iter()
            .map(|(s, e)| {
                self.attention_block(
                    q.clone().slice([0..rows, 0..heads, s..e, 0..head_dim]),
                    k.clone().slice([0..rows, 0..kv_heads, 0..e, 0..head_dim]),
                    v.clone().slice([0..rows, 0..kv_heads, 0..e, 0..head_dim]),
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

    /// The rest of layer `layer` after the attention: output projection, residual, norm, MLP,
    /// residual.
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
        let c = self.config();
        match self {
            Self::Llama(m) | Self::Qwen2(m) => {
                let l = &m.model.layers[layer];
                let x = x + l.self_attn.o_proj.forward(attention, c.matmul_precision);
                let mlp = l.mlp.forward(
                    l.post_attention_layernorm.forward(x.clone()),
                    c.matmul_precision,
                );
                x + mlp
            }
            Self::Gpt2(m) => {
                let b = &m.transformer.h[layer];
                let x = x + b.attn.c_proj.forward(attention, c.matmul_precision);
                let inner = b.mlp.c_fc.forward(
                    layer_norm(&b.ln_2, x.clone(), c.norm_eps),
                    c.matmul_precision,
                );
                let inner = gpt2_activation(c, inner);
                x + b.mlp.c_proj.forward(inner, c.matmul_precision)
            }
        }
    }

    /// One decoder layer: [`CausalLm::layer_attention_inputs`], [`CausalLm::attention`],
    /// [`CausalLm::layer_after_attention`].
    ///
    /// # Shapes
    /// - `x`: `[rows, T, hidden]`; output `[rows, T, hidden]`
    pub fn layer_forward(&self, layer: usize, x: Tensor<3>, ctx: &StackContext) -> Tensor<3> {
        let inputs = self.layer_attention_inputs(layer, x.clone(), ctx);
        let attention = self.attention(inputs, ctx);
        self.layer_after_attention(layer, x, attention)
    }

    /// The final norm (Llama, Qwen2: `model.norm`; GPT-2: `transformer.ln_f`).
    ///
    /// # Shapes
    /// - `x`: `[rows, T, hidden]` (the last layer's output); output the same shape
    pub fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Llama(m) | Self::Qwen2(m) => m.model.norm.forward(x),
            Self::Gpt2(m) => layer_norm(&m.transformer.ln_f, x, m.config().norm_eps),
        }
    }

    /// Logits from final-norm outputs: the output head, or the token embedding when tied.
    ///
    /// # Shapes
    /// - `x`: `[rows, n, hidden]`; output `[rows, n, vocab]`
    pub fn lm_head(&self, x: Tensor<3>) -> Tensor<3> {
        let precision = self.config().matmul_precision;
        match self {
            Self::Llama(m) | Self::Qwen2(m) => {
                head_logits(x, m.lm_head.as_ref(), &m.model.embed_tokens, precision)
            }
            Self::Gpt2(m) => head_logits(x, m.lm_head.as_ref(), &m.transformer.wte, precision),
        }
    }
}

/// GPT-2's MLP activation, as its block's forward applies it.
fn gpt2_activation(c: &ModelConfig, x: Tensor<3>) -> Tensor<3> {
    match c.activation {
        Activation::Gelu => gelu(x),
        Activation::GeluTanh | Activation::Silu => gelu_approximate(x),
    }
}

/// Whether every row's real tokens (`attention_mask == 1`) come before its padding.
fn real_tokens_lead(attention_mask: &Tensor<2, Int>) -> bool {
    let [_, seq] = attention_mask.dims();
    let Ok(values) = attention_mask
        .clone()
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
    else {
        return false;
    };
    values
        .chunks(seq.max(1))
        .all(|row| row.windows(2).all(|w| w[0] != 0 || w[1] == 0))
}
