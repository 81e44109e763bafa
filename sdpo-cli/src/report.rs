//! `sdpo report RUN_DIR`: the run report of a run directory as one self-contained HTML file;
//! `sdpo report RUN_A RUN_B ...`: several runs compared in one page.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sdpo_report::{RunComparison, RunReport};

use sdpo_cli::config_file::load_config;

/// Options of `sdpo report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run's `output_dir` (it holds `metrics.jsonl`); several directories compare the runs
    /// in one page (the same charts, one line per run).
    #[arg(value_name = "RUN_DIR", required = true, num_args = 1..)]
    pub run_dirs: Vec<PathBuf>,
    /// Where to write the report [default: RUN_DIR/report.html; with several runs:
    /// compare.html in the current directory].
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Show this TOML configuration (with any `--set`) instead of the one the run saved (in
    /// `run_config.json` or its newest checkpoint); for runs that saved none.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a key of `--config` (as for `sdpo train`; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
    pub overrides: Vec<String>,
}

/// Reads the run (or runs) and writes the report.
pub fn run(args: &ReportArgs) -> Result<()> {
    if args.run_dirs.len() > 1 {
        return compare(args);
    }
    let run_dir = &args.run_dirs[0];
    let mut report = RunReport::load(run_dir)
        .with_context(|| format!("cannot report on `{}`", run_dir.display()))?;
    if let Some(path) = &args.config {
        let config = load_config(Some(path.as_path()), &[], &args.overrides)?.config;
        let values = serde_json::to_value(&config).context("cannot convert the configuration")?;
        report = report.with_config(format!("--config {}", path.display()), values);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| run_dir.join("report.html"));
    report
        .write_html(&out)
        .with_context(|| format!("cannot write the report to `{}`", out.display()))?;
    eprintln!("report written to {}", out.display());
    Ok(())
}

/// Several runs in one page.
fn compare(args: &ReportArgs) -> Result<()> {
    if args.config.is_some() {
        anyhow::bail!(
            "--config shows one run's configuration; it cannot be used with several runs"
        );
    }
    let comparison = RunComparison::load(&args.run_dirs).context("cannot compare the runs")?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("compare.html"));
    comparison
        .write_html(&out)
        .with_context(|| format!("cannot write the comparison to `{}`", out.display()))?;
    eprintln!(
        "comparison of {} runs written to {}",
        args.run_dirs.len(),
        out.display()
    );
    Ok(())
}

/// Passes everything to the terminal view and refreshes `output_dir/report.html` after every
/// evaluation and at the end of the run. A report that cannot be written is a warning: it must
/// not stop training.
pub struct ReportingObserver<'a> {
    /// The terminal view.
    pub inner: &'a mut dyn sdpo_train::TrainObserver,
    /// The run directory.
    pub run_dir: PathBuf,
}

impl ReportingObserver<'_> {
    fn refresh(&mut self) {
        let out = self.run_dir.join("report.html");
        if let Err(err) = sdpo_report::write_run_report(&self.run_dir, &out) {
            self.inner
                .on_message(&format!("warning: cannot write `{}`: {err}", out.display()));
        }
    }
}

impl sdpo_train::TrainObserver for ReportingObserver<'_> {
    fn on_start(&mut self, start_step: usize, total_steps: usize) {
        self.inner.on_start(start_step, total_steps);
    }
    fn on_step(&mut self, progress: &sdpo_train::StepProgress) {
        self.inner.on_step(progress);
    }
    fn on_log(&mut self, record: &sdpo_train::MetricsRecord) {
        self.inner.on_log(record);
    }
    fn on_eval(&mut self, record: &sdpo_train::MetricsRecord) {
        self.inner.on_eval(record);
        self.refresh();
    }
    fn on_checkpoint(&mut self, dir: &std::path::Path) {
        self.inner.on_checkpoint(dir);
    }
    fn on_message(&mut self, message: &str) {
        self.inner.on_message(message);
    }
    fn on_finish(&mut self, dir: &std::path::Path) {
        self.refresh();
        self.inner.on_finish(dir);
    }
}
