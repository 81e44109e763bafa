//! `sdpo-fuzz`: runs the fuzz targets of every parser a user's file reaches.
//!
//! ```text
//! sdpo-fuzz list
//! sdpo-fuzz run [--target NAME]... [--count N] [--seed S] [--jobs J] [--findings DIR]
//! sdpo-fuzz replay --target NAME FILE...
//! sdpo-fuzz corpus --target NAME --count N --out DIR
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sdpo_fuzz::budget::{self, CountingAllocator};
use sdpo_fuzz::campaign::{Outcome, quiet_panics, run_input, seconds};
use sdpo_fuzz::supervise::{ChildArgs, Plan, TargetReport, child_main, supervise};
use sdpo_fuzz::targets::{TARGETS, find};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[derive(Parser)]
#[command(
    name = "sdpo-fuzz",
    about = "Fuzz every parser of sdpo-rs a user's file reaches"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// The targets, their seed counts and what each feeds.
    List,
    /// Runs targets under a supervisor; exits 1 when anything was found.
    Run {
        /// A target to run (repeatable); every target when absent.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Inputs per target.
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// The first input's index: `--from 500000 --count 500000` runs the second half of a
        /// million-input run of the same seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// The run seed: the same seed gives the same inputs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Targets run at once (one process each).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Where findings are saved.
        #[arg(long, default_value = "fuzz-findings")]
        findings: PathBuf,
        /// Working state (fast storage preferred).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Writes the per-target reports as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Runs files through one target in this process and prints each outcome; exits 1 when one
    /// is a finding.
    Replay {
        /// The target.
        #[arg(long)]
        target: String,
        /// Input files.
        files: Vec<PathBuf>,
    },
    /// Runs inputs of one target in this process and saves those whose outcome's message
    /// contains TEXT (a panic caught by the product, a given error): how a fixed finding's
    /// input is found again for `fixtures/fuzz/`.
    Scan {
        /// The target.
        #[arg(long)]
        target: String,
        /// The run seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Inputs to run.
        #[arg(long, default_value_t = 1_000)]
        count: u64,
        /// The text to look for in each outcome's message.
        #[arg(long)]
        matching: String,
        /// Where the matching inputs are saved (`<index>` and `<index>.txt`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes a target's first inputs (its seed files, then generated and mutated inputs) as
    /// files: the starting corpus of a coverage-guided engine (libFuzzer, AFL++).
    Corpus {
        /// The target.
        #[arg(long)]
        target: String,
        /// The run seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Inputs written (the seed files count; at least all of them are written).
        #[arg(long, default_value_t = 1_000)]
        count: u64,
        /// The directory written (created).
        #[arg(long)]
        out: PathBuf,
    },
    /// One supervised child (internal).
    #[command(hide = true)]
    Child {
        #[arg(long)]
        target: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[arg(long, value_delimiter = ',')]
        skip: Vec<u64>,
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        findings: PathBuf,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sdpo-fuzz: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Commands::List => {
            for target in TARGETS.iter() {
                let seeds = sdpo_fuzz::campaign::seed_corpus(target)?.len();
                println!("{:<22} {seeds:>4} seeds  {}", target.name, target.about);
            }
            Ok(ExitCode::SUCCESS)
        }
        Commands::Run {
            targets,
            count,
            from,
            seed,
            jobs,
            findings,
            state,
            report,
        } => {
            let targets = if targets.is_empty() {
                TARGETS.iter().map(|t| t.name.to_string()).collect()
            } else {
                for name in &targets {
                    if find(name).is_none() {
                        bail!("no fuzz target named {name} (`sdpo-fuzz list`)");
                    }
                }
                targets
            };
            let state = state.unwrap_or_else(default_state);
            let plan = Plan {
                targets,
                from,
                count,
                seed,
                jobs,
                exe: std::env::current_exe().context("the harness's own path")?,
                state: state.clone(),
                findings: findings.clone(),
            };
            println!(
                "{count} inputs per target from input {from}, seed {seed}, {jobs} at once; memory bound {} MiB and time budget {} s per input",
                budget::MEMORY_BOUND >> 20,
                budget::TIME_BUDGET.as_secs()
            );
            let reports = supervise(&plan, |report| println!("{}", line(report)))?;
            let _ = std::fs::remove_dir_all(&state);
            println!();
            println!("{}", table(&reports));
            if let Some(path) = report {
                std::fs::write(&path, serde_json::to_vec_pretty(&reports)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let found: u64 = reports.iter().map(|r| r.tally.findings()).sum();
            if found > 0 {
                println!("{found} findings, saved under {}", findings.display());
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Commands::Replay { target, files } => {
            let target = find(&target).with_context(|| format!("no fuzz target named {target}"))?;
            quiet_panics();
            let dir = default_state().join("replay");
            let mut findings = 0;
            for file in &files {
                let bytes =
                    std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                budget::begin(0);
                let outcome = run_input(target, &dir, &bytes);
                let cost = budget::end();
                findings += usize::from(outcome.is_finding());
                let (word, text) = match &outcome {
                    Outcome::Accepted => ("accepted", String::new()),
                    Outcome::Rejected(text) => ("rejected", text.clone()),
                    Outcome::Panicked(text) => ("PANIC", text.clone()),
                    Outcome::Unlocated(text) => ("UNLOCATED", text.clone()),
                };
                println!(
                    "{}: {word} ({:.1} MiB, {} ms) {text}",
                    file.display(),
                    cost.peak_bytes as f64 / (1 << 20) as f64,
                    cost.elapsed.as_millis()
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
            Ok(if findings > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Commands::Scan {
            target,
            seed,
            count,
            matching,
            out,
        } => {
            let target = find(&target).with_context(|| format!("no fuzz target named {target}"))?;
            quiet_panics();
            let campaign = sdpo_fuzz::campaign::Campaign::new(target, seed)?;
            let dir = default_state().join("scan");
            let mut saved = 0;
            for index in 0..count {
                let bytes = campaign.input(index);
                let text = match run_input(target, &dir, &bytes) {
                    Outcome::Accepted => continue,
                    Outcome::Rejected(t) | Outcome::Panicked(t) | Outcome::Unlocated(t) => t,
                };
                if text.contains(&matching) {
                    sdpo_fuzz::supervise::save_finding(&out, "match", index, &bytes, &text)?;
                    saved += 1;
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "{saved} of {count} inputs matched; saved under {}",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Commands::Corpus {
            target,
            seed,
            count,
            out,
        } => {
            let target = find(&target).with_context(|| format!("no fuzz target named {target}"))?;
            let campaign = sdpo_fuzz::campaign::Campaign::new(target, seed)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let count = count.max(campaign.corpus_len() as u64);
            for index in 0..count {
                let path = out.join(format!("{index:07}"));
                std::fs::write(&path, campaign.input(index))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            println!(
                "{count} inputs of {} ({} seed files) written to {}",
                target.name,
                campaign.corpus_len(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Commands::Child {
            target,
            seed,
            from,
            to,
            skip,
            state,
            findings,
        } => {
            let tally = serde_json::from_slice::<sdpo_fuzz::supervise::Checkpoint>(
                &std::fs::read(state.join("checkpoint.json")).unwrap_or_default(),
            )
            .map(|c| c.tally)
            .unwrap_or_default();
            child_main(&ChildArgs {
                target,
                seed,
                from,
                to,
                skip: skip.into_iter().collect::<BTreeSet<_>>(),
                state,
                findings,
                tally,
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Working state on tmpfs when there is one: each input is written to a file there.
fn default_state() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    base.join(format!("sdpo-fuzz-{}", std::process::id()))
}

fn line(report: &TargetReport) -> String {
    let t = &report.tally;
    format!(
        "{:<22} {:>9} inputs  {:>8} accepted  {:>9} rejected  {} findings  max {:.1} MiB, {} ms per input  {:.0} s",
        report.target,
        t.inputs,
        t.accepted,
        t.rejected,
        t.findings(),
        t.max_input_bytes as f64 / (1 << 20) as f64,
        t.max_input_micros / 1000,
        report.seconds
    )
}

fn table(reports: &[TargetReport]) -> String {
    let mut out = String::from(
        "| target | inputs | accepted | rejected | panics | unlocated | over memory | over time | crashes | max MiB per input | max ms per input | peak RSS MiB | s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in reports {
        let t = &r.tally;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} |\n",
            r.target,
            t.inputs,
            t.accepted,
            t.rejected,
            t.panics,
            t.unlocated,
            t.over_memory,
            t.over_time,
            t.crashes,
            t.max_input_bytes as f64 / (1 << 20) as f64,
            t.max_input_micros / 1000,
            r.max_rss_kib / 1024,
            seconds(t.total_micros),
        ));
    }
    out
}
