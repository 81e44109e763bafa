//! The reference side of the loss: a frozen model, log-probs precomputed into a cache, or none;
//! its per-token log-probs of a batch ([`Reference::logps`]), computed before the policy's step.
//!
//! - `build`: which reference a run has, in which dtype ([`build_reference`]).
//! - `cache`: the reference cache in its open format ([`RefLogpsCache`], [`cache::CacheKey`]).
//! - `precompute`: filling or reusing a split's cache, one shard or whole.
//! - `compute`: the reference that fills it: in memory, or streamed one layer at a time from
//!   its weight files (`ref_layer_streaming`).
//! - `job`: `sdpo precompute-ref` ([`precompute_reference`]): whole, one shard, or a merge.
//! - `export`: `sdpo export-pairs` ([`export_pairs`]): the rows for another engine.
//! - `sync`: TR-DPO's moving reference (`sync_ref_model`).

mod build;
pub mod cache;
mod compute;
mod export;
mod job;
mod precompute;
pub mod sync;

use burn::tensor::{Tensor, TensorData};

use sdpo_data::PreferenceBatch;
use sdpo_models::CausalLm;

pub(crate) use build::{build_frozen_model, build_reference, precomputed, reference_model};
pub use cache::RefLogpsCache;
pub(crate) use compute::{ComputingReference, LazyReference};
pub use export::{PAIRS_FORMAT, export_pairs};
pub use job::{PrecomputeJob, precompute_reference};
pub(crate) use precompute::SplitJob;

use crate::error::TrainError;
use crate::logps::{DeviceBatch, LogpsPath};

/// Where reference log-probs come from.
#[derive(Debug)]
pub enum Reference {
    /// A frozen model on the plain (non-autodiff) device.
    Model(Box<CausalLm>),
    /// Per-token log-probs computed once (`precompute_ref_log_probs`).
    Precomputed {
        /// The training split.
        train: Box<RefLogpsCache>,
        /// The evaluation split.
        eval: Option<Box<RefLogpsCache>>,
    },
    /// `reference_free = true`: no reference is loaded or run; the loss ignores it (zeros are
    /// passed).
    None,
}

/// Which data split a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training data.
    Train,
    /// Evaluation data.
    Eval,
}

/// The reference's per-token log-probs of a batch, `[B, T-1]` per side, 0 outside the
/// completion tokens; no gradient.
#[derive(Debug, Clone)]
pub struct ReferenceLogps {
    /// Chosen side.
    pub chosen: Tensor<2>,
    /// Rejected side.
    pub rejected: Tensor<2>,
}

impl Reference {
    /// The reference's per-token log-probs of `batch` (collated from `host`): a reference model
    /// runs on `path`, a cache is read for `split`, and without a reference they are zeros. On
    /// the device of `batch`.
    pub fn logps(
        &self,
        path: &LogpsPath,
        split: Split,
        host: &PreferenceBatch,
        batch: &DeviceBatch,
    ) -> Result<ReferenceLogps, TrainError> {
        let (b, t) = (host.batch_size, host.seq_len);
        let device = batch.input_ids.device();
        let (chosen, rejected) = match self {
            Reference::Model(model) => {
                let out = path.logps(model, batch, false)?;
                (out.chosen, out.rejected)
            }
            Reference::None => (
                Tensor::zeros([b, t - 1], &device),
                Tensor::zeros([b, t - 1], &device),
            ),
            Reference::Precomputed { train, eval } => {
                let cache = match split {
                    Split::Train => train,
                    Split::Eval => eval.as_ref().ok_or_else(|| TrainError::Config {
                        key: "eval_file".into(),
                        reason: "no precomputed reference log-probs for the eval split".into(),
                    })?,
                };
                let (chosen, rejected) = scatter_cached(cache, host)?;
                let upload =
                    |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [b, t - 1]), &device);
                (upload(chosen), upload(rejected))
            }
        };
        Ok(ReferenceLogps { chosen, rejected })
    }
}

/// The positions `0..T-1` of a row's per-token log-probs that score a completion token (the
/// token at `pos + 1` is a completion token): the order in which the cache stores them.
pub(crate) fn scored_positions(completion_mask_row: &[i64]) -> impl Iterator<Item = usize> + '_ {
    (0..completion_mask_row.len().saturating_sub(1))
        .filter(|&pos| completion_mask_row[pos + 1] != 0)
}

/// Places each pair's cached completion log-probs at the batch's loss-mask positions.
fn scatter_cached(
    cache: &RefLogpsCache,
    host: &PreferenceBatch,
) -> Result<(Vec<f32>, Vec<f32>), TrainError> {
    let (b, t) = (host.batch_size, host.seq_len);
    let bad = |reason: String| TrainError::Cache {
        path: cache.path.clone(),
        reason,
    };
    let mut sides = [vec![0f32; b * (t - 1)], vec![0f32; b * (t - 1)]];
    for (side, out) in sides.iter_mut().enumerate() {
        for row in 0..b {
            let pair = host.pair_indices[row];
            let cached = cache
                .pairs
                .get(pair)
                .map(|(c, r)| if side == 0 { c } else { r })
                .ok_or_else(|| {
                    bad(format!(
                        "pair {pair} is not in the cache ({} pairs)",
                        cache.pairs.len()
                    ))
                })?;
            let mut values = cached.iter();
            for pos in scored_positions(host.completion_mask_row(side * b + row)) {
                let v = values.next().ok_or_else(|| {
                    bad(format!(
                        "pair {pair} has more completion tokens than cached"
                    ))
                })?;
                out[row * (t - 1) + pos] = *v;
            }
            if values.next().is_some() {
                return Err(bad(format!(
                    "pair {pair} has fewer completion tokens than cached"
                )));
            }
        }
    }
    let [chosen, rejected] = sides;
    Ok((chosen, rejected))
}
