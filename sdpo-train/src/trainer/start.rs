//! Starting a run: [`Trainer::new`] puts together the data, the plan, the policy (fresh,
//! resumed or saved weights), the reference and the optimizer.

use super::*;

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
                if dir.join(checkpoint::TRAINER_STATE_FILE).is_file() {
                    verify_checkpoint(dir, observer)?;
                }
                None
            }
            Start::Fresh => None,
        };

        // With TR-DPO, a resumed run, or the evaluation of a checkpoint, continues from the
        // reference that checkpoint holds.
        let reference_checkpoint = match (&resume, start) {
            (Some(point), _) => Some(point.dir.as_path()),
            (None, Start::PolicyWeights(dir)) => sync_reference_of(dir),
            (None, _) => None,
        };
        let StartingModels {
            initial,
            reference,
            scoring,
            precision,
        } = StartingModels::load(&config, device, &data, reference_checkpoint, observer)?;

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
        let mut optimizer = optimizer(&config, &policy);
        if let Some(point) = &resume {
            let path = point.dir.join(OPTIMIZER_FILE);
            check_optimizer_state(&policy, config.optim, &path)?;
            optimizer = load_optimizer(optimizer, &path)?;
        }
        Ok(Self {
            device: device.clone(),
            policy: Some(policy),
            reference,
            scoring,
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
}
