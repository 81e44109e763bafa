//! The training loop: policy on the autodiff device, reference frozen (or precomputed), the
//! configured loss from `sdpo-core`, gradient accumulation, global-norm clipping, AdamW with
//! a schedule, metrics, evaluation and checkpoints.
//!
//! A step is applied only when everything it read back is finite: the loss, the gradient norm
//! and the log-probs of the scored tokens. Otherwise training stops with
//! [`TrainError::NonFinite`] before the optimizer runs, so neither the weights nor the last
//! checkpoint ever hold what a diverged step computed. The one exception is `fp16`'s loss
//! scaling: a step whose gradient norm alone overflowed is skipped (weights untouched) and the
//! scale halved ([`crate::precision::LossScale`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};

use sdpo_core::{Metric, PreferenceLoss, read_metrics};
use sdpo_data::Fnv1a;
use sdpo_models::CausalLm;

use crate::best::{self, BestMetric, BestTracker};
use crate::checkpoint::{
    self, OPTIMIZER_FILE, TrainerState, check_optimizer_state, copy_generation_config,
    copy_tokenizer_files, load_optimizer, param_ids, resume_point, resumed_policy, saved_policy,
    verify_checkpoint, warn_existing_checkpoints, write_checkpoint,
};
use crate::clip::{clip_grad_norm, global_grad_norm, scale_grads};
use crate::config::TrainConfig;
use crate::device::training_device;
use crate::error::{TrainError, io};
use crate::logps::{DeviceBatch, LogpsPath};
use crate::model_card::{self, CardFacts};
use crate::objective::{
    FrozenModels, POLICY_LOGPS_CHECK, REFERENCE_LOGPS_CHECK, accumulate_metrics, batch_objective,
    micro_step,
};
use crate::observer::{MetricsFile, MetricsRecord, StepProgress, TrainObserver};
use crate::optimizer::optimizer;
use crate::precision::{LossScale, gradients_overflowed};
use crate::reference::sync::{self as ref_sync, sync_reference_of};
use crate::reference::{self, Reference, Split};
use crate::run_summary::{
    Session, TokenCounts, end_of_run, eval_speed, non_embedding_params, total_flos,
};
use crate::schedule::LrSchedule;
use crate::scoring::ScoringModels;
use crate::startup::{Plan, RunData, StartingModels, model_error};
use crate::steps::SaveStrategy;

/// The sub-directory of `output_dir` that receives the merged model of a LoRA run with
/// `merge_adapter_at_end`.
pub const MERGED_DIR: &str = "merged";

mod evaluate;
mod records;
mod save;
mod start;
mod step;

use evaluate::warn_non_finite;
use records::average;

/// Where the policy's weights come from.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// `model_name_or_path` (or a random init from its config).
    Fresh,
    /// A `checkpoint-N` directory: weights, optimizer, schedule position and loss state.
    Resume(&'a Path),
    /// Only the weights of a saved model (for evaluating a checkpoint or a final model): a full
    /// model, or a PEFT adapter directory (detected by its `adapter_config.json`), loaded onto
    /// the base `model_name_or_path`; the reference stays what the configuration says.
    PolicyWeights(&'a Path),
}

/// A configured training run, ready to [`Trainer::train`].
pub struct Trainer {
    config: TrainConfig,
    device: Device,
    /// `None` only while the optimizer steps (it then owns the only handle on the weights, so
    /// the update can reuse their memory instead of allocating a second copy).
    policy: Option<CausalLm>,
    reference: Reference,
    /// The token-level method's scoring models.
    scoring: ScoringModels,
    loss: PreferenceLoss,
    optimizer: ModuleOptimizer,
    data: RunData,
    plan: Plan,
    global_step: usize,
    metrics: Option<MetricsFile>,
    /// A fresh start (not a resume): `train` warns about checkpoints of another run.
    fresh: bool,
    /// `fp16`'s dynamic loss scale (off otherwise).
    loss_scale: LossScale,
    /// Tokens trained on so far (`None` until counted: a resumed run replays its schedule).
    counts: Option<TokenCounts>,
    /// The best checkpoint (`metric_for_best_model`, `load_best_model_at_end`).
    best: BestTracker,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("global_step", &self.global_step)
            .field("total_steps", &self.plan.schedule.total_steps)
            .finish_non_exhaustive()
    }
}

/// The names of the finiteness checks read back with a step's metrics (not logged).
const CHECKS: [&str; 2] = [POLICY_LOGPS_CHECK, REFERENCE_LOGPS_CHECK];

/// The metrics of one optimizer step as read back, and the tokens it processed.
struct StepOutcome {
    values: BTreeMap<String, f64>,
    /// Real tokens of the step's rows.
    tokens: usize,
    /// Positions of the step's padded rows.
    padded: usize,
    /// Said to the observer (an `fp16` step skipped for overflowing gradients).
    warning: Option<String>,
}

impl Trainer {
    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.plan.schedule.total_steps
    }

    /// Optimizer steps done.
    pub fn global_step(&self) -> usize {
        self.global_step
    }

    /// The policy being trained.
    pub fn policy(&self) -> &CausalLm {
        self.policy
            .as_ref()
            .expect("the policy is only taken inside an optimizer step")
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The device the run computes on (the policy's, without autodiff).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Where the reference log-probs come from.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The token-level method's scoring models (none for the DPO family and SDPO).
    pub fn scoring(&self) -> &ScoringModels {
        &self.scoring
    }

    /// The reference and the scoring models, as the objective reads them.
    pub(crate) fn frozen(&self) -> FrozenModels<'_> {
        FrozenModels {
            reference: &self.reference,
            scoring: &self.scoring,
        }
    }

    /// The run's tokenized data.
    pub(crate) fn data(&self) -> &RunData {
        &self.data
    }

    /// Pairs in the train split, or in the eval split (0 without `eval_file`).
    pub fn num_pairs(&self, split: Split) -> usize {
        self.data.num_pairs(split)
    }

    /// What reading each data file did: `(split, file, report)`, train first.
    pub fn data_reports(&self) -> Vec<(&'static str, &Path, &sdpo_data::DataReport)> {
        let mut out = vec![(
            "train",
            self.data.train_source.as_path(),
            &self.data.train.report,
        )];
        if let (Some(eval), Some(source)) = (&self.data.eval, &self.data.eval_source) {
            out.push(("eval", source.as_path(), &eval.report));
        }
        out
    }

    fn schedule(&self) -> &LrSchedule {
        &self.plan.schedule
    }

    /// Trains to the end (or until `max_new_steps` more steps, for tests and notebooks), with
    /// logging, evaluation and checkpoints; saves the final model to `output_dir` when the run
    /// is complete. Returns the metrics records written.
    pub fn train(
        &mut self,
        max_new_steps: Option<usize>,
        observer: &mut dyn TrainObserver,
    ) -> Result<Vec<MetricsRecord>, TrainError> {
        let total = self.total_steps();
        let stop = max_new_steps.map_or(total, |n| (self.global_step + n).min(total));
        let out = self.config.output_dir.clone();
        std::fs::create_dir_all(&out).map_err(io("create directory", &out))?;
        if self.fresh && self.global_step == 0 && self.metrics.is_none() {
            warn_existing_checkpoints(&self.config, observer)?;
        }
        let first_call = self.metrics.is_none();
        if first_call {
            self.write_run_files()?;
            // A resumed run keeps the records up to its checkpoint and continues after them.
            let keep = (self.global_step > 0).then_some(self.global_step);
            self.metrics = Some(MetricsFile::open(&out, keep)?);
        }
        let mut records = Vec::new();
        let mut counts = match self.counts {
            Some(counts) => counts,
            None => self.replay_token_counts()?,
        };
        observer.on_start(self.global_step, total);
        if first_call && self.config.eval_on_start {
            // transformers' `eval_on_start`: a check of the evaluation before training; it
            // does not enter the best metric.
            if let Some(record) = self.evaluate()? {
                warn_non_finite(&record, observer);
                self.write(&record)?;
                observer.on_eval(&record);
                records.push(record);
            }
        }
        let mut window: Vec<BTreeMap<String, f64>> = Vec::new();
        let mut session = Session::start();
        while self.global_step < stop {
            let started = Instant::now();
            let StepOutcome {
                mut values,
                tokens,
                padded,
                warning,
            } = self.train_step()?;
            if let Some(warning) = warning {
                observer.on_message(&warning);
            }
            if self.config.sync_ref_model
                && ref_sync::syncs_after(self.global_step, self.config.ref_model_sync_steps)
            {
                let alpha = self.config.ref_model_mixup_alpha;
                let policy = self
                    .policy
                    .as_ref()
                    .expect("the policy is in place between steps");
                ref_sync::synchronise(&mut self.reference, policy, alpha);
            }
            counts.tokens += tokens as u64;
            counts.padded += padded as u64;
            self.counts = Some(counts);
            values.insert("num_tokens".into(), counts.tokens as f64);
            session.steps += 1;
            session.loss_sum += values.get("loss").copied().unwrap_or(f64::NAN);
            let seconds = started.elapsed().as_secs_f64().max(1e-9);
            observer.on_step(&StepProgress {
                step: self.global_step,
                total_steps: total,
                loss: values.get("loss").copied().unwrap_or(f64::NAN),
                accuracy: values
                    .get("rewards/accuracies")
                    .copied()
                    .unwrap_or(f64::NAN),
                tokens_per_second: tokens as f64 / seconds,
                tokens,
                seconds,
            });
            window.push(values);
            let step = self.global_step;
            // The step's own actions, then (at the end of an epoch, or of a run that stops
            // part-way through one) the epoch's, as transformers' training loop.
            let epoch = step as f64 / self.plan.steps_per_epoch as f64;
            let epoch_end = step.is_multiple_of(self.plan.steps_per_epoch) || step == total;
            let intervals = self.plan.intervals;
            let mut passes = vec![intervals.at_step_end(step, total)];
            if epoch_end {
                passes.push(intervals.at_epoch_end(epoch));
            }
            let mut logged = false;
            for actions in passes {
                if actions.log && !logged {
                    logged = true;
                    let record = self.record(average(&window), "");
                    window.clear();
                    self.write(&record)?;
                    observer.on_log(&record);
                    records.push(record);
                }
                let mut save = actions.save;
                if actions.evaluate
                    && let Some(record) = self.evaluate()?
                {
                    warn_non_finite(&record, observer);
                    self.write(&record)?;
                    observer.on_eval(&record);
                    if let Some(metric) = &self.best.metric {
                        let saves = self.config.save_strategy != SaveStrategy::No;
                        let new_best = self.best.state.observe(metric, &record, saves)?;
                        if intervals.save_best {
                            save = new_best;
                        }
                    }
                    records.push(record);
                }
                if save {
                    let dir = self.save_checkpoint()?;
                    observer.on_checkpoint(&dir);
                }
            }
        }
        if self.global_step == total {
            if session.steps > 0 {
                let flos = total_flos(non_embedding_params(self.policy()), counts.padded);
                let values = end_of_run(
                    &self.config,
                    total,
                    self.num_pairs(Split::Train),
                    &session,
                    flos,
                );
                let record = self.record(values, "");
                self.write(&record)?;
                observer.on_log(&record);
                records.push(record);
            }
            self.finish_best(observer)?;
            self.save_final()?;
            observer.on_finish(&self.config.output_dir);
        }
        Ok(records)
    }
}
