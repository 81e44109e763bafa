//! Starting a run: the data, the models and the checks a fresh start, a resume and an
//! evaluation all go through, the reference (model or cache), and the checkpoint a run resumes
//! from.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;

use sdpo_data::{
    BatchSampler, Collator, DEFAULT_MEGABATCH_FACTOR, Fnv1a, PreferenceProcessor,
    PreferenceTokenizer, TokenizedDataset, TokenizerInfo,
};
use sdpo_models::{
    CausalLm, MatmulPrecision, ModelConfig, store_matrices_as, store_product_weights_as,
};

use crate::cache::RefLogpsCache;
use crate::checkpoint::{TrainerState, assign_param_ids, list_checkpoints, read_trainer_state};
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::manifest::{ManifestStatus, verify_manifest};
use crate::observer::TrainObserver;
use crate::reference::{Reference, precompute, weights_fingerprint};
use crate::resume::compare_configs;
use crate::schedule::{LrSchedule, ScheduleParams};
use crate::steps::{IntervalStrategy, RunIntervals, Steps};

/// Wraps a model error with the directory it concerns.
pub(crate) fn model_error(path: &Path) -> impl FnOnce(sdpo_models::ModelError) -> TrainError + '_ {
    move |source| TrainError::Model {
        path: path.to_path_buf(),
        source,
    }
}

/// The tokenized data of a run and how it is batched.
pub(crate) struct RunData {
    /// Where the tokenizer files come from (copied into checkpoints).
    pub tokenizer_dir: PathBuf,
    /// What the training pairs were read from (`train_file`, `dataset_name` or `datasets`).
    pub train_source: PathBuf,
    /// What the evaluation pairs were read from, if any.
    pub eval_source: Option<PathBuf>,
    /// The tokenizer's vocabulary and special tokens.
    pub tokenizer: TokenizerInfo,
    /// The training pairs.
    pub train: TokenizedDataset,
    /// The evaluation pairs.
    pub eval: Option<TokenizedDataset>,
    /// Pads and truncates pairs into batches.
    pub collator: Collator,
}

impl RunData {
    /// Reads and tokenizes the train (and eval) files; reports what was read and skipped.
    pub fn load(
        config: &TrainConfig,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        let tokenizer_dir = config.tokenizer_dir().to_path_buf();
        let tokenizer = PreferenceTokenizer::from_dir(&tokenizer_dir)?;
        let info = tokenizer.info().clone();
        let processor = PreferenceProcessor::new(tokenizer, config.data.clone())?;
        let (train_source, train, eval) = read_splits(config, &processor, observer)?;
        report_data(observer, "train", &train_source, &train);
        if train.is_empty() {
            return Err(TrainError::NoData { path: train_source });
        }
        if let Some((path, eval)) = &eval {
            report_data(observer, "eval", path, eval);
        }
        let (eval_source, eval) = match eval {
            Some((path, eval)) => (Some(path), Some(eval)),
            None => (None, None),
        };
        Ok(Self {
            tokenizer_dir,
            train_source,
            eval_source,
            tokenizer: info,
            collator: processor.collator()?,
            train,
            eval,
        })
    }

    /// The longest row any batch of this run will have, after truncation and padding.
    fn longest_row(&self, config: &TrainConfig) -> usize {
        let longest = self
            .train
            .lengths()
            .into_iter()
            .chain(
                self.eval
                    .as_ref()
                    .map(TokenizedDataset::lengths)
                    .unwrap_or_default(),
            )
            .max()
            .unwrap_or(0);
        match config.data.pad_to_multiple_of.filter(|&m| m > 1) {
            Some(m) => longest.div_ceil(m) * m,
            None => longest,
        }
    }

    /// Checks that `model` (loaded from `dir`) can run this data: every token id is a row of
    /// its embedding, and (GPT-2) every row fits its learned positions. Run for every model
    /// before its first forward pass: the policy, the reference, a checkpoint being resumed or
    /// evaluated.
    pub fn check_model(
        &self,
        model: &CausalLm,
        dir: &Path,
        config: &TrainConfig,
    ) -> Result<(), TrainError> {
        let model_config: &ModelConfig = model.config();
        model_config
            .check_vocab_covers(self.tokenizer.vocab_size)
            .map_err(model_error(dir))?;
        model_config
            .check_sequence_length(self.longest_row(config))
            .map_err(|e| TrainError::Config {
                key: "max_length".into(),
                reason: format!(
                    "`{}`: {e}; set max_length <= {}",
                    dir.display(),
                    model_config.max_position_embeddings
                ),
            })
    }
}

/// The train split and the optional eval split, from `train_file`/`eval_file`, else a
/// `datasets` mixture (eval: its held-out `test` split), else `dataset_name` (eval: its
/// `dataset_test_split` when the dataset has one). `eval_file` always wins for evaluation.
#[allow(clippy::type_complexity)]
fn read_splits(
    config: &TrainConfig,
    processor: &PreferenceProcessor,
    observer: &mut dyn TrainObserver,
) -> Result<
    (
        PathBuf,
        TokenizedDataset,
        Option<(PathBuf, TokenizedDataset)>,
    ),
    TrainError,
> {
    let data = &config.data;
    let eval_file = || -> Result<Option<(PathBuf, TokenizedDataset)>, TrainError> {
        match &config.eval_file {
            Some(path) => Ok(Some((path.clone(), processor.process_eval_file(path)?))),
            None => Ok(None),
        }
    };
    if !config.train_file.as_os_str().is_empty() {
        let train = processor.process_file(&config.train_file)?;
        return Ok((config.train_file.clone(), train, eval_file()?));
    }
    if let Some(mixture) = data.mixture()? {
        if data.dataset_name.is_some() {
            observer.on_message(
                "warning: both `datasets` and `dataset_name` are set: the `datasets` mixture is read and `dataset_name` is ignored (as TRL does)",
            );
        }
        let train = processor.process_mixture(&mixture, "train")?;
        let eval = match eval_file()? {
            Some(eval) => Some(eval),
            None if mixture.split_names().contains(&"test") => Some((
                PathBuf::from("datasets mixture (held-out test split)"),
                processor.process_mixture(&mixture, "test")?,
            )),
            None => None,
        };
        return Ok((PathBuf::from("datasets mixture"), train, eval));
    }
    let Some(name) = &data.dataset_name else {
        return Err(TrainError::Config {
            key: "train_file".into(),
            reason: "is required (or dataset_name, or a datasets mixture)".into(),
        });
    };
    let dataset = PathBuf::from(name);
    let train = processor.process_dataset(&dataset, &data.dataset_train_split)?;
    // As `trl/scripts/dpo.py`: the test split is evaluated only when `eval_strategy` asks for
    // evaluation (TRL's default, "no", reads none).
    let wants_eval = matches!(
        config.eval_strategy,
        Some(IntervalStrategy::Steps | IntervalStrategy::Epoch)
    );
    let eval = match eval_file()? {
        Some(eval) => Some(eval),
        None if !wants_eval => None,
        None if processor.dataset_has_split(&dataset, &data.dataset_test_split)? => Some((
            dataset.clone(),
            processor.process_dataset(&dataset, &data.dataset_test_split)?,
        )),
        None => {
            observer.on_message(&format!(
                "dataset `{name}` has no `{}` split: no evaluation (set dataset_test_split or eval_file)",
                data.dataset_test_split
            ));
            None
        }
    };
    Ok((dataset, train, eval))
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
            "; skipped {} ({} invalid, {} empty after truncation, {} without a scored completion token): {}",
            r.skipped_total(),
            r.skipped_invalid,
            r.dropped_truncated,
            r.dropped_unscored,
            r.reasons.join(" | ")
        ));
    }
    if r.prompts_truncated > 0 {
        msg.push_str(&format!("; {} prompts truncated", r.prompts_truncated));
    }
    if r.prompts_not_prefix > 0 {
        msg.push_str(&format!(
            "; {} prompts whose tokens are not a prefix of prompt + completion (the diverging end of the prompt is left out, as TRL 1.x does)",
            r.prompts_not_prefix
        ));
    }
    if r.pairs_unscored > 0 {
        msg.push_str(&format!(
            "; warning: {} pairs have a completion with no token left to score after truncation to max_length (kept, as TRL 1.x keeps them)",
            r.pairs_unscored
        ));
    }
    observer.on_message(&msg);
}

/// How the training pairs become optimizer steps.
pub(crate) struct Plan {
    /// Shuffles pairs into micro-batches, epoch by epoch.
    pub sampler: BatchSampler,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// The learning rate at each step (and the run's length).
    pub schedule: LrSchedule,
    /// When the run logs, evaluates and saves (ratios resolved against its length).
    pub intervals: RunIntervals,
}

impl Plan {
    /// The plan for the training pairs `train`.
    pub fn new(config: &TrainConfig, train: &TokenizedDataset) -> Result<Self, TrainError> {
        let data_seed = config.data_seed.unwrap_or(config.seed);
        let mut sampler =
            BatchSampler::new(train.len(), config.per_device_train_batch_size, data_seed)?;
        if config.group_by_length {
            sampler = sampler.with_length_grouping(train.lengths(), DEFAULT_MEGABATCH_FACTOR)?;
        }
        let steps_per_epoch = sampler
            .num_batches()
            .div_ceil(config.gradient_accumulation_steps)
            .max(1);
        let total_steps = if config.max_steps > 0 {
            config.max_steps as usize
        } else {
            ((config.num_train_epochs * steps_per_epoch as f64).ceil() as usize).max(1)
        };
        let schedule = run_schedule(config, total_steps)?;
        let intervals = RunIntervals::resolve(&config.step_settings(), total_steps);
        Ok(Self {
            sampler,
            steps_per_epoch,
            schedule,
            intervals,
        })
    }
}

/// The learning-rate schedule of a run of `total_steps`: `warmup_steps` (a ratio below 1 is a
/// fraction of the run, rounded up, as transformers 5), else `warmup_ratio`.
pub(crate) fn run_schedule(
    config: &TrainConfig,
    total_steps: usize,
) -> Result<LrSchedule, TrainError> {
    let warmup = match config.warmup_steps {
        Steps::Count(0) => (config.warmup_ratio * total_steps as f64).ceil() as usize,
        steps => steps.resolve(total_steps),
    };
    let params = ScheduleParams::from_kwargs(
        config.lr_scheduler_type,
        config.learning_rate,
        config.lr_scheduler_kwargs.as_ref(),
    )
    .map_err(|reason| TrainError::Config {
        key: "lr_scheduler_kwargs".into(),
        reason,
    })?;
    Ok(LrSchedule::with_params(
        config.lr_scheduler_type,
        config.learning_rate,
        warmup,
        total_steps,
        params,
    ))
}

/// Loads the policy's starting weights (or builds them from the config) on `device`.
pub(crate) fn load_initial_policy(
    config: &TrainConfig,
    device: &Device,
) -> Result<CausalLm, TrainError> {
    let dir = &config.model_name_or_path;
    if config.init_from_config {
        let model_config = ModelConfig::from_pretrained_dir(dir).map_err(model_error(dir))?;
        Ok(CausalLm::from_config(&model_config, config.seed, device))
    } else {
        CausalLm::from_pretrained(dir, device).map_err(model_error(dir))
    }
}

/// With `use_peft`, gives the base model its adapters: loaded from `peft_adapter_path`, or new
/// ones from the `lora_*` keys initialised from `seed`. The base is frozen either way (only the
/// adapters, and `lora_modules_to_save`, train). Without `use_peft`, returns `base` as it is.
pub(crate) fn attach_adapters(
    config: &TrainConfig,
    base: CausalLm,
) -> Result<CausalLm, TrainError> {
    if !config.use_peft {
        return Ok(base);
    }
    match &config.peft_adapter_path {
        Some(dir) => base.load_adapter(dir).map_err(model_error(dir)),
        None => base
            .attach_lora(&config.lora_config(), config.seed)
            .map_err(|e| TrainError::Config {
                key: match &e {
                    sdpo_models::ModelError::UnknownTargetModules { key, .. }
                        if key == "modules_to_save" =>
                    {
                        "lora_modules_to_save"
                    }
                    sdpo_models::ModelError::UnknownTargetModules { .. } => "lora_target_modules",
                    _ => "use_peft",
                }
                .into(),
                reason: e.to_string(),
            }),
    }
}

/// Whether `dir` holds a PEFT adapter (a LoRA checkpoint or final output) rather than a full
/// model.
pub(crate) fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(sdpo_models::lora::ADAPTER_CONFIG_FILE).is_file()
}

/// The policy saved in `dir` on `device`: a full model, or (when `dir` holds a PEFT adapter)
/// the adapter loaded onto the base of `initial` (the run's base model, adapters removed).
pub(crate) fn saved_policy(
    dir: &Path,
    initial: &CausalLm,
    device: &Device,
) -> Result<CausalLm, TrainError> {
    if is_adapter_dir(dir) {
        let policy = initial
            .without_adapters()
            .load_adapter(dir)
            .map_err(model_error(dir))?;
        Ok(policy.fork(device))
    } else {
        CausalLm::from_pretrained(dir, device).map_err(model_error(dir))
    }
}

/// The reference side of the loss. With `reference_free` none is loaded or run; otherwise the
/// model at `ref_model_name_or_path` or a frozen copy of `initial` (with `use_peft`: `initial`
/// with its adapters disabled, sharing the base weights with the policy), or (with
/// `precompute_ref_log_probs`) their log-probs, cached under `output_dir`.
pub(crate) fn build_reference(
    config: &TrainConfig,
    initial: &CausalLm,
    data: &RunData,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<Reference, TrainError> {
    if config.loss.reference_free {
        if let Some(dir) = &config.ref_model_name_or_path {
            observer.on_message(&format!(
                "warning: reference_free = true: the reference `{}` is not loaded",
                dir.display()
            ));
        }
        return Ok(Reference::None);
    }
    let model = match &config.ref_model_name_or_path {
        Some(dir) => {
            if let Some(warning) = check_reference_tokenizer(dir, &data.tokenizer)? {
                observer.on_message(&warning);
            }
            let model = CausalLm::from_pretrained(dir, device).map_err(model_error(dir))?;
            data.check_model(&model, dir, config)?;
            model.with_matmul_precision(initial.config().matmul_precision)
        }
        None => initial.valid().without_adapters(),
    };
    let model = match config.ref_dtype {
        Some(dtype) if !device.supports_dtype(dtype.dtype()) => {
            observer.on_message(&format!(
                "warning: ref_dtype = \"{}\", but this backend cannot hold {} tensors: the \
                 reference stays float32",
                dtype.as_str(),
                dtype.as_str()
            ));
            model
        }
        Some(dtype) => store_matrices_as(model, dtype.dtype()),
        // The reference's products run in the low dtype already; holding their weights there
        // changes no bit and saves the casts and half their memory. A LoRA reference shares
        // its base weights with the policy, so a copy would add memory instead.
        None if model.config().matmul_precision != MatmulPrecision::F32 && !config.use_peft => {
            let dtype = model.config().matmul_precision.dtype();
            store_product_weights_as(model, dtype)
        }
        None => model,
    };
    if !config.precompute_ref_log_probs {
        return Ok(Reference::Model(Box::new(model)));
    }
    let (ref_dir, seed) = match &config.ref_model_name_or_path {
        Some(dir) => (dir.clone(), None),
        None => (
            config.model_name_or_path.clone(),
            config.init_from_config.then_some(config.seed),
        ),
    };
    let fingerprint = weights_fingerprint(&ref_dir, seed)?;
    let train = cached_or_computed(
        config,
        "train",
        &data.train,
        fingerprint,
        &model,
        data,
        device,
        observer,
    )?;
    let eval = match &data.eval {
        Some(eval) => Some(cached_or_computed(
            config,
            "eval",
            eval,
            fingerprint,
            &model,
            data,
            device,
            observer,
        )?),
        None => None,
    };
    Ok(Reference::Precomputed { train, eval })
}

/// The reference must use the policy's tokenizer: same vocabulary and special tokens. Returns a
/// warning when the reference directory has no tokenizer to compare.
fn check_reference_tokenizer(
    dir: &Path,
    policy: &TokenizerInfo,
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
    dataset: &TokenizedDataset,
    fingerprint: u64,
    model: &CausalLm,
    data: &RunData,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<RefLogpsCache, TrainError> {
    let mut h = Fnv1a::new();
    h.write_u64(dataset.content_hash());
    h.write_str(&format!(
        "max_length={:?};max_prompt_length={:?};truncation_mode={}",
        config.data.max_length,
        config.data.max_prompt_length(),
        config.data.truncation_mode().as_str()
    ));
    if config.gradient_checkpointing {
        // The engine's chunked forward and the whole-batch forward agree to rounding only (and
        // the engine's blocks and chunks follow the budget): a cache from the run's own path
        // keeps SDPO's first scores exactly 0 with the initial policy as reference.
        h.write_str(&format!(
            "logps_path=bounded;memory_budget_mib={};max_buffer_mib={}",
            config.memory_budget_mib, config.max_buffer_mib
        ));
    }
    if config.uses_shared_prompt() {
        // The shared-prompt rows agree with two rows per pair to rounding only.
        h.write_str("layout=shared_prompt");
    }
    let precision = model.config().matmul_precision;
    if precision != MatmulPrecision::F32 {
        h.write_str(&format!("matmul_precision={}", precision.name()));
    }
    if let Some(dtype) = config.ref_dtype {
        h.write_str(&format!("ref_dtype={}", dtype.as_str()));
    }
    h.write_u64(fingerprint);
    let key = h.finish();
    let path = RefLogpsCache::path(&config.output_dir, split, key);
    if path.is_file() {
        match RefLogpsCache::load(&path, key) {
            Ok(cache) if cache.pairs.len() == dataset.len() => {
                observer.on_message(&format!(
                    "{split}: reusing precomputed reference log-probs `{}`",
                    path.display()
                ));
                return Ok(cache);
            }
            Ok(cache) => observer.on_message(&format!(
                "warning: `{}` holds {} pairs, the data {}: recomputing it",
                path.display(),
                cache.pairs.len(),
                dataset.len()
            )),
            Err(err) => observer.on_message(&format!("warning: {err}: recomputing it")),
        }
    }
    observer.on_message(&format!(
        "{split}: precomputing reference log-probs for {} pairs",
        dataset.len()
    ));
    let batch_size = config
        .precompute_ref_batch_size
        .unwrap_or(if split == "train" {
            config.per_device_train_batch_size
        } else {
            config.per_device_eval_batch_size
        });
    let cache = precompute(
        model,
        dataset,
        &data.collator,
        batch_size,
        &config.logps_path(),
        key,
        path.clone(),
        device,
    )?;
    cache.save(&path)?;
    Ok(cache)
}

/// A checkpoint the run resumes from, read and checked.
pub(crate) struct ResumePoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its `trainer_state.json`.
    pub state: TrainerState,
}

/// Verifies a checkpoint's files against its manifest (a warning when it predates manifests).
pub(crate) fn verify_checkpoint(
    dir: &Path,
    observer: &mut dyn TrainObserver,
) -> Result<(), TrainError> {
    if verify_manifest(dir)? == ManifestStatus::Missing {
        observer.on_message(&format!(
            "warning: `{}` has no manifest.json (written by sdpo-rs since checkpoints carry \
             one); its files cannot be verified",
            dir.display()
        ));
    }
    Ok(())
}

/// Reads and checks the checkpoint at `dir` for resuming with `config`: its files against the
/// manifest, its trainer state, and its configuration against the current one (keys that
/// change the data, the model or the loss are refused; others are reported).
pub(crate) fn resume_point(
    dir: &Path,
    config: &TrainConfig,
    total_steps: usize,
    observer: &mut dyn TrainObserver,
) -> Result<ResumePoint, TrainError> {
    verify_checkpoint(dir, observer)?;
    let state = read_trainer_state(dir)?;
    let diff = compare_configs(&state.config, config);
    if !diff.errors.is_empty() {
        return Err(TrainError::ConfigChanged {
            checkpoint: dir.to_path_buf(),
            differences: diff.errors,
        });
    }
    for warning in diff.warnings {
        observer.on_message(&format!(
            "warning: resuming `{}` with a changed setting: {warning}",
            dir.display()
        ));
    }
    if state.global_step > total_steps {
        return Err(TrainError::Config {
            key: "max_steps".into(),
            reason: format!(
                "the checkpoint is at step {} but the run has {total_steps} steps",
                state.global_step
            ),
        });
    }
    Ok(ResumePoint {
        dir: dir.to_path_buf(),
        state,
    })
}

/// Loads a checkpoint's policy on `device` with the parameter ids its optimizer state is keyed
/// by, checked against the data like any other model. A LoRA checkpoint's adapter is loaded
/// onto the base of `initial`.
pub(crate) fn resumed_policy(
    point: &ResumePoint,
    initial: &CausalLm,
    data: &RunData,
    config: &TrainConfig,
    device: &Device,
) -> Result<CausalLm, TrainError> {
    let dir = &point.dir;
    if config.use_peft != is_adapter_dir(dir) {
        return Err(TrainError::Config {
            key: "use_peft".into(),
            reason: format!(
                "is {} but the checkpoint `{}` holds {}",
                config.use_peft,
                dir.display(),
                if config.use_peft {
                    "a full model"
                } else {
                    "a LoRA adapter"
                }
            ),
        });
    }
    let policy = saved_policy(dir, initial, device)?;
    data.check_model(&policy, dir, config)?;
    assign_param_ids(policy, &point.state.param_ids, dir)
}

/// A warning when a fresh run starts in an `output_dir` that holds another run's checkpoints.
pub(crate) fn warn_existing_checkpoints(
    config: &TrainConfig,
    observer: &mut dyn TrainObserver,
) -> Result<(), TrainError> {
    let existing = list_checkpoints(&config.output_dir)?;
    if !existing.is_empty() {
        let names: Vec<String> = existing
            .iter()
            .map(|(_, dir)| {
                dir.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        observer.on_message(&format!(
            "warning: `{}` already holds checkpoints ({}) and this run starts from scratch: \
             each is replaced when this run saves the same step (use \
             --resume-from-checkpoint latest to continue instead)",
            config.output_dir.display(),
            names.join(", ")
        ));
    }
    Ok(())
}
