//! The scoring models of the token-level methods: the frozen models whose per-token numbers a
//! method reads besides the policy's and the reference's log-probs (the SePO oracle and its
//! reference, TIS-DPO's contrastive pair, the critical-token pair, the TGDPO reward model),
//! turned into the method's named columns ([`TokenColumns`]) for each batch.
//!
//! Each log-prob model is loaded like the reference ([`crate::reference`]): a directory or a
//! Hub id, its tokenizer checked against the policy's, `ref_dtype`, and with
//! `precompute_ref_log_probs` its log-probs computed once into the reference-cache layout under
//! `output_dir/ref_logps_cache/` (keyed by its own weight files, so each model has its own
//! cache, reused by later runs; `ref_layer_streaming` streams it). The critical-token pair is
//! read for its logits: `p_CE = softmax((1 + gamma) logits+ - gamma logits-)[token]` needs the
//! whole vocabulary of both, so it runs one row at a time; with `precompute_ref_log_probs` its
//! `log p_CE` (a log-prob of the contrastive distribution) is cached the same way, keyed by both
//! models' weight files and `ct_ce_gamma`.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, s};

use sdpo_core::token_methods::critical_token::{self, ce_logps};
use sdpo_core::token_methods::{sepo, tgdpo, tisdpo};
use sdpo_core::{LossType, SidePair, TokenColumns};
use sdpo_data::PreferenceBatch;
use sdpo_models::CausalLm;

use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::logps::{DeviceBatch, LogpsPath};
use crate::observer::TrainObserver;
use crate::precision::run_computation;
use crate::reference::cache::reference_identity;
use crate::reference::{
    ComputingReference, LazyReference, Reference, ReferenceLogps, Split, SplitJob,
    build_frozen_model, precomputed, reference_model,
};
use crate::startup::RunData;

/// A configuration key naming a scoring model, with what it is for.
#[derive(Debug, Clone, Copy)]
pub struct ScoringModelKey {
    /// The key.
    pub key: &'static str,
    /// The method that reads it.
    pub method: LossType,
    /// The model's role, in messages.
    pub role: &'static str,
    /// Whether the method needs it (else it has a default).
    pub required: bool,
}

/// Every scoring-model key, in the order the models are loaded.
pub const SCORING_MODEL_KEYS: [ScoringModelKey; 7] = [
    ScoringModelKey {
        key: "sepo_oracle_model_name_or_path",
        method: LossType::Sepo,
        role: "the SePO oracle",
        required: true,
    },
    ScoringModelKey {
        key: "sepo_oracle_ref_model_name_or_path",
        method: LossType::Sepo,
        role: "the SePO oracle's reference",
        required: false,
    },
    ScoringModelKey {
        key: "tisdpo_positive_model_name_or_path",
        method: LossType::Tisdpo,
        role: "TIS-DPO's positive model",
        required: true,
    },
    ScoringModelKey {
        key: "tisdpo_negative_model_name_or_path",
        method: LossType::Tisdpo,
        role: "TIS-DPO's negative model",
        required: true,
    },
    ScoringModelKey {
        key: "ct_positive_model_name_or_path",
        method: LossType::CriticalToken,
        role: "the critical-token positive model",
        required: true,
    },
    ScoringModelKey {
        key: "ct_negative_model_name_or_path",
        method: LossType::CriticalToken,
        role: "the critical-token negative model",
        required: true,
    },
    ScoringModelKey {
        key: "tgdpo_reward_model_name_or_path",
        method: LossType::Tgdpo,
        role: "the TGDPO reward model",
        required: true,
    },
];

impl TrainConfig {
    /// The value of a scoring-model key ([`SCORING_MODEL_KEYS`]).
    pub fn scoring_model(&self, key: &str) -> Option<&PathBuf> {
        match key {
            "sepo_oracle_model_name_or_path" => &self.sepo_oracle_model_name_or_path,
            "sepo_oracle_ref_model_name_or_path" => &self.sepo_oracle_ref_model_name_or_path,
            "tisdpo_positive_model_name_or_path" => &self.tisdpo_positive_model_name_or_path,
            "tisdpo_negative_model_name_or_path" => &self.tisdpo_negative_model_name_or_path,
            "ct_positive_model_name_or_path" => &self.ct_positive_model_name_or_path,
            "ct_negative_model_name_or_path" => &self.ct_negative_model_name_or_path,
            "tgdpo_reward_model_name_or_path" => &self.tgdpo_reward_model_name_or_path,
            _ => return None,
        }
        .as_ref()
    }

    /// The slot of a scoring-model key (to resolve a Hub id in place).
    pub fn scoring_model_slot(&mut self, key: &str) -> Option<&mut Option<PathBuf>> {
        Some(match key {
            "sepo_oracle_model_name_or_path" => &mut self.sepo_oracle_model_name_or_path,
            "sepo_oracle_ref_model_name_or_path" => &mut self.sepo_oracle_ref_model_name_or_path,
            "tisdpo_positive_model_name_or_path" => &mut self.tisdpo_positive_model_name_or_path,
            "tisdpo_negative_model_name_or_path" => &mut self.tisdpo_negative_model_name_or_path,
            "ct_positive_model_name_or_path" => &mut self.ct_positive_model_name_or_path,
            "ct_negative_model_name_or_path" => &mut self.ct_negative_model_name_or_path,
            "tgdpo_reward_model_name_or_path" => &mut self.tgdpo_reward_model_name_or_path,
            _ => return None,
        })
    }

    /// This configuration training with `method` alone: `loss_type = method`, and the scoring
    /// models of the other methods left out (`sdpo inspect` compares methods of one
    /// configuration that names several methods' models).
    pub fn for_method(&self, method: LossType) -> TrainConfig {
        let mut config = self.clone();
        config.loss.loss_type = sdpo_core::LossTypes::One(method);
        config.without_unused_scoring_models()
    }

    /// This configuration without the scoring models its `loss_type` does not read.
    pub fn without_unused_scoring_models(&self) -> TrainConfig {
        let mut config = self.clone();
        let method = match self.loss.loss_types() {
            [one] => Some(*one),
            _ => None,
        };
        for entry in SCORING_MODEL_KEYS {
            if Some(entry.method) != method
                && let Some(slot) = config.scoring_model_slot(entry.key)
            {
                *slot = None;
            }
        }
        config
    }

    /// Whether the run needs the reference's log-probs: the loss reads them, or (SePO without
    /// `sepo_oracle_ref_model_name_or_path`) they are the oracle's reference. ConfPO, and SePO
    /// with its own oracle reference, load no reference.
    pub fn needs_reference_logps(&self) -> bool {
        if self.loss.reference_free {
            return false;
        }
        // The method's scorer says whether its loss reads the reference (an invalid
        // configuration is refused before any model is built).
        let loss_reads = match self.loss.token_method() {
            Ok(Some(method)) => method.scorer().uses_reference(),
            _ => true,
        };
        let oracle_reference = self.loss.loss_types() == [LossType::Sepo]
            && self.sepo_oracle_ref_model_name_or_path.is_none();
        loss_reads || oracle_reference
    }

    /// Checks the scoring-model keys against `loss_type`: each method's required models are
    /// given, and no model is given for a method the run does not train with.
    pub(crate) fn validate_scoring_models(&self) -> Result<(), TrainError> {
        let method = self.loss.loss_types().first().copied();
        for entry in SCORING_MODEL_KEYS {
            let given = self.scoring_model(entry.key).is_some();
            let reason = if Some(entry.method) != method || self.loss.loss_types().len() != 1 {
                given.then(|| {
                    format!(
                        "names {} and is read with loss_type = \"{}\" only",
                        entry.role, entry.method
                    )
                })
            } else {
                (entry.required && !given).then(|| {
                    format!(
                        "is required with loss_type = \"{}\": {} (a model directory or Hub id \
                         with the policy's tokenizer)",
                        entry.method, entry.role
                    )
                })
            };
            if let Some(reason) = reason {
                return Err(TrainError::Config {
                    key: entry.key.into(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

/// Where one column comes from.
#[derive(Debug)]
enum ColumnSource {
    /// A frozen model's per-token log-probs (a model, or its precomputed cache).
    Logps(Reference),
    /// The run's reference's log-probs (SePO's oracle reference by default).
    RunReference,
    /// Probabilities from cached log-probs (`p_CE` from its cache of `log p_CE`).
    Probabilities(Reference),
}

/// The critical-token pair, read for their logits.
#[derive(Debug)]
pub(crate) struct ContrastivePair {
    positive: Box<CausalLm>,
    negative: Box<CausalLm>,
    gamma: f64,
}

/// The scoring models of a run (none for the DPO family, SDPO and ConfPO).
#[derive(Debug, Default)]
pub struct ScoringModels {
    logps: Vec<(&'static str, ColumnSource)>,
    contrastive: Option<ContrastivePair>,
}

impl ScoringModels {
    /// No scoring models.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether the run has none.
    pub fn is_empty(&self) -> bool {
        self.logps.is_empty() && self.contrastive.is_none()
    }

    /// Loads the scoring models `config`'s method reads (or their caches), each checked
    /// against the data and the policy's tokenizer like the reference.
    pub(crate) fn build(
        config: &TrainConfig,
        initial: &CausalLm,
        data: &RunData,
        device: &Device,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        let mut models = Self::none();
        let Some(&method) = config.loss.loss_types().first() else {
            return Ok(models);
        };
        let mut frozen = |key: &str| -> Result<Option<Reference>, TrainError> {
            let Some(dir) = config.scoring_model(key) else {
                return Ok(None);
            };
            observer.on_message(&format!("{key}: `{}`", dir.display()));
            build_frozen_model(&as_reference(config, dir), initial, data, device, observer)
                .map(Some)
        };
        match method {
            LossType::Sepo => {
                let oracle = frozen("sepo_oracle_model_name_or_path")?
                    .ok_or_else(|| missing("sepo_oracle_model_name_or_path"))?;
                models
                    .logps
                    .push((sepo::ORACLE_COLUMN, ColumnSource::Logps(oracle)));
                let oracle_ref = match frozen("sepo_oracle_ref_model_name_or_path")? {
                    Some(model) => ColumnSource::Logps(model),
                    None => ColumnSource::RunReference,
                };
                models.logps.push((sepo::ORACLE_REF_COLUMN, oracle_ref));
            }
            LossType::Tisdpo => {
                for (key, column) in [
                    (
                        "tisdpo_positive_model_name_or_path",
                        tisdpo::POSITIVE_COLUMN,
                    ),
                    (
                        "tisdpo_negative_model_name_or_path",
                        tisdpo::NEGATIVE_COLUMN,
                    ),
                ] {
                    let model = frozen(key)?.ok_or_else(|| missing(key))?;
                    models.logps.push((column, ColumnSource::Logps(model)));
                }
            }
            LossType::Tgdpo => {
                let key = "tgdpo_reward_model_name_or_path";
                let model = frozen(key)?.ok_or_else(|| missing(key))?;
                models
                    .logps
                    .push((tgdpo::REWARD_COLUMN, ColumnSource::Logps(model)));
            }
            LossType::CriticalToken if config.precompute_ref_log_probs => {
                let cached = cached_contrastive(config, initial, data, device, observer)?;
                models.logps.push((
                    critical_token::CE_PROB_COLUMN,
                    ColumnSource::Probabilities(cached),
                ));
            }
            LossType::CriticalToken => {
                models.contrastive = Some(ContrastivePair::load(
                    config, initial, data, device, observer,
                )?);
            }
            _ => {}
        }
        Ok(models)
    }

    /// The columns of `batch` (collated from `host`, of `split`): each model's log-probs on
    /// `path` (or its cache), the run's reference's where it stands in, `p_CE` of the
    /// critical-token pair.
    pub fn columns(
        &self,
        path: &LogpsPath,
        split: Split,
        host: &PreferenceBatch,
        batch: &DeviceBatch,
        reference: &ReferenceLogps,
    ) -> Result<TokenColumns, TrainError> {
        let mut columns = TokenColumns::new();
        for (name, source) in &self.logps {
            let values = match source {
                ColumnSource::Logps(model) => model.logps(path, split, host, batch)?,
                ColumnSource::RunReference => reference.clone(),
                ColumnSource::Probabilities(cache) => {
                    let logps = cache.logps(path, split, host, batch)?;
                    ReferenceLogps {
                        chosen: logps.chosen.exp(),
                        rejected: logps.rejected.exp(),
                    }
                }
            };
            columns.insert(
                name,
                SidePair {
                    chosen: values.chosen,
                    rejected: values.rejected,
                },
            );
        }
        if let Some(pair) = &self.contrastive {
            let logps = pair.ce_logps(batch)?;
            columns.insert(
                critical_token::CE_PROB_COLUMN,
                SidePair {
                    chosen: logps.chosen.exp(),
                    rejected: logps.rejected.exp(),
                },
            );
        }
        Ok(columns)
    }
}

impl ContrastivePair {
    /// Loads the critical-token pair (`ct_positive_model_name_or_path`,
    /// `ct_negative_model_name_or_path`) like references.
    pub(crate) fn load(
        config: &TrainConfig,
        initial: &CausalLm,
        data: &RunData,
        device: &Device,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        let mut load = |key: &str| -> Result<Box<CausalLm>, TrainError> {
            let dir = config.scoring_model(key).ok_or_else(|| missing(key))?;
            observer.on_message(&format!("{key}: loading `{}`", dir.display()));
            let as_reference = as_reference(config, dir);
            reference_model(&as_reference, Some(initial), data, device, observer).map(Box::new)
        };
        Ok(Self {
            positive: load("ct_positive_model_name_or_path")?,
            negative: load("ct_negative_model_name_or_path")?,
            gamma: config.loss.ct_ce_gamma,
        })
    }

    /// `log p_CE` of every next token of `batch`, `[B, T-1]` per side, one row at a time (the
    /// logits of one row of both models at once at most).
    pub(crate) fn ce_logps(&self, batch: &DeviceBatch) -> Result<SidePair, TrainError> {
        let (b, t) = (batch.batch_size, batch.seq_len);
        let mut rows = Vec::with_capacity(2 * b);
        for row in 0..2 * b {
            let ids = batch.input_ids.clone().slice(s![row..row + 1, ..]);
            let mask = batch.attention_mask.clone().slice(s![row..row + 1, ..]);
            let logits = |model: &CausalLm| {
                model
                    .forward(ids.clone(), mask.clone())
                    .slice(s![.., 0..t - 1, ..])
            };
            let labels = ids.clone().slice(s![.., 1..t]);
            let probs = ce_logps(
                logits(&self.positive),
                logits(&self.negative),
                labels,
                self.gamma,
            )
            .map_err(TrainError::Compute)?;
            rows.push(probs);
        }
        let all = Tensor::cat(rows, 0);
        Ok(SidePair {
            chosen: all.clone().slice(s![0..b, ..]),
            rejected: all.slice(s![b..2 * b, ..]),
        })
    }
}

/// The critical-token pair's `log p_CE` of every split, cached under `output_dir` and keyed by
/// both models' weight files and `ct_ce_gamma` (the models are loaded only when a split has to
/// be computed).
fn cached_contrastive(
    config: &TrainConfig,
    initial: &CausalLm,
    data: &RunData,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<Reference, TrainError> {
    let mut identity = String::from("contrastive-estimate");
    for key in [
        "ct_positive_model_name_or_path",
        "ct_negative_model_name_or_path",
    ] {
        let dir = config.scoring_model(key).ok_or_else(|| missing(key))?;
        identity += &format!(";{key}={}", reference_identity(dir, None)?);
    }
    identity += &format!(";ct_ce_gamma={}", config.loss.ct_ce_gamma);
    let (computation, _) = run_computation(config, device);
    let mut pair = LazyReference::new(|observer: &mut dyn TrainObserver| {
        ContrastivePair::load(config, initial, data, device, observer)
            .map(|pair| ComputingReference::Contrastive(Box::new(pair)))
    });
    let jobs = SplitJob::of_run_with(config, data, computation, identity)?;
    precomputed(config, data, jobs, &mut pair, device, observer)
}

/// `config` with `dir` as its reference model: the scoring model is loaded, checked, stored
/// and cached exactly as a reference at `dir` would be.
fn as_reference(config: &TrainConfig, dir: &Path) -> TrainConfig {
    let mut config = config.clone();
    config.ref_model_name_or_path = Some(dir.to_path_buf());
    config.loss.reference_free = false;
    config.sync_ref_model = false;
    config
}

fn missing(key: &str) -> TrainError {
    TrainError::Config {
        key: key.into(),
        reason: "is required by the configured loss_type".into(),
    }
}
