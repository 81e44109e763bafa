//! One collated batch as inspection shows it ([`inspect_batch`]): the models' per-token
//! log-probs and, per column, `sdpo-core`'s selection or a token-level method's weights, read
//! back to the host.

use burn::tensor::{Bool, Device, Tensor};

use sdpo_core::{PreferenceLoss, TokenLogps};
use sdpo_data::PreferenceBatch;
use sdpo_models::CausalLm;

use super::{InspectedPair, InspectedSequence};
use crate::error::TrainError;
use crate::logps::{DeviceBatch, LogpsPath};
use crate::objective::token_logps;
use crate::reference::{Reference, Split};
use crate::scoring::ScoringModels;

fn host<const D: usize>(tensor: Tensor<D>, what: &'static str) -> Result<Vec<f64>, TrainError> {
    tensor
        .try_into_vec_as::<f64>()
        .map_err(|e| TrainError::DeviceRead {
            tensor: what,
            reason: format!("{e:?}"),
        })
}

fn host_bool(tensor: Tensor<2, Bool>, what: &'static str) -> Result<Vec<bool>, TrainError> {
    Ok(host(tensor.float(), what)?
        .into_iter()
        .map(|v| v != 0.0)
        .collect())
}

/// One column of one batch on the host: per side `[B * (T-1)]` kept flags, weights and method
/// scores, per-sequence thresholds and sums, per-pair rewards and losses.
struct HostColumn {
    kept: [Vec<bool>; 2],
    weights: [Vec<f64>; 2],
    /// `None`: the SDPO scores.
    scores: Option<[Vec<f64>; 2]>,
    thresholds: [Vec<f64>; 2],
    /// Policy then reference, per side.
    sums: [[Vec<f64>; 2]; 2],
    rewards: [Vec<f64>; 2],
    losses: Vec<f64>,
}

/// Evaluates one column's loss on `inputs` and reads what inspection shows back to the host.
fn host_column(
    loss: &PreferenceLoss,
    scoring: &ScoringModels,
    inputs: &TokenLogps,
    columns_of: impl FnOnce(&ScoringModels) -> Result<sdpo_core::TokenColumns, TrainError>,
) -> Result<HostColumn, TrainError> {
    let columns = columns_of(scoring)?;
    let out = loss
        .clone()
        .forward_with_columns(inputs, None, &columns)
        .map_err(TrainError::Compute)?;
    let rewards = [
        host(out.chosen_rewards.clone(), "rewards")?,
        host(out.rejected_rewards.clone(), "rewards")?,
    ];
    let losses = host(out.losses[0].1.clone(), "losses")?;
    if let Some(selection) = out.selection {
        let kept = [
            host_bool(selection.chosen_kept, "kept tokens")?,
            host_bool(selection.rejected_kept, "kept tokens")?,
        ];
        let weights = kept
            .clone()
            .map(|side| side.into_iter().map(|k| f64::from(u8::from(k))).collect());
        return Ok(HostColumn {
            kept,
            weights,
            scores: None,
            thresholds: [
                host(selection.chosen_threshold, "thresholds")?,
                host(selection.rejected_threshold, "thresholds")?,
            ],
            sums: [
                [
                    host(selection.sums.policy_chosen, "kept sums")?,
                    host(selection.sums.ref_chosen, "kept sums")?,
                ],
                [
                    host(selection.sums.policy_rejected, "kept sums")?,
                    host(selection.sums.ref_rejected, "kept sums")?,
                ],
            ],
            rewards,
            losses,
        });
    }
    let weights = out.token_weights.ok_or_else(|| TrainError::Config {
        key: "loss_type".into(),
        reason: "inspection shows sdpo and the token-level methods; this loss selects no tokens"
            .into(),
    })?;
    let sums = weights.weighted_sums(inputs);
    let host_weights = [
        host(weights.chosen.clone(), "token weights")?,
        host(weights.rejected.clone(), "token weights")?,
    ];
    let batch = rewards[0].len();
    Ok(HostColumn {
        kept: host_weights
            .clone()
            .map(|side| side.into_iter().map(|w| w != 0.0).collect()),
        weights: host_weights,
        scores: Some([
            host(weights.chosen_scores, "token scores")?,
            host(weights.rejected_scores, "token scores")?,
        ]),
        thresholds: [vec![f64::NAN; batch], vec![f64::NAN; batch]],
        sums: [
            [
                host(sums.policy_chosen, "weighted sums")?,
                host(sums.ref_chosen, "weighted sums")?,
            ],
            [
                host(sums.policy_rejected, "weighted sums")?,
                host(sums.ref_rejected, "weighted sums")?,
            ],
        ],
        rewards,
        losses,
    })
}

/// Inspects one collated batch: the policy's and the reference's per-token log-probs, and for
/// each column of `columns` (an `sdpo` loss at one threshold, or a token-level method's loss
/// with its scoring models) `sdpo-core`'s selection or weights, the kept (weighted) sums, the
/// rewards and the per-pair losses. Pair `row` of the result is row `row` of `host_batch`; its
/// `index` is `host_batch.pair_indices[row]` and its `origin` is left empty.
///
/// The models run on `path` (the run's [`LogpsPath::for_config`]). `policy` is a
/// plain (non-autodiff) model; `split` picks the caches' split when the reference or a scoring
/// model is precomputed.
pub fn inspect_batch(
    policy: &CausalLm,
    reference: &Reference,
    path: &LogpsPath,
    split: Split,
    host_batch: &PreferenceBatch,
    columns: &[(PreferenceLoss, &ScoringModels)],
    device: &Device,
) -> Result<Vec<InspectedPair>, TrainError> {
    let mut out = Vec::with_capacity(host_batch.batch_size);
    let batch = DeviceBatch::new(host_batch, device);
    let reference = reference.logps(path, split, host_batch, &batch)?;
    let inputs = token_logps(path.logps(policy, &batch, false)?, reference.clone());
    let (b, t) = (host_batch.batch_size, host_batch.seq_len);
    let width = t - 1;
    let read = |x: &Tensor<2>, what| host(x.clone(), what);
    let policy_logps = [
        read(&inputs.policy_chosen_logps, "policy log-probs")?,
        read(&inputs.policy_rejected_logps, "policy log-probs")?,
    ];
    let ref_logps = [
        read(&inputs.ref_chosen_logps, "reference log-probs")?,
        read(&inputs.ref_rejected_logps, "reference log-probs")?,
    ];
    let masks = [
        host_bool(inputs.chosen_loss_mask.clone(), "loss mask")?,
        host_bool(inputs.rejected_loss_mask.clone(), "loss mask")?,
    ];
    let mut per_column = Vec::with_capacity(columns.len());
    for (loss, scoring) in columns {
        per_column.push(host_column(loss, scoring, &inputs, |scoring| {
            scoring.columns(path, split, host_batch, &batch, &reference)
        })?);
    }
    for row in 0..b {
        let index = host_batch.pair_indices[row];
        let ids = host_batch.input_ids_row(row);
        let attention = host_batch.attention_mask_row(row);
        let completion = host_batch.completion_mask_row(row);
        let prompt_ids = (0..t)
            .filter(|&p| attention[p] != 0 && completion[p] == 0)
            .map(|p| ids[p] as u32)
            .collect();
        let sequence = |side: usize| {
            let row_ids = host_batch.input_ids_row(side * b + row);
            let positions: Vec<usize> = (0..width)
                .filter(|&p| masks[side][row * width + p])
                .collect();
            let at = |values: &[f64]| -> Vec<f64> {
                positions.iter().map(|&p| values[row * width + p]).collect()
            };
            let policy = at(&policy_logps[side]);
            let reference = at(&ref_logps[side]);
            let scores: Vec<f64> = policy
                .iter()
                .zip(&reference)
                .map(|(p, r)| if side == 0 { r - p } else { p - r })
                .collect();
            let mut seq = InspectedSequence {
                token_ids: positions.iter().map(|&p| row_ids[p + 1] as u32).collect(),
                policy_logps: policy,
                ref_logps: reference,
                scores: scores.clone(),
                kept: Vec::new(),
                weights: Vec::new(),
                method_scores: Vec::new(),
                thresholds: Vec::new(),
                policy_sums: Vec::new(),
                ref_sums: Vec::new(),
            };
            for column in &per_column {
                seq.kept.push(
                    positions
                        .iter()
                        .map(|&p| column.kept[side][row * width + p])
                        .collect(),
                );
                seq.weights.push(at(&column.weights[side]));
                seq.method_scores.push(match &column.scores {
                    Some(method) => at(&method[side]),
                    None => scores.clone(),
                });
                seq.thresholds.push(column.thresholds[side][row]);
                seq.policy_sums.push(column.sums[side][0][row]);
                seq.ref_sums.push(column.sums[side][1][row]);
            }
            seq
        };
        let chosen = sequence(0);
        let rejected = sequence(1);
        out.push(InspectedPair {
            index,
            origin: String::new(),
            prompt_ids,
            chosen,
            rejected,
            chosen_rewards: per_column.iter().map(|c| c.rewards[0][row]).collect(),
            rejected_rewards: per_column.iter().map(|c| c.rewards[1][row]).collect(),
            losses: per_column.iter().map(|c| c.losses[row]).collect(),
        });
    }
    Ok(out)
}
