//! One libFuzzer binary for every target of `sdpo-fuzz`: `SDPO_FUZZ_TARGET` names it. Each
//! input goes through the same `run_input` as `sdpo-fuzz run`, under the same per-input memory
//! bound (the counting allocator aborts past it, which libFuzzer reports as a crash and saves);
//! a panic that escapes the product or a rejection that does not say where is a finding: its
//! message is printed and the process aborts, so that libFuzzer saves the input. Panics the
//! product contains (a third-party parser's, turned into the file's error) are not findings:
//! libfuzzer-sys's hook, which aborts on every panic, is replaced by the harness's quiet one.
//! Time: libFuzzer's `-timeout=10`, the harness's budget.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sdpo_fuzz::Target;
use sdpo_fuzz::budget::{self, CountingAllocator};
use sdpo_fuzz::campaign::{Outcome, quiet_panics, run_input};
use sdpo_fuzz::targets::find;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

static TARGET: LazyLock<&'static Target> = LazyLock::new(|| {
    let name = std::env::var("SDPO_FUZZ_TARGET").unwrap_or_default();
    find(&name).unwrap_or_else(|| {
        eprintln!("set SDPO_FUZZ_TARGET to a target of `sdpo-fuzz list` (got `{name}`)");
        std::process::exit(2)
    })
});

/// A directory of this process's own, in memory.
static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = std::env::var_os("SDPO_FUZZ_STATE")
        .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
    base.join(format!("sdpo-libfuzzer-{}", std::process::id()))
});

fuzz_target!(init: quiet_panics(), |data: &[u8]| {
    let target = *TARGET;
    budget::begin(0);
    let outcome = run_input(target, &DIR.join("input"), data);
    budget::end();
    let finding = match outcome {
        Outcome::Panicked(text) => format!("panic: {text}"),
        Outcome::Unlocated(text) => format!("an error that does not say where: {text}"),
        Outcome::Accepted | Outcome::Rejected(_) => return,
    };
    eprintln!("sdpo-fuzz finding in {}: {finding}", target.name);
    std::process::abort();
});
