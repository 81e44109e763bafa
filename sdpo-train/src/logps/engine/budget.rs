//! How much transient memory the engine's head chunks and attention blocks may use.

/// Default [`MemoryBudget::bytes`]: `memory_budget_mib`'s default
/// ([`crate::config::DEFAULT_MEMORY_BUDGET_MIB`]).
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = crate::config::DEFAULT_MEMORY_BUDGET_MIB << 20;

/// Default [`MemoryBudget::max_buffer_bytes`]: `max_buffer_mib`'s default
/// ([`crate::config::DEFAULT_MAX_BUFFER_MIB`]).
pub const DEFAULT_MAX_BUFFER_BYTES: u64 = crate::config::DEFAULT_MAX_BUFFER_MIB << 20;

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
pub(crate) const FLOAT_BYTES: u64 = 4;
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

/// The budget of the whole-graph path through the forward in pieces: head chunks of
/// [`crate::logps::MAX_LOGITS_PER_PASS`], attention blocks within one GPU buffer.
pub(crate) const WHOLE_GRAPH_BUDGET: MemoryBudget = MemoryBudget {
    bytes: u64::MAX,
    max_buffer_bytes: crate::logps::MAX_LOGITS_PER_PASS as u64 * FLOAT_BYTES,
};

/// The most query positions of one attention block, on every path: block `[s, e)` scores
/// only the keys `0..e`, so small blocks skip most of the causally masked half of the scores
/// (and the `exp` of masked scores, which is slow on the CPU). Measured on SmolLM2 at 1024
/// tokens with the shared-prompt rows, where large blocks also score much of the other
/// completion: docs/benchmarks.md.
pub const MAX_QUERY_BLOCK: usize = 128;
