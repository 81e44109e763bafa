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
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};

use sdpo_core::{Metric, PreferenceLoss, read_metrics};
use sdpo_data::Fnv1a;
use sdpo_models::CausalLm;

use crate::batch::DeviceBatch;
use crate::best::{self, BestMetric, BestTracker};
use crate::checkpoint::{
    self, OPTIMIZER, TrainerState, checkpoint_dir, commit_dir, copy_generation_config,
    copy_tokenizer_files, param_ids, write_json,
};
use crate::clip::{clip_grad_norm, global_grad_norm, scale_grads};
use crate::config::TrainConfig;
use crate::device::training_device;
use crate::engine::{MemoryMode, PositionExtra, policy_step, wpo_log_sum_sq_probs};
use crate::error::{TrainError, io};
use crate::manifest::write_manifest;
use crate::model_card::{self, CardFacts};
use crate::objective::{
    BatchObjective, POLICY_LOGPS_CHECK, REFERENCE_LOGPS_CHECK, accumulate_metrics, batch_objective,
    objective_from_logps,
};
use crate::observer::{MetricsFile, MetricsRecord, StepProgress, TrainObserver};
use crate::optimizer::adamw;
use crate::precision::{LossScale, gradients_overflowed, run_precision};
use crate::ref_sync;
use crate::reference::{Reference, Split};
use crate::run_summary::{
    Session, TokenCounts, end_of_run, eval_speed, non_embedding_params, total_flos,
};
use crate::schedule::LrSchedule;
use crate::startup::{
    Plan, RunData, attach_adapters, build_reference, load_initial_policy, model_error,
    resume_point, resumed_policy, saved_policy, verify_checkpoint, warn_existing_checkpoints,
};
use crate::steps::SaveStrategy;

/// The sub-directory of `output_dir` that receives the merged model of a LoRA run with
/// `merge_adapter_at_end`.
pub const MERGED_DIR: &str = "merged";

mod evaluate;
mod save;
mod step;

use evaluate::warn_non_finite;
use save::load_optimizer;
use step::average;

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
    /// Prepares a run: validates the configuration, reads and tokenizes the data, loads the
    /// models and checks each against the data (vocabulary, positions), checks that policy and
    /// reference share a tokenizer, and (with `precompute_ref_log_probs`) fills or reuses the
    /// reference cache. A resumed checkpoint is verified against its manifest and its
    /// configuration compared with this one. See [`Start`] for where the policy comes from.
    pub fn new(
        config: TrainConfig,
        device: &Device,
        start: Start<'_>,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        let mut loss = PreferenceLoss::new(config.loss.clone()).map_err(TrainError::Loss)?;
        let data = RunData::load(&config, observer)?;
        let plan = Plan::new(&config, &data.train)?;
        // A resume is checked before any model is loaded: a refused checkpoint costs nothing.
        let resume = match start {
            Start::Resume(dir) => Some(resume_point(
                dir,
                &config,
                plan.schedule.total_steps,
                observer,
            )?),
            Start::PolicyWeights(dir) => {
                if dir.join(checkpoint::TRAINER_STATE).is_file() {
                    verify_checkpoint(dir, observer)?;
                }
                None
            }
            Start::Fresh => None,
        };

        let (precision, warning) = run_precision(&config, device);
        if let Some(warning) = warning {
            observer.on_message(&warning);
        }
        let initial = load_initial_policy(&config, device)?.with_matmul_precision(precision);
        data.check_model(&initial, &config.model_name_or_path, &config)?;
        let initial = attach_adapters(&config, initial)?;
        let mut reference = build_reference(&config, &initial, &data, device, observer)?;
        if config.sync_ref_model {
            ref_sync::check_reference(&reference, &initial)?;
            // A resumed run, or the evaluation of a checkpoint, continues from the reference
            // that checkpoint holds.
            let checkpoint = match (&resume, start) {
                (Some(point), _) => Some(point.dir.as_path()),
                (None, Start::PolicyWeights(dir)) if dir.join(ref_sync::REFERENCE_DIR).is_dir() => {
                    Some(dir)
                }
                _ => None,
            };
            if let Some(dir) = checkpoint {
                reference = ref_sync::load_reference(dir, &reference, device)?;
            }
        }

        let train_device = training_device(device);
        let (policy, global_step) = match (start, &resume) {
            (_, Some(point)) => {
                let policy = resumed_policy(point, &initial, &data, &config, &train_device)?;
                loss.set_running_moments(point.state.running_moments);
                observer.on_message(&format!(
                    "resuming from {} at step {}",
                    point.dir.display(),
                    point.state.global_step
                ));
                (policy, point.state.global_step)
            }
            (Start::PolicyWeights(dir), None) => {
                let policy = saved_policy(dir, &initial, &train_device)?;
                data.check_model(&policy, dir, &config)?;
                (policy, 0)
            }
            _ => (initial.fork(&train_device), 0),
        };
        let policy = policy.with_matmul_precision(precision).train();
        let mut optimizer = adamw(&config, &policy);
        if let Some(point) = &resume {
            let path = point.dir.join(OPTIMIZER);
            optimizer = load_optimizer(optimizer, &path)?;
        }
        Ok(Self {
            device: device.clone(),
            policy: Some(policy),
            reference,
            loss,
            optimizer,
            data,
            plan,
            global_step,
            metrics: None,
            fresh: matches!(start, Start::Fresh),
            loss_scale: LossScale::for_precision(precision),
            counts: (global_step == 0).then(TokenCounts::default),
            best: BestTracker {
                metric: BestMetric::for_run(&config),
                state: resume.map(|point| point.state.best).unwrap_or_default(),
                loaded: None,
            },
            config,
        })
    }

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

    /// The run's tokenized data.
    pub(crate) fn data(&self) -> &RunData {
        &self.data
    }

    /// Pairs in the train split, or in the eval split (0 without `eval_file`).
    pub fn num_pairs(&self, split: Split) -> usize {
        match split {
            Split::Train => self.data.train.len(),
            Split::Eval => self.data.eval.as_ref().map_or(0, |e| e.len()),
        }
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

    /// The micro-batches (pair indices) of optimizer step `step` (0-based).
    fn step_batches(&self, step: usize) -> Vec<Vec<usize>> {
        let epoch = step / self.plan.steps_per_epoch;
        let within = step % self.plan.steps_per_epoch;
        let batches = self.plan.sampler.epoch(epoch as u64);
        let accum = self.config.gradient_accumulation_steps;
        batches
            .into_iter()
            .skip(within * accum)
            .take(accum)
            .collect()
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

    /// The tokens of the steps before `global_step`, from the run's deterministic schedule (a
    /// resumed run goes on counting where the interrupted one stopped).
    fn replay_token_counts(&self) -> Result<TokenCounts, TrainError> {
        let mut counts = TokenCounts::default();
        for step in 0..self.global_step {
            for indices in self.step_batches(step) {
                let host = self
                    .data
                    .collator
                    .collate_indices(&self.data.train, &indices)?;
                counts.tokens += DeviceBatch::num_tokens(&host) as u64;
                counts.padded += host.input_ids.len() as u64;
            }
        }
        Ok(counts)
    }

    fn write(&mut self, record: &MetricsRecord) -> Result<(), TrainError> {
        match &mut self.metrics {
            Some(file) => file.append(record),
            None => Ok(()),
        }
    }

    fn record(&self, values: BTreeMap<String, f64>, prefix: &str) -> MetricsRecord {
        MetricsRecord {
            step: self.global_step,
            epoch: self.global_step as f64 / self.plan.steps_per_epoch as f64,
            values: values
                .into_iter()
                .map(|(k, v)| (format!("{prefix}{k}"), v))
                .collect(),
        }
    }
}
