//! `sdpo report RUN_DIR`: the run report of a run directory as one self-contained HTML file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sdpo_report::RunReport;

use crate::config_file::load_config;

/// Options of `sdpo report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run's `output_dir` (it holds `metrics.jsonl`).
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Where to write the report [default: RUN_DIR/report.html].
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

/// Reads the run and writes the report.
pub fn run(args: &ReportArgs) -> Result<()> {
    let mut report = RunReport::load(&args.run_dir)
        .with_context(|| format!("cannot report on `{}`", args.run_dir.display()))?;
    if let Some(path) = &args.config {
        let config = load_config(path, &args.overrides)?;
        let values = serde_json::to_value(&config).context("cannot convert the configuration")?;
        report = report.with_config(format!("--config {}", path.display()), values);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run_dir.join("report.html"));
    report
        .write_html(&out)
        .with_context(|| format!("cannot write the report to `{}`", out.display()))?;
    eprintln!("report written to {}", out.display());
    Ok(())
}
