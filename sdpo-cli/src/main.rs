//! `sdpo`: train, evaluate and precompute reference log-probs from a TOML configuration.
//!
//! `main` runs `run` and prints any error with its whole cause chain, exiting non-zero: a user
//! mistake (bad config, missing file, bad data) is one clear message, never a backtrace.

mod allocator;
mod args;
mod common_args;
mod device;
mod hub;
mod inspect;
mod merge;
mod progress;
mod report;
mod tracking;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sdpo_train::{
    IntervalStrategy, PrecomputeJob, Start, Trainer, checkpoint::resolve_checkpoint, export_pairs,
    precompute_reference,
};

use sdpo_cli::config_file;

use crate::args::{Cli, Command, CommonArgs};
use crate::progress::{TerminalProgress, format_record};

fn main() -> ExitCode {
    allocator::keep_freed_memory();
    let (args, trl_flags) = sdpo_cli::flags::split_trl_flags(std::env::args().collect());
    let mut cli = Cli::parse_from(args);
    if let Command::Train { common, .. }
    | Command::Eval { common, .. }
    | Command::PrecomputeRef { common, .. }
    | Command::ExportPairs { common, .. } = &mut cli.command
    {
        common.trl_flags = trl_flags;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration with its Hub ids resolved, the device, and TRL's `resume_from_checkpoint`.
pub(crate) fn prepare(
    common: &CommonArgs,
    evaluating: bool,
) -> Result<(
    sdpo_train::TrainConfig,
    burn::tensor::Device,
    Option<String>,
)> {
    let loaded = config_file::load_config(
        common.config.as_deref(),
        &common.trl_flags,
        &common.overrides,
    )?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let mut config = loaded.config;
    hub::resolve_hub_ids(&mut config)?;
    if evaluating
        && !matches!(
            config.eval_strategy,
            Some(IntervalStrategy::Steps | IntervalStrategy::Epoch)
        )
    {
        // `sdpo eval` evaluates whatever the strategy: a dataset's test split is read as it is
        // for `eval_strategy = "epoch"` (as `trl/scripts/dpo.py` reads it for any strategy
        // but "no").
        config.eval_strategy = Some(IntervalStrategy::Epoch);
    }
    if evaluating {
        // Evaluation trains nothing: the saving keys' checks must not refuse it.
        config.load_best_model_at_end = false;
    }
    let (backend, device) = device::select_device(common.device.as_deref())?;
    eprintln!("backend: {backend}");
    Ok((config, device, loaded.resume_from_checkpoint))
}

fn run(cli: Cli) -> Result<()> {
    let mut view = TerminalProgress::new();
    match cli.command {
        Command::Train {
            common,
            resume_from_checkpoint,
        } => {
            let (config, device, trl_resume) = prepare(&common, false)?;
            let resume_from_checkpoint =
                resume_from_checkpoint.or_else(|| trl_resume.map(std::path::PathBuf::from));
            let checkpoint = match &resume_from_checkpoint {
                Some(spec) => Some(resolve_checkpoint(&config.output_dir, spec)?),
                None => None,
            };
            let start = checkpoint.as_deref().map_or(Start::Fresh, Start::Resume);
            // report_to is checked before any data or model is loaded.
            let tracking = tracking::plan(&config)?;
            let mut trainer =
                Trainer::new(config, &device, start, &mut view).context("cannot start training")?;
            let mut tracked = tracking::start(tracking, &trainer, &mut view)?;
            let result = {
                let mut observer = report::ReportingObserver {
                    run_dir: trainer.config().output_dir.clone(),
                    inner: &mut tracked,
                };
                trainer.train(None, &mut observer)
            };
            tracked.finish(if result.is_ok() {
                sdpo_track::RunStatus::Finished
            } else {
                sdpo_track::RunStatus::Failed
            });
            result.context("training failed")?;
        }
        Command::Eval { common, checkpoint } => {
            let (config, device, _) = prepare(&common, true)?;
            if config.eval_file.is_none()
                && config.data.dataset_name.is_none()
                && config.data.test_split_size.is_none()
            {
                bail!(
                    "`eval` needs `eval_file` (or dataset_name with a test split, or a datasets mixture with test_split_size) in the configuration (or --set eval_file=PATH)"
                );
            }
            let mut trainer = Trainer::new(
                config,
                &device,
                Start::PolicyWeights(&checkpoint),
                &mut view,
            )
            .context("cannot prepare evaluation")?;
            let record = trainer.evaluate()?.context("the eval file has no pairs")?;
            eprintln!("{}", format_record(&record));
            println!("{}", serde_json::to_string(&record)?);
        }
        Command::PrecomputeRef {
            common,
            shard,
            merge,
        } => {
            let (mut config, device, _) = prepare(&common, false)?;
            if config.loss.reference_free {
                bail!("`precompute-ref` has nothing to do with reference_free = true");
            }
            config.precompute_ref_log_probs = true;
            let job = match (shard, merge) {
                (Some(shard), _) => PrecomputeJob::Shard(shard),
                (None, true) => PrecomputeJob::Merge,
                (None, false) => PrecomputeJob::All,
            };
            let files = precompute_reference(&config, &device, job, &mut view)
                .context("cannot precompute reference log-probs")?;
            for file in files {
                println!("{}", file.display());
            }
        }
        Command::ExportPairs { common, out } => {
            let (config, _, _) = prepare(&common, false)?;
            let files =
                export_pairs(&config, &out, &mut view).context("cannot export the pairs")?;
            for file in files {
                println!("{}", file.display());
            }
        }
        Command::Merge(args) => merge::run(&args)?,
        Command::Report(args) => report::run(&args)?,
        Command::Inspect(args) => inspect::run(&args)?,
    }
    Ok(())
}
