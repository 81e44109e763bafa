//! The fuzz targets inside `cargo test`:
//!
//! - every input saved in `fixtures/fuzz/<target>/` (each one a finding once, fixed since) ends
//!   cleanly: read, or refused with an error that names the file and says where;
//! - every target runs a fixed count of fresh inputs (`SDPO_FUZZ_COUNT`, default 150) without a
//!   finding, and both reads and refuses some of them (a target whose every input is refused
//!   never reaches the parser behind the first check).
//!
//! Memory is bounded per input as in `sdpo-fuzz run` (this binary installs the counting
//! allocator: an input past the bound aborts the test) and so is time (the watchdog exits).

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, Once};

use sdpo_fuzz::budget::{self, CountingAllocator, Progress};
use sdpo_fuzz::campaign::{Campaign, Outcome, run_input};
use sdpo_fuzz::targets::{TARGETS, find};
use sdpo_fuzz::workspace_root;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The memory bound and the watchdog count one input at a time: the tests run one after the
/// other.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn scratch(tag: &str) -> PathBuf {
    static SETUP: Once = Once::new();
    let base = std::env::temp_dir().join(format!("sdpo-fuzz-test-{}", std::process::id()));
    SETUP.call_once(|| {
        std::fs::create_dir_all(&base).expect("scratch directory");
        Progress::install(&base.join("progress")).expect("the watchdog");
    });
    base.join(tag)
}

#[test]
fn every_saved_finding_now_ends_cleanly() {
    let _serial = one_at_a_time();
    let root = workspace_root().join("fixtures/fuzz");
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "seeds"))
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let target =
            find(&name).unwrap_or_else(|| panic!("{}: no fuzz target named {name}", dir.display()));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_none_or(|e| e != "txt" && e != "md"))
            .collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            budget::begin(0);
            let outcome = run_input(target, &scratch(&name), &bytes);
            budget::end();
            checked += 1;
            if outcome.is_finding() {
                failures.push(format!("{}: {outcome:?}", file.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "saved findings that fail again:\n{}",
        failures.join("\n")
    );
    assert!(checked > 0, "no saved finding under {}", root.display());
}

#[test]
fn every_target_survives_a_fixed_count_of_fresh_inputs() {
    let _serial = one_at_a_time();
    let count: u64 = std::env::var("SDPO_FUZZ_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let mut problems = Vec::new();
    for target in TARGETS.iter() {
        let campaign = Campaign::new(target, 7).unwrap_or_else(|e| panic!("{}: {e}", target.name));
        let dir = scratch(target.name);
        let tally = campaign.run_range(&dir, 0, count, |index, _, outcome| {
            let text = match outcome {
                Outcome::Panicked(t) | Outcome::Unlocated(t) => t.as_str(),
                _ => "",
            };
            problems.push(format!("{} input {index}: {outcome:?} {text}", target.name));
        });
        if tally.accepted == 0 || tally.rejected == 0 {
            problems.push(format!(
                "{}: {} accepted and {} rejected of {count}: the target does not reach its parser both ways",
                target.name, tally.accepted, tally.rejected
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
