//! `sdpo`: train, evaluate and precompute reference log-probs from a TOML configuration.
//!
//! `main` runs `run` and prints any error with its whole cause chain, exiting non-zero: a user
//! mistake (bad config, missing file, bad data) is one clear message, never a backtrace.

mod args;
mod config_file;
mod device;
mod inspect;
mod merge;
mod progress;
mod report;
mod tracking;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sdpo_train::{Start, Trainer, checkpoint::resolve_checkpoint};

use crate::args::{Cli, Command, CommonArgs};
use crate::progress::{TerminalProgress, format_record};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn prepare(
    common: &CommonArgs,
) -> Result<(sdpo_train::TrainConfig, burn::tensor::Device)> {
    let config = config_file::load_config(&common.config, &common.overrides)?;
    let (backend, device) = device::select_device(common.device.as_deref())?;
    eprintln!("backend: {backend}");
    Ok((config, device))
}

fn run(cli: Cli) -> Result<()> {
    let mut view = TerminalProgress::new();
    match cli.command {
        Command::Train {
            common,
            resume_from_checkpoint,
        } => {
            let (config, device) = prepare(&common)?;
            let checkpoint = match &resume_from_checkpoint {
                Some(spec) => Some(resolve_checkpoint(&config.output_dir, spec)?),
                None => None,
            };
            let start = checkpoint.as_deref().map_or(Start::Fresh, Start::Resume);
            // report_to is checked before any data or model is loaded.
            let tracking = tracking::plan(&config)?;
            let mut trainer =
                Trainer::new(config, &device, start, &mut view).context("cannot start training")?;
            report::write_run_files(&trainer)?;
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
            let (config, device) = prepare(&common)?;
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
        Command::PrecomputeRef { common } => {
            let (mut config, device) = prepare(&common)?;
            if config.loss.reference_free {
                bail!("`precompute-ref` has nothing to do with reference_free = true");
            }
            config.precompute_ref_log_probs = true;
            Trainer::new(config, &device, Start::Fresh, &mut view)
                .context("cannot precompute reference log-probs")?;
        }
        Command::Merge(args) => merge::run(&args)?,
        Command::Report(args) => report::run(&args)?,
        Command::Inspect(args) => inspect::run(&args)?,
    }
    Ok(())
}
