//! Every key `trl dpo` accepts (TRL 1.16's `ScriptArguments`, `DPOConfig` with transformers
//! 5.24's `TrainingArguments`, `ModelConfig`, `DatasetMixtureConfig`) and what `sdpo` does with
//! it: honoured, mapped onto sdpo-rs keys, accepted with a warning because it changes nothing
//! here, or refused with the reason (unless it holds TRL's default, so a configuration dumped
//! from TRL loads). The tests (`trl_keys/tests.rs`) check this table against the keys, defaults
//! and types of TRL itself (`fixtures/trl/keys.json`), and docs/configuration.md shows it.
//!
//! This module holds the types and [`lookup`]; the table itself, [`TRL_KEYS`], is assembled in
//! `table.rs` (with `TrainingArguments`' keys in `training_args.rs`).

/// How a value is read from a flag or a YAML scalar (as `HfArgumentParser` types them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true`/`false` (also `yes`, `no`, `1`, `0`, ...); a bare `--flag` is `true`.
    Bool,
    /// An integer.
    Int,
    /// A float (`5e-7` too, which YAML 1.1 reads as a string).
    Float,
    /// An integer, or a float in `[0, 1)` for a fraction of the run.
    Steps,
    /// A string (a number-looking value stays text, e.g. a revision).
    Str,
    /// A list of strings (`--lora_target_modules q_proj v_proj`), or one string.
    StrList,
    /// A list of floats.
    FloatList,
    /// A mapping, or a JSON object in a string (`--lr_scheduler_kwargs '{"min_lr": 1e-7}'`).
    Dict,
    /// Anything (kept as written).
    Any,
}

/// What `sdpo` does with a TRL key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The same key, with the same meaning, in `TrainConfig`.
    Honoured,
    /// Turned into sdpo-rs keys (the text says how).
    Mapped(&'static str),
    /// Changes nothing here: accepted, with this one-line warning when it is not TRL's default.
    Ignored(&'static str),
    /// Refused with this reason unless it holds TRL's default.
    Refused(&'static str),
    /// Options of a tracking integration sdpo-rs does not have (trackio, ...): accepted with a
    /// warning (`report_to` itself refuses such an integration by name).
    Tracking,
}

/// Which TRL dataclass a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `trl.ScriptArguments`.
    Script,
    /// `trl.DPOConfig`, including transformers' `TrainingArguments`.
    Dpo,
    /// `trl.ModelConfig`.
    Model,
    /// `trl.DatasetMixtureConfig`.
    Mixture,
    /// A TRL 0.x key kept for old configurations.
    Legacy,
}

/// One TRL key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrlKey {
    /// The key.
    pub name: &'static str,
    /// Where TRL defines it.
    pub source: Source,
    /// How its value is read.
    pub kind: Kind,
    /// TRL's default, as JSON.
    pub default: &'static str,
    /// What sdpo does with it.
    pub status: Status,
}

const fn k(
    name: &'static str,
    source: Source,
    kind: Kind,
    default: &'static str,
    status: Status,
) -> TrlKey {
    TrlKey {
        name,
        source,
        kind,
        default,
        status,
    }
}

mod table;
mod training_args;

pub use table::TRL_KEYS;

/// The TRL key `name`, if there is one.
pub fn lookup(name: &str) -> Option<&'static TrlKey> {
    TRL_KEYS.iter().find(|key| key.name == name)
}

#[cfg(test)]
mod tests;
