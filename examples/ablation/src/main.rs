//! `sdpo-ablation`: does SDPO help, and how do the other token-level methods compare? A
//! rerunnable experiment with a known ground truth.
//!
//! Generates synthetic preference pairs whose chosen and rejected completions differ in a few
//! decisive tokens (which carry the preference) and in distractor tokens (random with respect
//! to it), trains a tiny Llama with plain DPO (`sdpo_threshold` 0) and SDPO (0.3, 0.6, 0.8)
//! against two references (the initial policy, and a stronger reference DPO-trained on clean
//! pairs), and with ConfPO, SePO, TIS-DPO, critical tokens and TGDPO with their scoring models,
//! several seeds each, and scores every run with one evaluator. Writes
//! `results.json` and `results.md` into `--out`.
//!
//! ```text
//! cargo run --release -p sdpo-ablation -- [--out DIR] [--quick] [--seeds N] [--check]
//! ```
//!
//! `--quick` is the CI smoke version (one seed, one epoch); `--check` fails (exit code 1) when
//! the study's own sanity conditions do not hold. See docs/sdpo.md.

mod data;
mod report;
mod study;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

fn parse() -> Result<(study::Options, bool)> {
    let mut out = PathBuf::from("runs/ablation");
    let mut quick = false;
    let mut check = false;
    let mut seeds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out needs a directory")?),
            "--quick" => quick = true,
            "--check" => check = true,
            "--seeds" => {
                let value = args.next().context("--seeds needs a number")?;
                let n: usize = value
                    .parse()
                    .with_context(|| format!("--seeds {value}: not a number"))?;
                if n == 0 {
                    bail!("--seeds must be at least 1");
                }
                seeds = Some(n);
            }
            "-h" | "--help" => {
                println!("usage: sdpo-ablation [--out DIR] [--quick] [--seeds N] [--check]");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    let mut options = if quick {
        study::Options::quick(out)
    } else {
        study::Options::full(out)
    };
    if let Some(n) = seeds {
        options.seeds = n;
    }
    Ok((options, check))
}

fn run() -> Result<bool> {
    let (options, check) = parse()?;
    let study = study::run(&options)?;
    let markdown = report::markdown(&study, &options);
    let json = report::json(&study, &options);
    std::fs::create_dir_all(&options.out)?;
    let md_path = options.out.join("results.md");
    std::fs::write(&md_path, &markdown).with_context(|| format!("write {}", md_path.display()))?;
    let json_path = options.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    println!("{markdown}");
    eprintln!("written {} and {}", md_path.display(), json_path.display());
    let failures = report::sanity_failures(&study);
    for failure in &failures {
        eprintln!("sanity check failed: {failure}");
    }
    Ok(!check || failures.is_empty())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
