//! What SDPO trains on, for `sdpo inspect`: for chosen pairs of the train or eval data, every
//! scored completion token with the policy's and the reference's log-probs and its SDPO score,
//! and for each threshold `q` the tokens `sdpo-core`'s selection keeps, the sequences' score
//! thresholds and kept sums, the rewards and the pair's loss.
//!
//! The numbers come from the same code path as training: the same collation, the same policy
//! forward, the same reference (model or precomputed cache) and `sdpo-core`'s own selection and
//! loss, with `loss_type = "sdpo"` and `sdpo_threshold = q`; nothing is re-implemented.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Bool, Tensor};

use sdpo_core::{LossType, LossTypes, PreferenceLoss};

use burn::tensor::Device;
use sdpo_data::PreferenceBatch;
use sdpo_models::CausalLm;

use crate::checkpoint::{TRAINER_STATE_FILE, saved_policy, verify_checkpoint};
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::logps::{DeviceBatch, LogpsPath};
use crate::objective::token_logps;
use crate::observer::TrainObserver;
use crate::reference::sync::sync_reference_of;
use crate::reference::{Reference, Split};
use crate::startup::{RunData, StartingModels};
use crate::trainer::Trainer;

/// One completion as SDPO sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectedSequence {
    /// The scored completion tokens (after truncation and the next-token shift), in order.
    pub token_ids: Vec<u32>,
    /// The policy's log-prob of each token.
    pub policy_logps: Vec<f64>,
    /// The reference's log-prob of each token.
    pub ref_logps: Vec<f64>,
    /// Each token's SDPO score (chosen `ref - policy`, rejected `policy - ref`).
    pub scores: Vec<f64>,
    /// Per threshold, per token: kept by the selection.
    pub kept: Vec<Vec<bool>>,
    /// Per threshold: the sequence's score threshold (the `q`-quantile of its scores).
    pub thresholds: Vec<f64>,
    /// Per threshold: the policy's log-probs summed over the kept tokens.
    pub policy_sums: Vec<f64>,
    /// Per threshold: the reference's log-probs summed over the kept tokens.
    pub ref_sums: Vec<f64>,
}

/// One pair as SDPO sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectedPair {
    /// The pair's index in its dataset.
    pub index: usize,
    /// Where the pair came from (file and line or index).
    pub origin: String,
    /// The prompt tokens of the chosen row as the model saw them (after truncation).
    pub prompt_ids: Vec<u32>,
    /// The chosen completion.
    pub chosen: InspectedSequence,
    /// The rejected completion.
    pub rejected: InspectedSequence,
    /// Per threshold: `beta * (policy - reference)` of the chosen kept sums.
    pub chosen_rewards: Vec<f64>,
    /// Per threshold: the same for the rejected completion.
    pub rejected_rewards: Vec<f64>,
    /// Per threshold: the pair's SDPO loss.
    pub losses: Vec<f64>,
}

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

/// The models and data `sdpo inspect` scores, without an optimizer or an autodiff copy of
/// the policy: the run's data, the policy (the initial one, or saved weights) and the
/// reference, loaded and checked exactly as [`Trainer::new`] does.
pub struct Inspector {
    config: TrainConfig,
    device: Device,
    data: RunData,
    policy: CausalLm,
    reference: Reference,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("train_pairs", &self.data.train.len())
            .finish_non_exhaustive()
    }
}

impl Inspector {
    /// Reads the run's data and loads its models on `device`: the policy is the initial one, or
    /// the saved model (or PEFT adapter) in `policy_weights`, verified against its manifest
    /// when it is a checkpoint; the reference is what the configuration says (with TR-DPO, the
    /// moving reference the checkpoint holds).
    pub fn new(
        config: TrainConfig,
        device: &Device,
        policy_weights: Option<&Path>,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        PreferenceLoss::new(config.loss.clone()).map_err(TrainError::Loss)?;
        let data = RunData::load(&config, observer)?;
        if let Some(dir) = policy_weights
            && dir.join(TRAINER_STATE_FILE).is_file()
        {
            verify_checkpoint(dir, observer)?;
        }
        let models = StartingModels::load(
            &config,
            device,
            &data,
            policy_weights.and_then(sync_reference_of),
            observer,
        )?;
        let policy = match policy_weights {
            Some(dir) => {
                let policy = saved_policy(dir, &models.initial, device)?;
                data.check_model(&policy, dir, &config)?;
                policy.with_matmul_precision(models.precision)
            }
            None => models.initial,
        };
        Ok(Self {
            config,
            device: device.clone(),
            data,
            policy,
            reference: models.reference,
        })
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Where the reference log-probs come from.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// What inspection scores: this policy, the reference and the data.
    pub fn inspection(&self) -> Inspection<'_> {
        Inspection {
            config: &self.config,
            data: &self.data,
            policy: self.policy.clone(),
            reference: &self.reference,
            device: &self.device,
        }
    }
}

impl Trainer {
    /// What inspection scores: the policy as it stands (without autodiff), the reference and
    /// the run's data.
    pub fn inspection(&self) -> Inspection<'_> {
        Inspection {
            config: self.config(),
            data: self.data(),
            policy: self.policy().valid(),
            reference: self.reference(),
            device: self.device(),
        }
    }
}

/// A policy, a reference and a run's data, ready to inspect: from [`Inspector::inspection`]
/// or [`Trainer::inspection`].
pub struct Inspection<'a> {
    config: &'a TrainConfig,
    data: &'a RunData,
    /// On the plain (non-autodiff) device.
    policy: CausalLm,
    reference: &'a Reference,
    device: &'a Device,
}

impl std::fmt::Debug for Inspection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspection").finish_non_exhaustive()
    }
}

impl Inspection<'_> {
    /// Pairs in the train split, or in the eval split (0 without one).
    pub fn num_pairs(&self, split: Split) -> usize {
        self.data.num_pairs(split)
    }

    /// Inspects the pairs `indices` of `split` at each SDPO threshold of `thresholds`.
    pub fn inspect(
        &self,
        split: Split,
        indices: &[usize],
        thresholds: &[f64],
    ) -> Result<Vec<InspectedPair>, TrainError> {
        let (dataset, file) = match split {
            Split::Train => (&self.data.train, &self.config.train_file),
            Split::Eval => match (&self.data.eval, &self.config.eval_file) {
                (Some(eval), Some(file)) => (eval, file),
                _ => {
                    return Err(TrainError::Config {
                        key: "eval_file".into(),
                        reason: "inspecting the eval split needs an eval_file".into(),
                    });
                }
            },
        };
        if let Some(&bad) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(TrainError::Config {
                key: "--index".into(),
                reason: format!(
                    "pair {bad} is out of range: `{}` has {} pairs (0..{})",
                    file.display(),
                    dataset.len(),
                    dataset.len()
                ),
            });
        }
        let mut losses = Vec::with_capacity(thresholds.len());
        for &q in thresholds {
            let config = sdpo_core::LossConfig {
                loss_type: LossTypes::One(LossType::Sdpo),
                loss_weights: None,
                sdpo_threshold: q,
                ..self.config.loss.clone()
            };
            losses.push(PreferenceLoss::new(config).map_err(TrainError::Loss)?);
        }
        let batch_size = self.config.per_device_eval_batch_size.max(1);
        let mut out = Vec::with_capacity(indices.len());
        for chunk in indices.chunks(batch_size) {
            let host_batch = self.data.collator.collate_indices(dataset, chunk)?;
            let mut pairs = inspect_batch(
                &self.policy,
                self.reference,
                &LogpsPath::for_config(self.config),
                split,
                &host_batch,
                &losses,
                self.device,
            )?;
            for pair in &mut pairs {
                pair.origin = dataset
                    .origins
                    .get(pair.index)
                    .map(ToString::to_string)
                    .unwrap_or_default();
            }
            out.extend(pairs);
        }
        Ok(out)
    }
}

/// Inspects one collated batch: the policy's and the reference's per-token log-probs, and for
/// each loss of `losses` (one `sdpo` loss per threshold) `sdpo-core`'s selection, kept sums,
/// rewards and per-pair losses. Pair `row` of the result is row `row` of `host_batch`; its
/// `index` is `host_batch.pair_indices[row]` and its `origin` is left empty.
///
/// Both models run on `path` (the run's [`LogpsPath::for_config`]). `policy` is a
/// plain (non-autodiff) model; `split` picks the reference cache's split when the
/// reference is precomputed.
pub fn inspect_batch(
    policy: &CausalLm,
    reference: &Reference,
    path: &LogpsPath,
    split: Split,
    host_batch: &PreferenceBatch,
    losses: &[PreferenceLoss],
    device: &Device,
) -> Result<Vec<InspectedPair>, TrainError> {
    let mut out = Vec::with_capacity(host_batch.batch_size);
    let batch = DeviceBatch::new(host_batch, device);
    let reference = reference.logps(path, split, host_batch, &batch)?;
    let inputs = token_logps(path.logps(policy, &batch, false)?, reference);
    let (b, t) = (host_batch.batch_size, host_batch.seq_len);
    let width = t - 1;
    let read = |x: &Tensor<2>, what| host(x.clone(), what);
    let policy_c = read(&inputs.policy_chosen_logps, "policy log-probs")?;
    let policy_r = read(&inputs.policy_rejected_logps, "policy log-probs")?;
    let ref_c = read(&inputs.ref_chosen_logps, "reference log-probs")?;
    let ref_r = read(&inputs.ref_rejected_logps, "reference log-probs")?;
    let mask_c = host_bool(inputs.chosen_loss_mask.clone(), "loss mask")?;
    let mask_r = host_bool(inputs.rejected_loss_mask.clone(), "loss mask")?;
    // Per threshold: kept masks, thresholds, kept sums, rewards, losses.
    let mut per_q = Vec::with_capacity(losses.len());
    for loss in losses {
        let out = loss
            .clone()
            .forward(&inputs, None)
            .map_err(TrainError::Compute)?;
        let selection = out.selection.ok_or_else(|| TrainError::Config {
            key: "loss_type".into(),
            reason: "the sdpo loss returned no token selection".into(),
        })?;
        per_q.push((
            host_bool(selection.chosen_kept, "kept tokens")?,
            host_bool(selection.rejected_kept, "kept tokens")?,
            host(selection.chosen_threshold, "thresholds")?,
            host(selection.rejected_threshold, "thresholds")?,
            [
                host(selection.sums.policy_chosen, "kept sums")?,
                host(selection.sums.ref_chosen, "kept sums")?,
                host(selection.sums.policy_rejected, "kept sums")?,
                host(selection.sums.ref_rejected, "kept sums")?,
            ],
            host(out.chosen_rewards, "rewards")?,
            host(out.rejected_rewards, "rewards")?,
            host(out.losses[0].1.clone(), "losses")?,
        ));
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
            let (mask, pol, rf) = if side == 0 {
                (&mask_c, &policy_c, &ref_c)
            } else {
                (&mask_r, &policy_r, &ref_r)
            };
            let row_ids = host_batch.input_ids_row(side * b + row);
            let positions: Vec<usize> = (0..width).filter(|&p| mask[row * width + p]).collect();
            let policy_logps: Vec<f64> = positions.iter().map(|&p| pol[row * width + p]).collect();
            let ref_logps: Vec<f64> = positions.iter().map(|&p| rf[row * width + p]).collect();
            let scores = policy_logps
                .iter()
                .zip(&ref_logps)
                .map(|(p, r)| if side == 0 { r - p } else { p - r })
                .collect();
            let mut seq = InspectedSequence {
                token_ids: positions.iter().map(|&p| row_ids[p + 1] as u32).collect(),
                policy_logps,
                ref_logps,
                scores,
                kept: Vec::new(),
                thresholds: Vec::new(),
                policy_sums: Vec::new(),
                ref_sums: Vec::new(),
            };
            for (kept_c, kept_r, thr_c, thr_r, sums, ..) in &per_q {
                let kept = if side == 0 { kept_c } else { kept_r };
                seq.kept
                    .push(positions.iter().map(|&p| kept[row * width + p]).collect());
                seq.thresholds
                    .push(if side == 0 { thr_c[row] } else { thr_r[row] });
                seq.policy_sums.push(sums[2 * side][row]);
                seq.ref_sums.push(sums[2 * side + 1][row]);
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
            chosen_rewards: per_q.iter().map(|q| q.5[row]).collect(),
            rejected_rewards: per_q.iter().map(|q| q.6[row]).collect(),
            losses: per_q.iter().map(|q| q.7[row]).collect(),
        });
    }
    Ok(out)
}
