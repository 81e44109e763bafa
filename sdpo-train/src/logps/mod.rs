//! Per-token completion log-probs of a model on a preference batch, and the policy's
//! gradients of a loss on them: the one way every stage of a run computes them.
//!
//! A [`LogpsPath`] says how: the whole graph ([`MemoryMode::Whole`]) or the memory-bounded
//! engine ([`MemoryMode::Bounded`], module `engine`), over two rows per pair or the
//! shared-prompt rows ([`RowLayout`]). The reference, evaluation, `sdpo inspect` and the
//! reference cache call [`LogpsPath::logps`]; a training micro-step calls
//! [`policy_gradients`], which runs the policy's forward and backward on the path and hands the
//! log-probs to the caller's loss in between. One path for all of them keeps SDPO's first scores
//! `ref - policy` exactly 0 when the reference is the initial policy.
//!
//! - `batch`: the collated batch on the device ([`DeviceBatch`]) and the per-side result
//!   ([`SidedLogps`]).
//! - `rows`: the whole-graph forward over two rows per pair (TRL's concatenated forward).
//! - `layout`: the rows of a batch as the forward sees them (two rows, or one shared-prompt row
//!   per pair) and the positions the log-probs are read at.
//! - `engine`: the forward in pieces (query blocks, head chunks at completion positions) and
//!   the policy's backward by per-layer recomputation ([`policy_step`]).

mod batch;
mod engine;
mod layout;
mod rows;

use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use sdpo_models::CausalLm;

pub use batch::{DeviceBatch, SidedLogps};
pub use engine::{
    ChunkedLogps, DEFAULT_MAX_BUFFER_BYTES, DEFAULT_MEMORY_BUDGET_BYTES, MAX_QUERY_BLOCK,
    MemoryBudget, PositionExtra, chunked_logps, chunked_logps_with, hidden_state_bytes,
    layout_logps, policy_step, streamed_logps, wpo_log_sum_sq_probs,
};
pub use layout::RowLayout;
pub use rows::{MAX_LOGITS_PER_PASS, model_logps, model_logps_chunked};

use crate::config::TrainConfig;
use crate::error::TrainError;

/// The policy's per-token log-probs on `batch` (with WPO's `log(sum_v p_v^2)` when
/// `log_sum_sq_probs`), `loss` on them, and the gradient of the loss `loss` returns with respect
/// to every trainable parameter of `policy` (on an autodiff device), whatever the path:
/// autodiff through the whole forward on [`MemoryMode::Whole`], the engine's recomputation
/// ([`policy_step`]) on [`MemoryMode::Bounded`]. Both give the same gradients up to rounding.
///
/// `loss` returns the scalar `[1]` to differentiate (scale it there, e.g. by a
/// gradient-accumulation weight) and anything else the caller wants back (metrics, detached).
/// Whatever else the loss needs (the reference's log-probs) is computed before this call, so
/// that no other model runs while the policy's activations are held.
pub fn policy_gradients<M>(
    policy: &CausalLm,
    batch: &DeviceBatch,
    path: &LogpsPath,
    log_sum_sq_probs: bool,
    loss: impl FnOnce(SidedLogps) -> Result<(Tensor<1>, M), TrainError>,
) -> Result<(M, GradientsParams), TrainError> {
    match path.memory {
        MemoryMode::Whole => {
            let logps = path.logps(policy, batch, log_sum_sq_probs)?;
            let (value, output) = loss(logps)?;
            let grads = GradientsParams::from_grads(value.backward(), policy);
            Ok((output, grads))
        }
        MemoryMode::Bounded(budget) => {
            let extra: Option<PositionExtra<'_>> =
                log_sum_sq_probs.then_some(&wpo_log_sum_sq_probs);
            policy_step(policy, batch, &budget, path.layout, extra, |logps| {
                loss(logps.into_sided())
            })
        }
    }
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
    /// [`MAX_LOGITS_PER_PASS`]).
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

    /// The path of a run: `gradient_checkpointing` with `memory_budget_mib` and
    /// `max_buffer_mib`, and `shared_prompt_forward` where the loss allows it.
    pub fn for_config(config: &TrainConfig) -> Self {
        Self::for_run(
            config.gradient_checkpointing,
            MemoryBudget {
                bytes: config.memory_budget_mib << 20,
                max_buffer_bytes: config.max_buffer_mib << 20,
            },
            config.uses_shared_prompt(),
        )
    }

    /// The path of a run's reference cache: [`LogpsPath::for_config`], on the memory-bounded
    /// engine when the reference is streamed layer by layer (`ref_layer_streaming`), which
    /// computes the engine's forward.
    pub fn for_reference_cache(config: &TrainConfig) -> Self {
        let path = Self::for_config(config);
        match path.memory {
            MemoryMode::Whole if config.ref_layer_streaming => Self {
                memory: MemoryMode::Bounded(MemoryBudget {
                    bytes: config.memory_budget_mib << 20,
                    max_buffer_bytes: config.max_buffer_mib << 20,
                }),
                ..path
            },
            _ => path,
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
            (MemoryMode::Whole, RowLayout::TwoRows) => {
                rows::model_logps_chunked(model, batch, MAX_LOGITS_PER_PASS, log_sum_sq_probs)
            }
            (MemoryMode::Whole, layout) => {
                Ok(layout_logps(model, batch, layout, extra)?.into_sided())
            }
            (MemoryMode::Bounded(budget), layout) => {
                Ok(chunked_logps_with(model, batch, &budget, layout, extra)?.into_sided())
            }
        }
    }
}
