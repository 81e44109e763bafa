//! Fuzzing every parser a user's file reaches, on stable Rust.
//!
//! A [`Target`] feeds bytes to the same function the product uses on that file (written where
//! the product reads it, under the name the product expects). Inputs come from a seed corpus
//! taken from `fixtures/` and `examples/`, mutated byte by byte ([`mutate`]), and from
//! structure-aware generators built on [`arbitrary`] ([`structured`]). Each input runs under a
//! memory bound and a time budget ([`budget`]); a panic, a rejection that does not say where the
//! input went wrong, an allocation past the bound, a run past the budget or a crash is a
//! finding. Inputs are a pure function of `(seed, target, index)`, so a finding is reproduced
//! from its index alone, and a supervisor process ([`supervise`]) restarts a child that died
//! after the input that killed it.
#![warn(missing_docs)]

pub mod budget;
pub mod campaign;
pub mod mutate;
pub mod structured;
pub mod supervise;
pub mod targets;

use std::path::{Path, PathBuf};

/// The largest input the harness makes: 1 MiB (seed files larger than this are cut; the tiny
/// models' weights fit).
pub const MAX_INPUT_BYTES: usize = 1 << 20;

/// What a product function's error is carried as: the error itself, whose `Display` chain is
/// what a user reads.
pub type Rejection = Box<dyn std::error::Error + Send + Sync>;

/// One parser under fuzzing.
pub struct Target {
    /// The target's name (`sdpo-fuzz run --target NAME`, `fixtures/fuzz/NAME/`).
    pub name: &'static str,
    /// What it feeds, and to which product function.
    pub about: &'static str,
    /// The file name the input is written under in the run's directory. A rejection must name
    /// it (unless empty: inputs that are not files, such as command-line flags).
    pub file_name: &'static str,
    /// What a rejection must name instead of `file_name` when the product reports another file
    /// (a template's render error names the data record it rendered); empty: `file_name`.
    pub names: &'static [&'static str],
    /// Seed files, as glob patterns relative to the workspace root.
    pub seeds: &'static [&'static str],
    /// Structure-aware generation of an input.
    pub generate: fn(&mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Vec<u8>>,
    /// Feeds the input (already written at `path`, its bytes `bytes`) to the product. Targets
    /// whose product reads a directory write the input's siblings next to `path`.
    pub run: fn(path: &Path, bytes: &[u8]) -> Result<(), Rejection>,
    /// Words that say where in this format, besides [`campaign::LOCATORS`] (one of either
    /// must be in a rejection's message).
    pub locators: &'static [&'static str],
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The workspace root (seed globs and `fixtures/fuzz/` are relative to it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A rejection's whole message: the error and each of its sources, joined with `": "`.
pub fn message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
