//! The supervisor: one child process per target at a time, restarted after an input that killed
//! it (an allocation refused at the bound, a run past the time budget, a stack overflow, a
//! signal), with that input saved as a finding and skipped on the restart.
//!
//! A child ([`child_main`]) runs its inputs in chunks and after each chunk writes a checkpoint
//! (the next index and the tally so far); after a death the supervisor restarts it from the last
//! checkpoint with the deadly index added to its skip list, so every input is counted once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::budget::{Progress, Verdict};
use crate::campaign::{Campaign, Outcome, Tally, quiet_panics};
use crate::targets::find;

/// Inputs between two checkpoints of a child.
const CHUNK: u64 = 2_000;

/// Restarts allowed per target before the supervisor gives up on it.
const MAX_DEATHS: usize = 1_000;

/// A child's checkpoint: where it is and what it counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The first input not yet run.
    pub next: u64,
    /// What the inputs before it gave.
    pub tally: Tally,
}

/// What one child process runs.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    /// The target's name.
    pub target: String,
    /// The run seed.
    pub seed: u64,
    /// First input.
    pub from: u64,
    /// One past the last input.
    pub to: u64,
    /// Inputs that killed an earlier child: not run again.
    pub skip: BTreeSet<u64>,
    /// The directory of this target's files: progress, checkpoint, the inputs' working dir.
    pub state: PathBuf,
    /// Where findings are saved (`<findings>/<target>/<kind>-<index>` and `.txt`).
    pub findings: PathBuf,
    /// The tally to start from (the checkpoint's).
    pub tally: Tally,
}

/// The child's side: runs `args`' inputs, saving in-process findings and checkpoints.
pub fn child_main(args: &ChildArgs) -> std::io::Result<()> {
    let target = find(&args.target)
        .ok_or_else(|| std::io::Error::other(format!("no fuzz target named {}", args.target)))?;
    std::fs::create_dir_all(&args.state)?;
    Progress::install(&args.state.join("progress"))?;
    quiet_panics();
    let campaign = Campaign::new(target, args.seed)?;
    let work = args.state.join("input");
    let mut checkpoint = Checkpoint {
        next: args.from,
        tally: args.tally.clone(),
    };
    let findings = args.findings.join(target.name);
    // Loads what the target shares across inputs (a tokenizer, a base model) outside any
    // input's budget.
    let _ = crate::campaign::run_input(target, &work, &campaign.input(0));
    while checkpoint.next < args.to {
        let end = (checkpoint.next + CHUNK).min(args.to);
        let mut start = checkpoint.next;
        while start < end {
            // Runs of indices between skipped ones.
            let stop = args.skip.range(start..end).next().copied().unwrap_or(end);
            let tally = campaign.run_range(&work, start, stop, |index, bytes, outcome| {
                let word = outcome.finding_word().unwrap_or("finding");
                let text = match outcome {
                    Outcome::Panicked(text) | Outcome::Unlocated(text) => text.clone(),
                    _ => String::new(),
                };
                let _ = save_finding(&findings, word, index, bytes, &text);
            });
            checkpoint.tally.merge(&tally);
            start = if stop < end { stop + 1 } else { end };
        }
        checkpoint.next = end;
        write_checkpoint(&args.state, &checkpoint)?;
    }
    Ok(())
}

/// Saves a finding's input and message under `dir`.
pub fn save_finding(
    dir: &Path,
    word: &str,
    index: u64,
    bytes: &[u8],
    text: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{word}-{index}")), bytes)?;
    std::fs::write(dir.join(format!("{word}-{index}.txt")), text)
}

fn write_checkpoint(state: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    let temporary = state.join("checkpoint.json.tmp");
    std::fs::write(
        &temporary,
        serde_json::to_vec(checkpoint).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(temporary, state.join("checkpoint.json"))
}

fn read_checkpoint(state: &Path) -> Option<Checkpoint> {
    serde_json::from_slice(&std::fs::read(state.join("checkpoint.json")).ok()?).ok()
}

/// One target's result in a supervised run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    /// The target.
    pub target: String,
    /// Its counts.
    pub tally: Tally,
    /// Child processes started (1 when none died).
    pub processes: usize,
    /// The largest resident memory of any of its child processes, KiB.
    pub max_rss_kib: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// A supervised run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The targets, run in this order, `jobs` at a time.
    pub targets: Vec<String>,
    /// The first input of each target: a run of `from..from + count` continues one of
    /// `0..from` with the same seed (a long run split over processes or sessions).
    pub from: u64,
    /// Inputs per target.
    pub count: u64,
    /// The run seed.
    pub seed: u64,
    /// Targets run at once.
    pub jobs: usize,
    /// The harness binary (run as `<exe> child ...`).
    pub exe: PathBuf,
    /// Working state (one directory per target).
    pub state: PathBuf,
    /// Where findings are saved.
    pub findings: PathBuf,
}

/// Runs `plan`, calling `done` as each target finishes.
pub fn supervise(
    plan: &Plan,
    done: impl Fn(&TargetReport) + Sync,
) -> std::io::Result<Vec<TargetReport>> {
    let queue = Mutex::new(plan.targets.to_vec());
    let reports = Mutex::new(Vec::new());
    let failure = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..plan.jobs.max(1) {
            scope.spawn(|| {
                let next = || {
                    queue
                        .lock()
                        .ok()
                        .and_then(|mut q| (!q.is_empty()).then(|| q.remove(0)))
                };
                while let Some(name) = next() {
                    match run_target(plan, &name) {
                        Ok(report) => {
                            done(&report);
                            if let Ok(mut all) = reports.lock() {
                                all.push(report);
                            }
                        }
                        Err(error) => {
                            if let Ok(mut slot) = failure.lock() {
                                slot.get_or_insert(error);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().ok().flatten() {
        return Err(error);
    }
    let mut reports = reports.into_inner().unwrap_or_default();
    reports.sort_by_key(|r| plan.targets.iter().position(|t| *t == r.target));
    Ok(reports)
}

fn run_target(plan: &Plan, name: &str) -> std::io::Result<TargetReport> {
    let target =
        find(name).ok_or_else(|| std::io::Error::other(format!("no fuzz target named {name}")))?;
    let state = plan.state.join(name);
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let started = Instant::now();
    let mut skip = BTreeSet::new();
    let mut deaths = Tally::default();
    let mut processes = 0;
    let mut max_rss_kib = 0;
    let mut campaign = None;
    loop {
        let end = plan.from.saturating_add(plan.count);
        let checkpoint = read_checkpoint(&state).unwrap_or(Checkpoint {
            next: plan.from,
            tally: Tally::default(),
        });
        if checkpoint.next >= end {
            let mut tally = checkpoint.tally;
            tally.merge(&deaths);
            return Ok(TargetReport {
                target: name.to_string(),
                tally,
                processes,
                max_rss_kib,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        let mut command = Command::new(&plan.exe);
        command
            .arg("child")
            .args(["--target", name])
            .args(["--seed", &plan.seed.to_string()])
            .args(["--from", &checkpoint.next.to_string()])
            .args(["--to", &end.to_string()])
            .arg("--state")
            .arg(&state)
            .arg("--findings")
            .arg(&plan.findings);
        if !skip.is_empty() {
            let list: Vec<String> = skip.iter().map(u64::to_string).collect();
            command.args(["--skip", &list.join(",")]);
        }
        command.stderr(std::process::Stdio::null());
        let _ = std::fs::remove_file(state.join("progress"));
        let child = command.spawn()?;
        processes += 1;
        let (success, rss_kib) = wait_with_rusage(child)?;
        max_rss_kib = max_rss_kib.max(rss_kib);
        if success {
            continue;
        }
        let (index, verdict) = Progress::read(&state.join("progress"))?.ok_or_else(|| {
            std::io::Error::other(format!("{name}: the child died before its first input"))
        })?;
        if !skip.insert(index) || skip.len() > MAX_DEATHS {
            return Err(std::io::Error::other(format!(
                "{name}: the child died at input {index} twice or too often; giving up"
            )));
        }
        match verdict {
            Verdict::OverMemory => deaths.over_memory += 1,
            Verdict::OverTime => deaths.over_time += 1,
            Verdict::Died => deaths.crashes += 1,
        }
        deaths.inputs += 1;
        let campaign = match &campaign {
            Some(campaign) => campaign,
            None => campaign.insert(Campaign::new(target, plan.seed)?),
        };
        save_finding(
            &plan.findings.join(name),
            verdict.word(),
            index,
            &campaign.input(index),
            &format!(
                "{name}: input {index} ended the process ({})",
                verdict.word()
            ),
        )?;
    }
}

/// Waits for `child`; whether it exited with 0, and its peak resident memory in KiB.
fn wait_with_rusage(child: std::process::Child) -> std::io::Result<(bool, u64)> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not yet reaped (std's Child never waited on it);
        // `status` and `usage` are valid for writes.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((success, usage.ru_maxrss as u64))
}
