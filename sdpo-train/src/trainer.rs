//! The training loop: policy on the autodiff device, reference frozen (or precomputed), the
//! configured loss from `sdpo-core`, gradient accumulation, global-norm clipping, AdamW with
//! a schedule, metrics, evaluation and checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;

use sdpo_core::{Metric, PreferenceLoss, read_metrics};
use sdpo_data::{
    BatchSampler, Collator, PreferenceProcessor, PreferenceTokenizer, TokenizedDataset,
};
use sdpo_models::{CausalLm, ModelConfig, training_device};

use crate::batch::{DeviceBatch, batch_objective};
use crate::cache::{Fnv64, RefLogpsCache};
use crate::checkpoint::{
    self, OPTIMIZER, SCHEDULER, SchedulerState, TrainerState, assign_param_ids, checkpoint_dir,
    commit_dir, copy_tokenizer_files, param_ids, read_trainer_state, rotate, write_json,
};
use crate::clip::{clip_grad_norm, global_grad_norm};
use crate::config::TrainConfig;
use crate::error::{TrainError, io};
use crate::observer::{MetricsFile, MetricsRecord, StepProgress, TrainObserver};
use crate::reference::{Reference, Split, precompute, weights_fingerprint};
use crate::schedule::LrSchedule;

/// Where the policy's weights come from.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// `model_name_or_path` (or a random init from its config).
    Fresh,
    /// A `checkpoint-N` directory: weights, optimizer, schedule position and loss state.
    Resume(&'a Path),
    /// Only the weights of a saved model (for evaluating a checkpoint or a final model); the
    /// reference stays what the configuration says.
    PolicyWeights(&'a Path),
}

/// A configured training run, ready to [`Trainer::train`].
pub struct Trainer {
    config: TrainConfig,
    device: Device,
    policy: CausalLm,
    reference: Reference,
    loss: PreferenceLoss,
    optimizer: ModuleOptimizer,
    tokenizer_dir: PathBuf,
    train: TokenizedDataset,
    eval: Option<TokenizedDataset>,
    collator: Collator,
    sampler: BatchSampler,
    schedule: LrSchedule,
    steps_per_epoch: usize,
    global_step: usize,
    metrics: Option<MetricsFile>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("global_step", &self.global_step)
            .field("total_steps", &self.schedule.total_steps)
            .finish_non_exhaustive()
    }
}

fn model_error(path: &Path) -> impl FnOnce(sdpo_models::ModelError) -> TrainError + '_ {
    move |source| TrainError::Model {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads the policy's starting weights (or builds them from the config) on `device`.
fn load_initial_policy(config: &TrainConfig, device: &Device) -> Result<CausalLm, TrainError> {
    let dir = &config.model_name_or_path;
    if config.init_from_config {
        let model_config = ModelConfig::from_pretrained_dir(dir).map_err(model_error(dir))?;
        Ok(CausalLm::from_config(&model_config, config.seed, device))
    } else {
        CausalLm::from_pretrained(dir, device).map_err(model_error(dir))
    }
}

impl Trainer {
    /// Prepares a run: validates the configuration, reads and tokenizes the data, loads the
    /// models, checks that policy and reference share a tokenizer, and (with
    /// `precompute_ref_log_probs`) fills or reuses the reference cache. See [`Start`] for where
    /// the policy comes from.
    pub fn new(
        config: TrainConfig,
        device: &Device,
        start: Start<'_>,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        let loss = PreferenceLoss::new(config.loss_config())?;

        // Data.
        let tokenizer_dir = config.tokenizer_dir().to_path_buf();
        let tokenizer = PreferenceTokenizer::from_dir(&tokenizer_dir)?;
        let tokenizer_info = tokenizer.info().clone();
        let processor = PreferenceProcessor::new(tokenizer, config.data_config())?;
        let train = processor.process_file(&config.train_file)?;
        report_data(observer, "train", &config.train_file, &train);
        if train.is_empty() {
            return Err(TrainError::Nothing(format!(
                "no usable preference pairs in `{}`",
                config.train_file.display()
            )));
        }
        let eval = match &config.eval_file {
            Some(path) => {
                let eval = processor.process_file(path)?;
                report_data(observer, "eval", path, &eval);
                Some(eval)
            }
            None => None,
        };
        let collator = processor.collator()?;
        let sampler =
            BatchSampler::new(train.len(), config.per_device_train_batch_size, config.seed)?;
        let batches_per_epoch = sampler.num_batches();
        let steps_per_epoch = batches_per_epoch
            .div_ceil(config.gradient_accumulation_steps)
            .max(1);
        let total_steps = if config.max_steps > 0 {
            config.max_steps as usize
        } else {
            ((config.num_train_epochs * steps_per_epoch as f64).ceil() as usize).max(1)
        };
        let schedule = LrSchedule::new(
            config.lr_scheduler_type,
            config.learning_rate,
            config.warmup_steps,
            config.warmup_ratio,
            total_steps,
        );

        // Models: the initial policy on the plain device; the reference is a frozen copy of it
        // unless a path is given.
        let initial = load_initial_policy(&config, device)?;
        check_vocab(&initial, &tokenizer_info, &config.model_name_or_path)?;
        check_positions(&initial, &config, &train, eval.as_ref())?;
        let reference_model = match &config.ref_model_name_or_path {
            Some(dir) => {
                if let Some(warning) = check_reference_tokenizer(dir, &tokenizer_info)? {
                    observer.on_message(&warning);
                }
                let model = CausalLm::from_pretrained(dir, device).map_err(model_error(dir))?;
                check_vocab(&model, &tokenizer_info, dir)?;
                check_positions(&model, &config, &train, eval.as_ref())?;
                Some(model)
            }
            None if config.reference_free => None,
            None => Some(initial.valid()),
        };
        let reference = match reference_model {
            None => Reference::None,
            Some(model) if config.precompute_ref_log_probs => {
                let (ref_dir, seed) = match &config.ref_model_name_or_path {
                    Some(dir) => (dir.clone(), None),
                    None => (
                        config.model_name_or_path.clone(),
                        config.init_from_config.then_some(config.seed),
                    ),
                };
                let fingerprint = weights_fingerprint(&ref_dir, seed)?;
                let batch = config.per_device_eval_batch_size;
                let train_cache = cached_or_computed(
                    &config,
                    "train",
                    &train,
                    fingerprint,
                    &model,
                    &collator,
                    batch,
                    device,
                    observer,
                )?;
                let eval_cache = match &eval {
                    Some(eval) => Some(cached_or_computed(
                        &config,
                        "eval",
                        eval,
                        fingerprint,
                        &model,
                        &collator,
                        batch,
                        device,
                        observer,
                    )?),
                    None => None,
                };
                Reference::Precomputed {
                    train: train_cache,
                    eval: eval_cache,
                }
            }
            Some(model) => Reference::Model(Box::new(model)),
        };

        let optimizer_config = AdamWConfig::new()
            .with_beta_1(config.adam_beta1 as f32)
            .with_beta_2(config.adam_beta2 as f32)
            .with_epsilon(config.adam_epsilon as f32)
            .with_weight_decay(config.weight_decay as f32);
        let mut optimizer = optimizer_config.init();
        let train_device = training_device(device, config.gradient_checkpointing);
        let mut loss = loss;
        let (policy, global_step) = match start {
            Start::Fresh => (initial.fork(&train_device).train(), 0),
            Start::PolicyWeights(dir) => (
                CausalLm::from_pretrained(dir, &train_device)
                    .map_err(model_error(dir))?
                    .train(),
                0,
            ),
            Start::Resume(dir) => {
                let state = read_trainer_state(dir)?;
                let policy =
                    CausalLm::from_pretrained(dir, &train_device).map_err(model_error(dir))?;
                let policy = assign_param_ids(policy, &state.param_ids)?.train();
                let path = dir.join(OPTIMIZER);
                optimizer = optimizer.load(&path).map_err(|e| TrainError::Optimizer {
                    path: path.clone(),
                    reason: format!("{e:?}"),
                })?;
                loss.set_running_moments(state.running_moments);
                observer.on_message(&format!(
                    "resuming from {} at step {}",
                    dir.display(),
                    state.global_step
                ));
                (policy, state.global_step)
            }
        };
        Ok(Self {
            config,
            device: device.clone(),
            policy,
            reference,
            loss,
            optimizer,
            tokenizer_dir,
            train,
            eval,
            collator,
            sampler,
            schedule,
            steps_per_epoch,
            global_step,
            metrics: None,
        })
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.schedule.total_steps
    }

    /// Optimizer steps done.
    pub fn global_step(&self) -> usize {
        self.global_step
    }

    /// The policy being trained.
    pub fn policy(&self) -> &CausalLm {
        &self.policy
    }

    /// The micro-batches (pair indices) of optimizer step `step` (0-based).
    fn step_batches(&self, step: usize) -> Vec<Vec<usize>> {
        let epoch = step / self.steps_per_epoch;
        let within = step % self.steps_per_epoch;
        let batches = self.sampler.epoch(epoch as u64);
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
        let total = self.schedule.total_steps;
        let stop = max_new_steps.map_or(total, |n| (self.global_step + n).min(total));
        let out = &self.config.output_dir;
        std::fs::create_dir_all(out).map_err(io("create directory", out))?;
        // A resumed run keeps the records up to its checkpoint and continues after them.
        let keep = (self.global_step > 0).then_some(self.global_step);
        self.metrics = Some(MetricsFile::open(out, keep)?);
        observer.on_start(self.global_step, total);
        let mut window: Vec<BTreeMap<String, f64>> = Vec::new();
        let mut records = Vec::new();
        while self.global_step < stop {
            let started = Instant::now();
            let (values, tokens) = self.train_step()?;
            let loss = values.get("loss").copied().unwrap_or(f64::NAN);
            if !loss.is_finite() {
                return Err(TrainError::NonFinite {
                    step: self.global_step,
                    value: loss,
                });
            }
            let seconds = started.elapsed().as_secs_f64().max(1e-9);
            observer.on_step(&StepProgress {
                step: self.global_step,
                total_steps: total,
                loss,
                accuracy: values
                    .get("rewards/accuracies")
                    .copied()
                    .unwrap_or(f64::NAN),
                tokens_per_second: tokens as f64 / seconds,
            });
            window.push(values);
            let step = self.global_step;
            let epoch_end = step.is_multiple_of(self.steps_per_epoch);
            if step.is_multiple_of(self.config.logging_steps) || step == total {
                let record = self.record(average(&window), "");
                window.clear();
                self.write(&record)?;
                observer.on_log(&record);
                records.push(record);
            }
            let eval_now = match self.config.eval_steps {
                Some(n) => step.is_multiple_of(n) || step == total,
                None => epoch_end || step == total,
            };
            if eval_now && let Some(record) = self.evaluate()? {
                self.write(&record)?;
                observer.on_eval(&record);
                records.push(record);
            }
            if self.config.save_steps > 0 && step.is_multiple_of(self.config.save_steps) {
                let dir = self.save_checkpoint()?;
                observer.on_checkpoint(&dir);
            }
        }
        if self.global_step == total {
            self.save_final()?;
            observer.on_finish(&self.config.output_dir);
        }
        Ok(records)
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
            epoch: self.global_step as f64 / self.steps_per_epoch as f64,
            values: values
                .into_iter()
                .map(|(k, v)| (format!("{prefix}{k}"), v))
                .collect(),
        }
    }

    /// One optimizer step over `gradient_accumulation_steps` micro-batches. Returns the step's
    /// metrics (read back once) and the number of real tokens processed.
    fn train_step(&mut self) -> Result<(BTreeMap<String, f64>, usize), TrainError> {
        let step = self.global_step;
        let batches = self.step_batches(step);
        let total_pairs: usize = batches.iter().map(Vec::len).sum();
        if total_pairs == 0 {
            return Err(TrainError::Nothing("an optimizer step without data".into()));
        }
        let mut accumulator = GradientsAccumulator::<CausalLm>::new();
        let mut weighted: Vec<Metric> = Vec::new();
        let mut tokens = 0;
        let mut objective = self.loss.clone();
        for indices in &batches {
            let host = self.collator.collate_indices(&self.train, indices)?;
            tokens += DeviceBatch::num_tokens(&host);
            let batch = DeviceBatch::new(&host, &self.device);
            let weight = indices.len() as f64 / total_pairs as f64;
            let (loss, metrics) = batch_objective(
                &self.policy,
                &self.reference,
                Split::Train,
                &host,
                &batch,
                &mut objective,
            )?;
            let grads = (loss * weight).backward();
            let grads = GradientsParams::from_grads(grads, &self.policy);
            accumulator.accumulate(&self.policy, grads);
            accumulate_metrics(&mut weighted, metrics, weight);
        }
        // The bco_pair running mean advances with training batches only.
        self.loss = objective;
        let mut grads = accumulator.grads();
        let grad_norm = global_grad_norm(&self.policy, &grads);
        if let Some(norm) = grad_norm {
            weighted.push(("grad_norm", norm.without_autodiff()));
        }
        let mut values: BTreeMap<String, f64> = read_metrics(weighted)?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let norm = values.get("grad_norm").copied().unwrap_or(0.0);
        clip_grad_norm(&self.policy, &mut grads, norm, self.config.max_grad_norm);
        let lr = self.schedule.lr(step);
        self.policy = self.optimizer.step(lr, self.policy.clone(), grads);
        self.global_step += 1;
        values.insert("learning_rate".into(), lr);
        Ok((values, tokens))
    }

    /// Evaluates the policy on the eval split (if any): weighted means with the `eval_` prefix.
    pub fn evaluate(&mut self) -> Result<Option<MetricsRecord>, TrainError> {
        let Some(eval) = &self.eval else {
            return Ok(None);
        };
        let model = self.policy.valid();
        let indices: Vec<usize> = (0..eval.len()).collect();
        let mut weighted: Vec<Metric> = Vec::new();
        // Evaluation must not advance the bco_pair running mean of training.
        let mut objective = self.loss.clone();
        for chunk in indices.chunks(self.config.per_device_eval_batch_size) {
            let host = self.collator.collate_indices(eval, chunk)?;
            let batch = DeviceBatch::new(&host, &self.device);
            let (_, metrics) = batch_objective(
                &model,
                &self.reference,
                Split::Eval,
                &host,
                &batch,
                &mut objective,
            )?;
            accumulate_metrics(
                &mut weighted,
                metrics,
                chunk.len() as f64 / eval.len() as f64,
            );
        }
        if weighted.is_empty() {
            return Ok(None);
        }
        let values = read_metrics(weighted)?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Ok(Some(self.record(values, "eval_")))
    }

    /// Writes `output_dir/checkpoint-N` (atomically) and rotates old checkpoints.
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
            &tmp.join(SCHEDULER),
            &SchedulerState {
                step: self.global_step,
                last_lr: self.schedule.lr(self.global_step.saturating_sub(1)),
                warmup_steps: self.schedule.warmup_steps,
                total_steps: self.schedule.total_steps,
            },
        )?;
        write_json(
            &tmp.join(checkpoint::TRAINER_STATE),
            &TrainerState {
                global_step: self.global_step,
                epoch: self.global_step as f64 / self.steps_per_epoch as f64,
                max_steps: self.schedule.total_steps,
                running_moments: self.loss.running_moments(),
                param_ids: param_ids(&self.policy),
                config: self.config.clone(),
            },
        )?;
        commit_dir(&tmp, &dir)?;
        rotate(out, self.config.save_total_limit)?;
        Ok(dir)
    }

    fn write_model(&self, dir: &Path) -> Result<(), TrainError> {
        self.policy
            .valid()
            .save_pretrained(dir)
            .map_err(model_error(dir))?;
        copy_tokenizer_files(&self.tokenizer_dir, dir)
    }

    /// Writes the final model (HF layout + tokenizer files) into `output_dir`.
    pub fn save_final(&self) -> Result<(), TrainError> {
        self.write_model(&self.config.output_dir)
    }
}

/// Adds `weight * value` of each metric to the running sums.
fn accumulate_metrics(sums: &mut Vec<Metric>, metrics: Vec<Metric>, weight: f64) {
    if sums.is_empty() {
        sums.extend(metrics.into_iter().map(|(k, v)| (k, v * weight)));
        return;
    }
    for (k, v) in metrics {
        match sums.iter_mut().find(|(name, _)| *name == k) {
            Some((_, sum)) => *sum = sum.clone() + v * weight,
            None => sums.push((k, v * weight)),
        }
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
    // The last step's learning rate and gradient norm, as transformers logs them.
    if let Some(last) = window.last() {
        for key in ["learning_rate", "grad_norm"] {
            if let Some(v) = last.get(key) {
                out.insert(key.into(), *v);
            }
        }
    }
    out
}

fn report_data(
    observer: &mut dyn TrainObserver,
    split: &str,
    path: &Path,
    data: &TokenizedDataset,
) {
    let r = &data.report;
    let mut msg = format!(
        "{split} data `{}`: {} records, {} pairs",
        path.display(),
        r.records_read,
        r.pairs_kept
    );
    if r.skipped_total() > 0 {
        msg.push_str(&format!(
            "; skipped {} ({} invalid, {} empty after truncation): {}",
            r.skipped_total(),
            r.skipped_invalid,
            r.dropped_truncated,
            r.reasons.join(" | ")
        ));
    }
    if r.prompts_truncated > 0 {
        msg.push_str(&format!("; {} prompts truncated", r.prompts_truncated));
    }
    observer.on_message(&msg);
}

/// Every token id of the tokenizer must be a valid row of the model's embedding.
fn check_vocab(
    model: &CausalLm,
    tokenizer: &sdpo_data::TokenizerInfo,
    dir: &Path,
) -> Result<(), TrainError> {
    let vocab = model.config().vocab_size;
    if vocab < tokenizer.vocab_size {
        return Err(TrainError::Config {
            key: "model_name_or_path".into(),
            reason: format!(
                "`{}` has vocab_size {vocab} but the tokenizer has {} tokens",
                dir.display(),
                tokenizer.vocab_size
            ),
        });
    }
    Ok(())
}

/// Models with learned positions (GPT-2) cannot run sequences longer than their table: the
/// longest collated row must fit, or `max_length` must cap it.
fn check_positions(
    model: &CausalLm,
    config: &TrainConfig,
    train: &TokenizedDataset,
    eval: Option<&TokenizedDataset>,
) -> Result<(), TrainError> {
    let model_config = model.config();
    if model_config.architecture != sdpo_models::Architecture::Gpt2 {
        return Ok(());
    }
    let limit = model_config.max_position_embeddings;
    let longest = train
        .lengths()
        .into_iter()
        .chain(eval.map(TokenizedDataset::lengths).unwrap_or_default())
        .max()
        .unwrap_or(0);
    let longest = match config.max_length.filter(|&n| n > 0) {
        Some(max) => longest.min(max),
        None => longest,
    };
    let padded = match config.pad_to_multiple_of.filter(|&m| m > 1) {
        Some(m) => longest.div_ceil(m) * m,
        None => longest,
    };
    if padded > limit {
        return Err(TrainError::Config {
            key: "max_length".into(),
            reason: format!(
                "sequences of {padded} tokens exceed the model's {limit} learned positions \
                 (n_positions); set max_length <= {limit}"
            ),
        });
    }
    Ok(())
}

/// The reference must use the policy's tokenizer: same vocabulary and special tokens. Returns a
/// warning when the reference directory has no tokenizer to compare.
fn check_reference_tokenizer(
    dir: &Path,
    policy: &sdpo_data::TokenizerInfo,
) -> Result<Option<String>, TrainError> {
    if !dir.join("tokenizer.json").is_file() {
        // Nothing to compare beyond the vocabulary size, checked when the model is loaded.
        return Ok(Some(format!(
            "warning: reference `{}` has no tokenizer.json; only its vocabulary size is checked",
            dir.display()
        )));
    }
    let reference = PreferenceTokenizer::from_dir(dir)?;
    let differences = policy.differences(reference.info());
    if differences.is_empty() {
        Ok(None)
    } else {
        Err(TrainError::TokenizerMismatch {
            reference: dir.to_path_buf(),
            differences,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn cached_or_computed(
    config: &TrainConfig,
    split: &str,
    data: &TokenizedDataset,
    fingerprint: u64,
    model: &CausalLm,
    collator: &Collator,
    batch_size: usize,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<RefLogpsCache, TrainError> {
    let mut h = Fnv64::default();
    h.write(&data.content_hash().to_le_bytes());
    h.write_str(&format!(
        "max_length={:?};max_prompt_length={:?};truncation_mode={}",
        config.max_length,
        config.max_prompt_length,
        config.truncation_mode.as_str()
    ));
    h.write(&fingerprint.to_le_bytes());
    let key = h.finish();
    let path = RefLogpsCache::path(&config.output_dir, split, key);
    if path.is_file() {
        let cache = RefLogpsCache::load(&path, key)?;
        if cache.pairs.len() == data.len() {
            observer.on_message(&format!(
                "{split}: reusing precomputed reference log-probs `{}`",
                path.display()
            ));
            return Ok(cache);
        }
    }
    observer.on_message(&format!(
        "{split}: precomputing reference log-probs for {} pairs",
        data.len()
    ));
    let cache = precompute(model, data, collator, batch_size, key, device)?;
    cache.save(&path)?;
    Ok(cache)
}
