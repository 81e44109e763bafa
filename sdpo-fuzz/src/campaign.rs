//! The inputs of one target and the in-process loop over them.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::budget::{self, InputCost};
use crate::{MAX_INPUT_BYTES, Target, message, mutate, workspace_root};

/// One target's inputs: its seed corpus and the rule that makes input `index` from it.
#[derive(Debug)]
pub struct Campaign {
    target: &'static Target,
    seed: u64,
    corpus: Vec<Vec<u8>>,
}

/// How one input ended, when it ended in the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The product read it.
    Accepted,
    /// The product refused it with this message, which says where.
    Rejected(String),
    /// A finding: the product panicked.
    Panicked(String),
    /// A finding: the product refused it without naming the file or without saying where.
    Unlocated(String),
}

impl Outcome {
    /// Whether this outcome is a finding.
    pub fn is_finding(&self) -> bool {
        matches!(self, Outcome::Panicked(_) | Outcome::Unlocated(_))
    }

    /// The finding's kind as a file-name word (`panic`, `unlocated`), `None` when not one.
    pub fn finding_word(&self) -> Option<&'static str> {
        match self {
            Outcome::Panicked(_) => Some("panic"),
            Outcome::Unlocated(_) => Some("unlocated"),
            _ => None,
        }
    }
}

/// What a range of inputs gave.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// Inputs run.
    pub inputs: u64,
    /// Inputs the product read.
    pub accepted: u64,
    /// Inputs the product refused with a located error.
    pub rejected: u64,
    /// Panics.
    pub panics: u64,
    /// Rejections that did not say where.
    pub unlocated: u64,
    /// Allocations refused at the memory bound (the supervisor counts these).
    pub over_memory: u64,
    /// Inputs past the time budget (the supervisor counts these).
    pub over_time: u64,
    /// Other deaths of the process (stack overflow, signals; the supervisor counts these).
    pub crashes: u64,
    /// The largest memory any one input took above what was live before it, bytes.
    pub max_input_bytes: u64,
    /// The longest any one input ran, microseconds.
    pub max_input_micros: u64,
    /// The wall time of all inputs together, microseconds.
    pub total_micros: u64,
}

impl Tally {
    /// Adds `other`'s counts to these (maxima as maxima).
    pub fn merge(&mut self, other: &Tally) {
        self.inputs += other.inputs;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.panics += other.panics;
        self.unlocated += other.unlocated;
        self.over_memory += other.over_memory;
        self.over_time += other.over_time;
        self.crashes += other.crashes;
        self.max_input_bytes = self.max_input_bytes.max(other.max_input_bytes);
        self.max_input_micros = self.max_input_micros.max(other.max_input_micros);
        self.total_micros += other.total_micros;
    }

    /// Every finding counted.
    pub fn findings(&self) -> u64 {
        self.panics + self.unlocated + self.over_memory + self.over_time + self.crashes
    }

    fn count(&mut self, outcome: &Outcome, cost: InputCost) {
        self.inputs += 1;
        match outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::Rejected(_) => self.rejected += 1,
            Outcome::Panicked(_) => self.panics += 1,
            Outcome::Unlocated(_) => self.unlocated += 1,
        }
        self.max_input_bytes = self.max_input_bytes.max(cost.peak_bytes as u64);
        let micros = cost.elapsed.as_micros() as u64;
        self.max_input_micros = self.max_input_micros.max(micros);
        self.total_micros += micros;
    }
}

impl Campaign {
    /// The campaign of `target` with run seed `seed`: reads the seed corpus from the workspace.
    pub fn new(target: &'static Target, seed: u64) -> std::io::Result<Campaign> {
        let corpus = seed_corpus(target)?;
        Ok(Campaign {
            target,
            seed,
            corpus,
        })
    }

    /// The target.
    pub fn target(&self) -> &'static Target {
        self.target
    }

    /// The number of seed files (the first inputs are the seeds themselves, unchanged).
    pub fn corpus_len(&self) -> usize {
        self.corpus.len()
    }

    /// Input `index`: a pure function of the run seed, the target and the index.
    pub fn input(&self, index: u64) -> Vec<u8> {
        if let Some(seed) = self.corpus.get(index as usize) {
            return seed.clone();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, self.target.name, index));
        let generated = |rng: &mut ChaCha8Rng| {
            let mut raw = vec![0u8; 64 + rng.random_range(0..8192)];
            rng.fill_bytes(&mut raw);
            let mut unstructured = arbitrary::Unstructured::new(&raw);
            let mut bytes = (self.target.generate)(&mut unstructured).unwrap_or_default();
            bytes.truncate(MAX_INPUT_BYTES);
            bytes
        };
        let pick = |rng: &mut ChaCha8Rng| self.corpus.choose(rng).cloned().unwrap_or_default();
        match rng.random_range(0..10) {
            0..=2 => generated(&mut rng),
            3 => {
                let base = generated(&mut rng);
                let splice = pick(&mut rng);
                mutate::mutate(&mut rng, base, &splice)
            }
            _ => {
                let base = pick(&mut rng);
                let splice = if rng.random_bool(0.5) {
                    pick(&mut rng)
                } else {
                    generated(&mut rng)
                };
                mutate::mutate(&mut rng, base, &splice)
            }
        }
    }

    /// Runs inputs `from..to` in `dir` (a directory of its own), calling `found` with each
    /// finding's index, input and outcome.
    pub fn run_range(
        &self,
        dir: &Path,
        from: u64,
        to: u64,
        mut found: impl FnMut(u64, &[u8], &Outcome),
    ) -> Tally {
        let mut tally = Tally::default();
        for index in from..to {
            let bytes = self.input(index);
            budget::begin(index);
            let outcome = run_input(self.target, dir, &bytes);
            let cost = budget::end();
            tally.count(&outcome, cost);
            if outcome.is_finding() {
                found(index, &bytes, &outcome);
            }
        }
        tally
    }
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs a panic hook that keeps the message for [`run_input`] instead of printing it.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string();
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(text));
    }));
}

/// Writes `bytes` as `dir/<file_name>` and feeds it to the target, classifying the result. A
/// rejection must name the file (when the target has one) and contain one of its locators.
pub fn run_input(target: &Target, dir: &Path, bytes: &[u8]) -> Outcome {
    let path = input_path(target, dir);
    // A fresh directory per input: targets write siblings, and none may see the last input's.
    let _ = std::fs::remove_dir_all(dir);
    if let Err(error) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, bytes)) {
        return Outcome::Panicked(format!(
            "the harness could not write {}: {error}",
            path.display()
        ));
    }
    LAST_PANIC.with(|last| *last.borrow_mut() = None);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&path, bytes)));
    match result {
        Ok(Ok(())) => Outcome::Accepted,
        Ok(Err(error)) => {
            let text = message(error.as_ref());
            if located(target, dir, &text) {
                Outcome::Rejected(text)
            } else {
                Outcome::Unlocated(text)
            }
        }
        Err(payload) => {
            let text = LAST_PANIC
                .with(|last| last.borrow_mut().take())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            Outcome::Panicked(text)
        }
    }
}

/// Words that say where in a file something is wrong, whatever the format: a line, a byte
/// offset, a field or key, a tensor, a part of a binary file. A target adds its own.
pub const LOCATORS: [&str; 19] = [
    "line",
    "offset",
    "byte",
    "position",
    "field",
    "key",
    "column",
    "row",
    "record",
    "tensor",
    "header",
    "footer",
    "schema",
    "metadata",
    "page",
    "record batch",
    "row group",
    "index",
    "the file is",
];

/// Whether a rejection's message names the file (or, for an error about the directory as a
/// whole, the directory: a checkpoint missing tensors) and says where.
fn located(target: &Target, dir: &Path, text: &str) -> bool {
    let names_file = text.contains(&*dir.to_string_lossy())
        || if target.names.is_empty() {
            target.file_name.is_empty() || text.contains(target.file_name)
        } else {
            target.names.iter().any(|name| text.contains(name))
        };
    let says_where = LOCATORS
        .iter()
        .chain(target.locators)
        .any(|word| text.contains(word));
    names_file && says_where
}

/// Where `target`'s input is written inside `dir`.
pub fn input_path(target: &Target, dir: &Path) -> PathBuf {
    let name = if target.file_name.is_empty() {
        "input"
    } else {
        target.file_name
    };
    dir.join(name)
}

/// The seed files of `target` (the workspace's fixtures and examples its globs match), each cut
/// to [`MAX_INPUT_BYTES`], in path order.
pub fn seed_corpus(target: &Target) -> std::io::Result<Vec<Vec<u8>>> {
    let root = workspace_root();
    let mut paths = Vec::new();
    for pattern in target.seeds {
        let full = root.join(pattern);
        let matches = glob::glob(&full.to_string_lossy())
            .map_err(|e| std::io::Error::other(format!("seed pattern {pattern}: {e}")))?;
        paths.extend(matches.filter_map(Result::ok).filter(|p| p.is_file()));
    }
    paths.sort();
    paths.dedup();
    paths
        .iter()
        .map(|path| {
            let mut bytes = std::fs::read(path)?;
            bytes.truncate(MAX_INPUT_BYTES);
            Ok(bytes)
        })
        .collect()
}

/// The seed of input `index` of target `name` in run `seed` (FNV-1a over the name, mixed with
/// SplitMix64).
fn mix(seed: u64, name: &str, index: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = seed ^ hash.rotate_left(17) ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Formats microseconds as seconds with one decimal.
pub fn seconds(micros: u64) -> String {
    format!("{:.1}", Duration::from_micros(micros).as_secs_f64())
}
