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
use crate::checkpoint::{
    self, OPTIMIZER, TrainerState, checkpoint_dir, commit_dir, copy_tokenizer_files, param_ids,
    rotate, write_json,
};
use crate::clip::{clip_grad_norm, global_grad_norm, scale_grads};
use crate::config::TrainConfig;
use crate::device::training_device;
use crate::engine::{MemoryMode, PositionExtra, policy_step, wpo_log_sum_sq_probs};
use crate::error::{TrainError, io};
use crate::manifest::write_manifest;
use crate::objective::{
    BatchObjective, POLICY_LOGPS_CHECK, REFERENCE_LOGPS_CHECK, accumulate_metrics, batch_objective,
    objective_from_logps,
};
use crate::observer::{MetricsFile, MetricsRecord, StepProgress, TrainObserver};
use crate::optimizer::adamw;
use crate::precision::{LossScale, gradients_overflowed, run_precision};
use crate::reference::{Reference, Split};
use crate::run_summary::{
    Session, TokenCounts, end_of_run, eval_speed, non_embedding_params, total_flos,
};
use crate::schedule::LrSchedule;
use crate::startup::{
    Plan, RunData, attach_adapters, build_reference, load_initial_policy, model_error,
    resume_point, resumed_policy, saved_policy, verify_checkpoint, warn_existing_checkpoints,
};

/// The sub-directory of `output_dir` that receives the merged model of a LoRA run with
/// `merge_adapter_at_end`.
pub const MERGED_DIR: &str = "merged";

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
        let reference = build_reference(&config, &initial, &data, device, observer)?;

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
            config,
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
        if self.metrics.is_none() {
            // A resumed run keeps the records up to its checkpoint and continues after them.
            let keep = (self.global_step > 0).then_some(self.global_step);
            self.metrics = Some(MetricsFile::open(&out, keep)?);
        }
        let mut counts = match self.counts {
            Some(counts) => counts,
            None => self.replay_token_counts()?,
        };
        observer.on_start(self.global_step, total);
        let mut window: Vec<BTreeMap<String, f64>> = Vec::new();
        let mut records = Vec::new();
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
            let epoch_end = step.is_multiple_of(self.plan.steps_per_epoch);
            if self.plan.intervals.log_at(step, total) {
                let record = self.record(average(&window), "");
                window.clear();
                self.write(&record)?;
                observer.on_log(&record);
                records.push(record);
            }
            let eval_now = self.plan.intervals.eval_at(step, total, epoch_end);
            if eval_now && let Some(record) = self.evaluate()? {
                warn_non_finite(&record, observer);
                self.write(&record)?;
                observer.on_eval(&record);
                records.push(record);
            }
            if self.plan.intervals.save_at(step) {
                let dir = self.save_checkpoint()?;
                observer.on_checkpoint(&dir);
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

    /// One optimizer step over `gradient_accumulation_steps` micro-batches: accumulate the
    /// gradients, read the metrics, the checks and the gradient norm back in one transfer,
    /// refuse the step if any is not finite, then clip and step AdamW.
    fn train_step(&mut self) -> Result<StepOutcome, TrainError> {
        let step = self.global_step;
        let batches = self.step_batches(step);
        let total_pairs: usize = batches.iter().map(Vec::len).sum();
        if total_pairs == 0 {
            return Err(TrainError::EmptyStep { step: step + 1 });
        }
        if self
            .policy()
            .adapter()
            .is_some_and(|a| a.config.lora_dropout > 0.0)
        {
            // LoRA dropout draws from the backend's generator: seeding it from (seed, step)
            // makes the masks a function of the step, so a resumed run draws the same ones.
            let mut seed = Fnv1a::new();
            seed.write_u64(self.config.seed);
            seed.write_u64(step as u64);
            let seed = seed.finish();
            self.device.seed(seed);
            training_device(&self.device).seed(seed);
        }
        let mut accumulator = GradientsAccumulator::<CausalLm>::new();
        let mut metrics: Vec<Metric> = Vec::new();
        let mut checks: Vec<Metric> = Vec::new();
        let (mut tokens, mut padded) = (0, 0);
        let mut objective = self.loss.clone();
        let path = self.config.logps_path();
        let loss_scale = self.loss_scale.scale();
        for indices in &batches {
            let host = self
                .data
                .collator
                .collate_indices(&self.data.train, indices)?;
            tokens += DeviceBatch::num_tokens(&host);
            padded += host.input_ids.len();
            let batch = DeviceBatch::new(&host, &self.device);
            let weight = indices.len() as f64 / total_pairs as f64;
            // With fp16 the loss (and so every gradient) is multiplied by the loss scale;
            // the metrics keep the weight alone.
            let loss_weight = weight * loss_scale;
            let (out_metrics, out_checks, grads) = match &path.memory {
                MemoryMode::Whole => {
                    let out: BatchObjective = batch_objective(
                        self.policy(),
                        &self.reference,
                        &path,
                        Split::Train,
                        &host,
                        &batch,
                        &mut objective,
                    )?;
                    let grads = (out.loss * loss_weight).backward();
                    let grads = GradientsParams::from_grads(grads, self.policy());
                    (out.metrics, out.checks, grads)
                }
                MemoryMode::Bounded(budget) => {
                    let wpo = objective.config().use_weighting;
                    let extra: Option<PositionExtra<'_>> = wpo.then_some(&wpo_log_sum_sq_probs);
                    let reference = &self.reference;
                    let objective = &mut objective;
                    let ((metrics, checks), grads) =
                        policy_step(self.policy(), &batch, budget, path.layout, extra, |logps| {
                            let out = objective_from_logps(
                                logps.into_sided(),
                                reference,
                                &path,
                                Split::Train,
                                &host,
                                &batch,
                                objective,
                            )?;
                            Ok((out.loss * loss_weight, (out.metrics, out.checks)))
                        })?;
                    (metrics, checks, grads)
                }
            };
            accumulator.accumulate(self.policy(), grads);
            accumulate_metrics(&mut metrics, out_metrics, weight);
            accumulate_metrics(&mut checks, out_checks, 1.0);
        }
        let mut grads = accumulator.grads();
        if let Some(norm) = global_grad_norm(self.policy(), &grads) {
            metrics.push(("grad_norm", norm.without_autodiff()));
        }
        metrics.extend(checks);
        let host = read_metrics(metrics).map_err(TrainError::Compute)?;
        if self.loss_scale.enabled() && gradients_overflowed(&host) {
            return Ok(self.skip_overflowed_step(host, tokens, padded));
        }
        for (name, value) in &host {
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    step: step + 1,
                    quantity: (*name).to_string(),
                    value: *value,
                });
            }
        }
        // Everything is finite: the step may touch the weights and the loss state.
        self.loss = objective;
        let mut values: BTreeMap<String, f64> = host
            .into_iter()
            .filter(|(name, _)| !CHECKS.contains(name))
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if self.loss_scale.enabled() {
            scale_grads(self.policy(), &mut grads, 1.0 / loss_scale);
            if let Some(norm) = values.get_mut("grad_norm") {
                *norm /= loss_scale;
            }
            self.loss_scale.on_finite_step();
        }
        let norm = values.get("grad_norm").copied().unwrap_or(0.0);
        clip_grad_norm(self.policy(), &mut grads, norm, self.config.max_grad_norm);
        let lr = self.schedule().lr(step);
        let policy = self
            .policy
            .take()
            .expect("the policy is only taken inside an optimizer step");
        self.policy = Some(self.optimizer.step(lr, policy, grads));
        self.global_step += 1;
        values.insert("learning_rate".into(), lr);
        Ok(StepOutcome {
            values,
            tokens,
            padded,
            warning: None,
        })
    }

    /// An `fp16` step whose gradients overflowed at the current loss scale: the weights, AdamW
    /// and the loss state stay as they were, the step counts (as in transformers), and the
    /// scale is halved for the next one.
    fn skip_overflowed_step(
        &mut self,
        host: Vec<(&'static str, f64)>,
        tokens: usize,
        padded: usize,
    ) -> StepOutcome {
        let step = self.global_step + 1;
        let scale = self.loss_scale.scale();
        self.loss_scale.on_overflow();
        let mut values: BTreeMap<String, f64> = host
            .into_iter()
            .filter(|(name, _)| !CHECKS.contains(name) && *name != "grad_norm")
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        values.insert("learning_rate".into(), self.schedule().lr(self.global_step));
        self.global_step += 1;
        StepOutcome {
            values,
            tokens,
            padded,
            warning: Some(format!(
                "warning: step {step}: float16 gradients overflowed at loss scale {scale}; the \
                 step is skipped (weights unchanged) and the scale is now {}",
                self.loss_scale.scale()
            )),
        }
    }

    /// Evaluates the policy on the eval split (if any): weighted means with the `eval_` prefix.
    /// A non-finite value is kept as it is (written as `null` in `metrics.jsonl`).
    pub fn evaluate(&mut self) -> Result<Option<MetricsRecord>, TrainError> {
        let Some(eval) = &self.data.eval else {
            return Ok(None);
        };
        let started = Instant::now();
        let model = self.policy().valid();
        let indices: Vec<usize> = (0..eval.len()).collect();
        let mut weighted: Vec<Metric> = Vec::new();
        // Evaluation must not advance the bco_pair running mean of training.
        let mut objective = self.loss.clone();
        let path = self.config.logps_path();
        for chunk in indices.chunks(self.config.per_device_eval_batch_size) {
            let host = self.data.collator.collate_indices(eval, chunk)?;
            let batch = DeviceBatch::new(&host, &self.device);
            let out = batch_objective(
                &model,
                &self.reference,
                &path,
                Split::Eval,
                &host,
                &batch,
                &mut objective,
            )?;
            accumulate_metrics(
                &mut weighted,
                out.metrics,
                chunk.len() as f64 / eval.len() as f64,
            );
        }
        if weighted.is_empty() {
            return Ok(None);
        }
        let mut values: BTreeMap<String, f64> = read_metrics(weighted)
            .map_err(TrainError::Compute)?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // TRL logs the training token count with every evaluation too.
        let tokens = self.counts.map_or(0, |c| c.tokens);
        values.insert("num_tokens".into(), tokens as f64);
        let batches = eval.len().div_ceil(self.config.per_device_eval_batch_size);
        for (key, value) in eval_speed(started, eval.len(), batches) {
            values.insert(key.into(), value);
        }
        Ok(Some(self.record(values, "eval_")))
    }

    /// Writes `output_dir/checkpoint-N` (atomically, with its manifest written last) and
    /// rotates old checkpoints.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let out = &self.config.output_dir;
        let dir = checkpoint_dir(out, self.global_step);
        let tmp = out.join(format!(".tmp-checkpoint-{}", self.global_step));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io("remove stale", &tmp))?;
        }
        self.write_model(&tmp)?;
        let opt_path = tmp.join(OPTIMIZER);
        self.optimizer
            .save(&opt_path)
            .map_err(|e| TrainError::Optimizer {
                path: opt_path.clone(),
                reason: format!("{e:?}"),
            })?;
        write_json(
            &tmp.join(checkpoint::TRAINER_STATE),
            &TrainerState {
                global_step: self.global_step,
                epoch: self.global_step as f64 / self.plan.steps_per_epoch as f64,
                max_steps: self.total_steps(),
                running_moments: self.loss.running_moments(),
                param_ids: param_ids(self.policy()),
                config: self.config.clone(),
            },
        )?;
        write_manifest(&tmp)?;
        commit_dir(&tmp, &dir)?;
        rotate(out, self.config.save_total_limit)?;
        Ok(dir)
    }

    /// Refuses to save weights that are not all finite (an update can overflow even when every
    /// quantity of its step was finite).
    fn check_weights(&self) -> Result<(), TrainError> {
        let count = non_finite_weights(self.policy())?;
        if count > 0 {
            return Err(TrainError::NonFinite {
                step: self.global_step,
                quantity: format!("the updated weights ({count} values)"),
                value: f64::NAN,
            });
        }
        Ok(())
    }

    /// Writes the policy into `dir`: the full model in Hugging Face layout, or, for a LoRA run,
    /// only the adapter in PEFT's layout (`adapter_config.json` + `adapter_model.safetensors`,
    /// with `model_name_or_path` as its base); plus the tokenizer files.
    fn write_model(&self, dir: &Path) -> Result<(), TrainError> {
        self.check_weights()?;
        let policy = self.policy().valid();
        if policy.adapter().is_some() {
            let base = self.config.model_name_or_path.to_string_lossy();
            policy
                .save_adapter(dir, Some(&*base))
                .map_err(model_error(dir))?;
        } else {
            policy.save_pretrained(dir).map_err(model_error(dir))?;
        }
        copy_tokenizer_files(&self.data.tokenizer_dir, dir)
    }

    /// Writes the final model (HF layout + tokenizer files) into `output_dir`; for a LoRA run
    /// the adapter, and with `merge_adapter_at_end` also the merged full model into
    /// `output_dir/merged`.
    pub fn save_final(&self) -> Result<(), TrainError> {
        let out = &self.config.output_dir;
        self.write_model(out)?;
        if self.config.merge_adapter_at_end && self.policy().adapter().is_some() {
            let dir = out.join(MERGED_DIR);
            self.policy()
                .valid()
                .merge_adapters()
                .save_pretrained(&dir)
                .map_err(model_error(&dir))?;
            copy_tokenizer_files(&self.data.tokenizer_dir, &dir)?;
        }
        Ok(())
    }
}

/// Loads the optimizer state of a checkpoint. burn's loader is not hardened against every
/// corrupted file (a checkpoint without a manifest is not verified first), so a panic inside it
/// is turned into an error naming the file.
fn load_optimizer(optimizer: ModuleOptimizer, path: &Path) -> Result<ModuleOptimizer, TrainError> {
    let bad = |reason: String| TrainError::Optimizer {
        path: path.to_path_buf(),
        reason,
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| optimizer.load(path))) {
        Ok(Ok(optimizer)) => Ok(optimizer),
        Ok(Err(e)) => Err(bad(format!("{e:?}"))),
        Err(panic) => Err(bad(format!(
            "unreadable ({})",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the loader panicked")
        ))),
    }
}

/// Counts the non-finite values of every parameter of `model` (one read-back).
fn non_finite_weights(model: &CausalLm) -> Result<u64, TrainError> {
    struct Count(Option<Tensor<1, Int>>);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let bad = param.val().inner().is_finite().bool_not().int().sum();
            self.0 = Some(match self.0.take() {
                Some(total) => total + bad,
                None => bad,
            });
        }
    }
    let mut count = Count(None);
    model.visit(&mut count);
    match count.0 {
        None => Ok(0),
        Some(total) => total
            .try_into_vec_as::<i64>()
            .map(|v| v.first().copied().unwrap_or(0).max(0) as u64)
            .map_err(|e| TrainError::DeviceRead {
                tensor: "weights",
                reason: format!("{e:?}"),
            }),
    }
}

/// Tells the observer which evaluation metrics are not finite (training continues: evaluation
/// does not touch the weights).
fn warn_non_finite(record: &MetricsRecord, observer: &mut dyn TrainObserver) {
    let bad: Vec<&str> = record
        .values
        .iter()
        .filter(|(_, v)| !v.is_finite())
        .map(|(k, _)| k.as_str())
        .collect();
    if !bad.is_empty() {
        observer.on_message(&format!(
            "warning: evaluation at step {} gave non-finite {}",
            record.step,
            bad.join(", ")
        ));
    }
}

/// Mean of each metric over a logging window.
fn average(window: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for values in window {
        for (k, v) in values {
            *out.entry(k.clone()).or_default() += v / window.len() as f64;
        }
    }
    // The last step's learning rate and gradient norm, as transformers logs them, and TRL's
    // running token count.
    if let Some(last) = window.last() {
        for key in ["learning_rate", "grad_norm", "num_tokens"] {
            if let Some(v) = last.get(key) {
                out.insert(key.into(), *v);
            }
        }
    }
    out
}
