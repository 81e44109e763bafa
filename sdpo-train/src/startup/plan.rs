//! How the training pairs become optimizer steps: the sampler, the steps per epoch, the
//! learning-rate schedule and the intervals of logging, evaluation and saving.

use sdpo_data::{BatchSampler, DEFAULT_MEGABATCH_FACTOR, TokenizedDataset};

use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::schedule::{LrSchedule, ScheduleParams};
use crate::steps::{RunIntervals, Steps};

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
