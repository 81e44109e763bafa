//! Preference data for DPO/SDPO training: files in, padded plain-Rust batches out.
//!
//! `sdpo-data` reads preference data in TRL's formats (standard, conversational, implicit
//! prompt) from JSON/JSONL, Parquet and Arrow IPC files, `datasets` `save_to_disk` directories,
//! Hub-layout dataset directories (a split chosen by config) and globs, with a column mapping,
//! renders conversations with the tokenizer's chat template
//! (minijinja), tokenizes with the `tokenizers` crate (offline, from `tokenizer.json`),
//! truncates as TRL does, and collates pairs into batches whose chosen and rejected halves share
//! one padded length. It does not depend on any tensor framework: batches are `Vec<i64>`.
//!
//! # Pipeline
//!
//! ```no_run
//! use sdpo_data::{BatchSampler, DataConfig, PreferenceProcessor, PreferenceTokenizer};
//!
//! # fn main() -> Result<(), sdpo_data::DataError> {
//! let tokenizer = PreferenceTokenizer::from_dir("models/SmolLM2-135M-Instruct")?;
//! let config = DataConfig { max_length: Some(512), ..DataConfig::default() };
//! let processor = PreferenceProcessor::new(tokenizer, config)?;
//! let dataset = processor.process_file("train.jsonl")?;   // Vec<TokenizedPair> + report
//! println!("{} pairs, {} skipped", dataset.len(), dataset.report.skipped_total());
//! let collator = processor.collator()?;
//! let sampler = BatchSampler::new(dataset.len(), 8, 42)?
//!     .with_length_grouping(dataset.lengths(), 50)?;
//! for epoch in 0..3 {
//!     for indices in sampler.epoch(epoch) {
//!         let batch = collator.collate_indices(&dataset, &indices)?;
//!         // batch.input_ids, batch.attention_mask, batch.completion_mask: [2B, T] row-major,
//!         // rows 0..B chosen, rows B..2B rejected.
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Pieces
//!
//! | item | role |
//! | --- | --- |
//! | [`DataConfig`] | TRL-named options: `max_length`, `max_prompt_length`, `truncation_mode`, `pad_to_multiple_of`, `skip_invalid_records`, the column mapping and `dataset_train_split` / `dataset_test_split` |
//! | [`resolve_data_files`], [`DataFile`], [`FileKind`] | what a data path (file, directory, glob) stands for |
//! | [`read_data`], [`read_records`], [`PreferenceRecord`] | streaming reading (JSON line by line, Parquet by row group, Arrow by record batch) and per-record validation |
//! | [`PreferenceTokenizer`], [`TokenizerInfo`] | tokenizer + special tokens + chat template; policy/reference comparison |
//! | [`PreferenceProcessor`] | records to [`TokenizedPair`]s (parallel), with a [`DataReport`] |
//! | [`TokenizedDataset`] | the pairs, their origins, and a stable [`TokenizedDataset::content_hash`] |
//! | [`Collator`], [`PreferenceBatch`] | padding, truncation and masks |
//! | [`BatchSampler`] | seeded shuffling per epoch, optional length grouping |
//! | [`DataError`] | every failure, naming file, line (or index) and field |
//!
//! The user-facing description of file formats and behaviour is `docs/data-formats.md`.

#![warn(missing_docs)]

mod card;
mod collate;
mod columnar;
mod config;
mod dataset;
mod dataset_source;
mod error;
mod hash;
mod mixture;
mod pipeline;
mod processor;
mod reader;
mod record;
mod sampler;
mod source;
mod template;
mod templates;
mod tokenizer;

pub use card::{CardConfig, README, read_card_configs};
pub use collate::{Collator, PreferenceBatch, scored_completion_tokens};
pub use config::{
    DEFAULT_MAX_PROMPT_LENGTH_V0_28, DEFAULT_TEXT_BYTES_PER_TOKEN, DataConfig,
    MIN_DEFAULT_MAX_TEXT_BYTES, TrlPipeline, TruncationMode,
};
pub use dataset::{DataReport, TokenizedDataset, TokenizedPair};
pub use dataset_source::{dataset_has_split, dataset_split_names, resolve_dataset};
pub use error::{DataError, RecordLocation, RecordOrigin};
pub use hash::Fnv1a;
pub use mixture::{DataFilesArg, DatasetMixture, MIXTURE_SPLIT_SEED, MixtureEntry, PatternList};
pub use processor::PreferenceProcessor;
pub use reader::{FileLayout, RecordReader, read_data, read_file, read_records};
pub use record::{ColumnNames, KNOWN_ROLES, Message, PairBody, PreferenceRecord, TEMPLATE_FIELDS};
pub use sampler::{BatchSampler, DEFAULT_MEGABATCH_FACTOR};
pub use source::{DataFile, FileKind, resolve_data_files};
pub use template::{
    ChatTemplate, RESERVED_TEMPLATE_KWARGS, RenderInput, TEMPLATE_FUEL, TEMPLATE_MAX_COMPILE_WORK,
    TEMPLATE_MAX_OUTPUT_BYTES, TEMPLATE_MAX_TAG_CODE_BYTES, TEMPLATE_RECURSION_LIMIT,
    TemplateClock, TemplateTokens,
};
pub use templates::{ADDITIONAL_TEMPLATES_DIR, ChatTemplates};
pub use tokenizer::{PreferenceTokenizer, SpecialToken, TokenizerInfo};

/// Reads every valid record of a file into memory (no tokenization).
///
/// With `skip_invalid`, bad records are skipped and returned as errors alongside; otherwise
/// the first bad record's error is returned.
///
/// # Errors
/// A file-level error, or the first record error when `skip_invalid` is false.
pub fn load_records(
    path: impl AsRef<std::path::Path>,
    skip_invalid: bool,
) -> Result<(Vec<PreferenceRecord>, Vec<DataError>), DataError> {
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    read_records(path.as_ref(), |record| {
        match record {
            Ok(record) => records.push(record),
            Err(err) if skip_invalid => skipped.push(err),
            Err(err) => return Err(err),
        }
        Ok(())
    })?;
    Ok((records, skipped))
}
