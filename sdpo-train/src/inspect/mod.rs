//! What SDPO and the token-level methods train on, for `sdpo inspect`: for chosen pairs of the
//! train or eval data, every scored completion token with the policy's and the reference's
//! log-probs and its SDPO score, and for each column (an SDPO threshold `q`, or a token-level
//! method) the tokens kept, each token's weight and the method's own score, the sequences'
//! score thresholds (SDPO) and kept (weighted) sums, the rewards and the pair's loss.
//!
//! The numbers come from the same code path as training: the same collation, the same policy
//! forward, the same reference (model or precomputed cache), the same scoring models and
//! `sdpo-core`'s own selection, weights and loss (`loss_type = "sdpo"` with
//! `sdpo_threshold = q`, or the method's `loss_type`); nothing is re-implemented.

mod batch;

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use sdpo_core::{LossType, LossTypes, PreferenceLoss};
use sdpo_models::CausalLm;

pub use batch::inspect_batch;

use crate::checkpoint::{TRAINER_STATE_FILE, saved_policy, verify_checkpoint};
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::logps::LogpsPath;
use crate::observer::{SilentObserver, TrainObserver};
use crate::reference::sync::sync_reference_of;
use crate::reference::{Reference, Split};
use crate::scoring::ScoringModels;
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
    /// Per column, per token: kept by the selection (for a weighting method: a non-zero
    /// weight).
    pub kept: Vec<Vec<bool>>,
    /// Per column, per token: the token's weight in the loss (SDPO: 1 kept, 0 dropped).
    pub weights: Vec<Vec<f64>>,
    /// Per column, per token: the column's method's score (SDPO: `scores`).
    pub method_scores: Vec<Vec<f64>>,
    /// Per column: the sequence's score threshold (SDPO: the `q`-quantile of its scores; NaN
    /// for the other methods).
    pub thresholds: Vec<f64>,
    /// Per column: the policy's log-probs summed over the kept tokens (weighted, and divided
    /// by the method's per-sequence divisor, for the token-level methods).
    pub policy_sums: Vec<f64>,
    /// Per column: the same for the reference's log-probs.
    pub ref_sums: Vec<f64>,
}

/// One column of an inspection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InspectColumn {
    /// SDPO at this `sdpo_threshold`.
    Sdpo(f64),
    /// A token-level method (`confpo`, `sepo`, `tisdpo`, `critical_token`, `tgdpo`) with the
    /// configuration's keys and scoring models.
    Method(LossType),
}

impl InspectColumn {
    /// The column's label: `q = 0.6`, or the method's `loss_type`.
    pub fn label(&self) -> String {
        match self {
            Self::Sdpo(q) => format!("q = {q}"),
            Self::Method(method) => method.name().to_string(),
        }
    }
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
    /// Per column: the chosen reward the column's loss logs (SDPO: `beta * (policy -
    /// reference)` of the kept sums).
    pub chosen_rewards: Vec<f64>,
    /// Per column: the same for the rejected completion.
    pub rejected_rewards: Vec<f64>,
    /// Per column: the pair's loss.
    pub losses: Vec<f64>,
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
    scoring: ScoringModels,
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
        // A configuration may name several methods' scoring models to compare them
        // (`InspectColumn::Method`); each is checked when its column is built.
        let run = config.without_unused_scoring_models();
        run.validate()?;
        PreferenceLoss::new(config.loss.clone()).map_err(TrainError::Loss)?;
        let data = RunData::load(&config, observer)?;
        if let Some(dir) = policy_weights
            && dir.join(TRAINER_STATE_FILE).is_file()
        {
            verify_checkpoint(dir, observer)?;
        }
        let models = StartingModels::load(
            &run,
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
            scoring: models.scoring,
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
            scoring: &self.scoring,
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
            scoring: self.scoring(),
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
    /// The scoring models of the run's own method.
    scoring: &'a ScoringModels,
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
        let columns: Vec<InspectColumn> =
            thresholds.iter().map(|&q| InspectColumn::Sdpo(q)).collect();
        self.inspect_columns(split, indices, &columns, &mut SilentObserver)
    }

    /// Inspects the pairs `indices` of `split` in each column of `columns`, side by side. A
    /// method column uses the configuration's keys and, for a method other than the run's
    /// own, loads its scoring models (reporting to `observer`).
    pub fn inspect_columns(
        &self,
        split: Split,
        indices: &[usize],
        columns: &[InspectColumn],
        observer: &mut dyn TrainObserver,
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
        let own_method = match self.config.loss.loss_types() {
            [one] if one.is_token_method() => Some(*one),
            _ => None,
        };
        let mut losses = Vec::with_capacity(columns.len());
        let mut loaded: Vec<Option<ScoringModels>> = Vec::with_capacity(columns.len());
        for column in columns {
            match *column {
                InspectColumn::Sdpo(q) => {
                    let config = sdpo_core::LossConfig {
                        loss_type: LossTypes::One(LossType::Sdpo),
                        loss_weights: None,
                        sdpo_threshold: q,
                        ..self.config.loss.clone()
                    };
                    losses.push(PreferenceLoss::new(config).map_err(TrainError::Loss)?);
                    loaded.push(None);
                }
                InspectColumn::Method(method) => {
                    let config = self.config.for_method(method);
                    config.validate()?;
                    losses
                        .push(PreferenceLoss::new(config.loss.clone()).map_err(TrainError::Loss)?);
                    loaded.push(if own_method == Some(method) {
                        None
                    } else {
                        Some(ScoringModels::build(
                            &config,
                            &self.policy,
                            self.data,
                            self.device,
                            observer,
                        )?)
                    });
                }
            }
        }
        let scored: Vec<(PreferenceLoss, &ScoringModels)> = losses
            .into_iter()
            .zip(&loaded)
            .map(|(loss, models)| (loss, models.as_ref().unwrap_or(self.scoring)))
            .collect();
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
                &scored,
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
