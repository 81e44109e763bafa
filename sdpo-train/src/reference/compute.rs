//! The reference that computes a cache: a model in memory, or a model streamed from its
//! checkpoint one layer at a time (`ref_layer_streaming`), loaded only when some log-prob has
//! to be computed.

use std::ops::Range;

use burn::tensor::{Device, Tensor};

use sdpo_data::{Collator, PreferenceBatch, TokenizedDataset};
use sdpo_models::{CausalLm, StreamedLm};

use super::cache::PairLogps;
use super::scored_positions;
use crate::error::TrainError;
use crate::logps::{DeviceBatch, LogpsPath, MemoryMode, hidden_state_bytes, streamed_logps};
use crate::observer::TrainObserver;

/// A reference ready to compute log-probs.
#[derive(Debug)]
pub(crate) enum ComputingReference {
    /// The whole model in memory.
    Model(Box<CausalLm>),
    /// The model read one piece at a time from its weight files.
    Streamed(Box<StreamedLm>),
    /// The critical-token pair, whose `log p_CE` a cache holds.
    Contrastive(Box<crate::scoring::ContrastivePair>),
}

impl ComputingReference {
    /// The cache entries of the pairs `indices` of `dataset`, in batches of `batch_size`
    /// pairs, computed on `path`: one batch after another in memory; as many batches as the
    /// path's memory budget holds (half of it for their hidden states) per pass over the
    /// layers when streamed (each pass reported to `observer`). `done` receives each batch's
    /// entries, in order, as they finish.
    pub fn logps(
        &mut self,
        batches: &Batches<'_>,
        indices: Range<usize>,
        path: &LogpsPath,
        device: &Device,
        observer: &mut dyn TrainObserver,
        done: &mut dyn FnMut(Vec<PairLogps>) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        let indices: Vec<usize> = indices.collect();
        let chunks: Vec<&[usize]> = indices.chunks(batches.batch_size).collect();
        match self {
            Self::Model(model) => {
                for chunk in chunks {
                    let host = batches.collator.collate_indices(batches.dataset, chunk)?;
                    let out = path.logps(model, &DeviceBatch::new(&host, device), false)?;
                    done(pairs_of(&host, out.chosen, out.rejected)?)?;
                }
            }
            Self::Contrastive(pair) => {
                for chunk in chunks {
                    let host = batches.collator.collate_indices(batches.dataset, chunk)?;
                    let out = pair.ce_logps(&DeviceBatch::new(&host, device))?;
                    done(pairs_of(&host, out.chosen, out.rejected)?)?;
                }
            }
            Self::Streamed(model) => {
                let MemoryMode::Bounded(budget) = path.memory else {
                    return Err(TrainError::Config {
                        key: "ref_layer_streaming".into(),
                        reason: "a streamed reference computes on the memory-bounded engine".into(),
                    });
                };
                let (hidden, layers) = (model.config().hidden_size, model.model().num_layers());
                let mut pass: Vec<PreferenceBatch> = Vec::new();
                let (mut bytes, mut first) = (0u64, indices.first().copied().unwrap_or(0));
                let mut chunks = chunks.into_iter().peekable();
                while let Some(chunk) = chunks.next() {
                    let host = batches.collator.collate_indices(batches.dataset, chunk)?;
                    let end = chunk.last().map_or(first, |last| last + 1);
                    bytes += hidden_state_bytes(host.batch_size, host.seq_len, hidden);
                    pass.push(host);
                    let next_fits = chunks.peek().is_some_and(|_| bytes * 2 < budget.bytes);
                    if next_fits {
                        continue;
                    }
                    observer.on_message(&format!(
                        "{}: streaming the reference's {layers} layers over pairs {first}..{end} \
                         ({} batches, {:.1} MiB of hidden states)",
                        batches.split,
                        pass.len(),
                        bytes as f64 / (1 << 20) as f64
                    ));
                    first = end;
                    let on_device: Vec<DeviceBatch> =
                        pass.iter().map(|h| DeviceBatch::new(h, device)).collect();
                    let outs = streamed_logps(model, &on_device, &budget, path.layout)?;
                    for (host, out) in pass.drain(..).zip(outs) {
                        done(pairs_of(&host, out.chosen, out.rejected)?)?;
                    }
                    bytes = 0;
                }
            }
        }
        Ok(())
    }
}

/// The pairs of a split and how they are cut into batches.
pub(crate) struct Batches<'a> {
    /// `train` or `eval`.
    pub split: &'static str,
    /// The split's pairs.
    pub dataset: &'a TokenizedDataset,
    /// Pads and truncates them.
    pub collator: &'a Collator,
    /// Pairs per batch.
    pub batch_size: usize,
}

/// The per-pair cache entries of one batch's log-probs (`[B, T-1]` per side): each side's
/// values at its scored positions.
fn pairs_of(
    host: &PreferenceBatch,
    chosen: Tensor<2>,
    rejected: Tensor<2>,
) -> Result<Vec<PairLogps>, TrainError> {
    let (b, t) = (host.batch_size, host.seq_len);
    let read = |x: Tensor<2>| {
        x.try_into_vec_as::<f32>()
            .map_err(|e| TrainError::DeviceRead {
                tensor: "reference log-probs",
                reason: format!("{e:?}"),
            })
    };
    let sides = [read(chosen)?, read(rejected)?];
    let mut pairs = Vec::with_capacity(b);
    for row in 0..b {
        let mut kept = [Vec::new(), Vec::new()];
        for (side, values) in sides.iter().enumerate() {
            for pos in scored_positions(host.completion_mask_row(side * b + row)) {
                kept[side].push(values[row * (t - 1) + pos]);
            }
        }
        let [c, r] = kept;
        pairs.push((c, r));
    }
    Ok(pairs)
}

/// The reference, loaded the first time a log-prob has to be computed: a run whose caches are
/// all on disk never loads it.
pub(crate) struct LazyReference<'a> {
    reference: Option<ComputingReference>,
    load: LoadReference<'a>,
}

type LoadReference<'a> =
    Box<dyn FnMut(&mut dyn TrainObserver) -> Result<ComputingReference, TrainError> + 'a>;

impl<'a> LazyReference<'a> {
    /// A reference that `load` builds when first needed.
    pub fn new(
        load: impl FnMut(&mut dyn TrainObserver) -> Result<ComputingReference, TrainError> + 'a,
    ) -> Self {
        Self {
            reference: None,
            load: Box::new(load),
        }
    }

    /// The reference, loaded now if it was not yet.
    pub fn get(
        &mut self,
        observer: &mut dyn TrainObserver,
    ) -> Result<&mut ComputingReference, TrainError> {
        match &mut self.reference {
            Some(reference) => Ok(reference),
            slot @ None => Ok(slot.insert((self.load)(observer)?)),
        }
    }
}
