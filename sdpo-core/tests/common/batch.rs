//! Random preference batches for the property tests.

use burn::tensor::{Bool, Device, Tensor, TensorData};
use proptest::prelude::*;
use sdpo_core::TokenLogps;

/// A random batch: per-token log-probs in (-12, 0) and contiguous completion masks.
#[derive(Debug, Clone)]
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    /// policy chosen, policy rejected, ref chosen, ref rejected, `[batch * seq]` each.
    pub logps: [Vec<f32>; 4],
    /// chosen and rejected loss masks, `[batch * seq]` each.
    pub masks: [Vec<bool>; 2],
}

pub fn batch_strategy(
    max_batch: usize,
    max_seq: usize,
    ties: bool,
) -> impl Strategy<Value = Batch> {
    (1..=max_batch, 1..=max_seq).prop_flat_map(move |(batch, seq)| {
        let n = batch * seq;
        // With `ties`, log-probs come from a small grid so equal scores are common.
        let value = if ties {
            (0u8..4).prop_map(|k| -0.5 * f32::from(k)).boxed()
        } else {
            (-12.0f32..-1e-3).boxed()
        };
        let spans = proptest::collection::vec((0..=seq, 0..=seq), batch * 2);
        (
            proptest::collection::vec(value.clone(), n),
            proptest::collection::vec(value.clone(), n),
            proptest::collection::vec(value.clone(), n),
            proptest::collection::vec(value, n),
            spans,
        )
            .prop_map(move |(a, b, c, d, spans)| {
                let mut masks = [vec![false; n], vec![false; n]];
                for (k, (x, y)) in spans.into_iter().enumerate() {
                    let (side, row) = (k / batch, k % batch);
                    let (start, end) = (x.min(y), x.max(y));
                    for t in start..end {
                        masks[side][row * seq + t] = true;
                    }
                }
                Batch {
                    batch,
                    seq,
                    logps: [a, b, c, d],
                    masks,
                }
            })
    })
}

impl Batch {
    pub fn inputs(&self, device: &Device) -> TokenLogps {
        let f = |v: &Vec<f32>| {
            Tensor::<2>::from_data(TensorData::new(v.clone(), [self.batch, self.seq]), device)
        };
        let m = |v: &Vec<bool>| {
            Tensor::<2, Bool>::from_data(TensorData::new(v.clone(), [self.batch, self.seq]), device)
        };
        TokenLogps {
            policy_chosen_logps: f(&self.logps[0]),
            policy_rejected_logps: f(&self.logps[1]),
            ref_chosen_logps: f(&self.logps[2]),
            ref_rejected_logps: f(&self.logps[3]),
            chosen_loss_mask: m(&self.masks[0]),
            rejected_loss_mask: m(&self.masks[1]),
            policy_chosen_log_sum_sq_probs: None,
            policy_rejected_log_sum_sq_probs: None,
        }
    }

    /// The same batch with `extra` padding columns of garbage under mask 0.
    pub fn padded(&self, extra: usize) -> Batch {
        let seq = self.seq + extra;
        let widen_f = |v: &Vec<f32>| -> Vec<f32> {
            v.chunks(self.seq)
                .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(-3.25, extra)))
                .collect()
        };
        let widen_m = |v: &Vec<bool>| -> Vec<bool> {
            v.chunks(self.seq)
                .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(false, extra)))
                .collect()
        };
        Batch {
            batch: self.batch,
            seq,
            logps: self.logps.clone().map(|v| widen_f(&v)),
            masks: self.masks.clone().map(|v| widen_m(&v)),
        }
    }
}
