//! [`PreferenceProcessor`]: records to [`TokenizedPair`]s, the way the configured TRL version's
//! `DPOTrainer` prepares its dataset (see `pipeline`), in parallel with rayon, from any data
//! source: data paths, a dataset directory with its configs, or a mixture of datasets.

use std::path::Path;

use rayon::prelude::*;

use crate::collate::Collator;
use crate::config::{DataConfig, TrlPipeline};
use crate::dataset::{DataReport, TokenizedDataset, TokenizedPair};
use crate::dataset_source::resolve_dataset;
use crate::error::DataError;
use crate::mixture::DatasetMixture;
use crate::pipeline::{Outcome, v0_28, v1};
use crate::reader::{RecordReader, read_data};
use crate::record::{ColumnNames, PreferenceRecord};
use crate::tokenizer::PreferenceTokenizer;

/// How many records are parsed before a parallel tokenization pass; bounds memory held as text.
const CHUNK: usize = 4096;

/// Turns preference records into tokenized pairs; cheap to share across threads.
#[derive(Debug)]
pub struct PreferenceProcessor {
    tokenizer: PreferenceTokenizer,
    config: DataConfig,
    columns: ColumnNames,
}

impl PreferenceProcessor {
    /// A processor with `tokenizer` and `config`.
    ///
    /// # Errors
    /// [`DataError::Config`] when `config` is out of range.
    pub fn new(tokenizer: PreferenceTokenizer, config: DataConfig) -> Result<Self, DataError> {
        config.validate()?;
        let columns = config.columns();
        Ok(Self {
            tokenizer,
            config,
            columns,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &PreferenceTokenizer {
        &self.tokenizer
    }

    /// The config.
    pub fn config(&self) -> &DataConfig {
        &self.config
    }

    /// A collator with this config and the tokenizer's pad id.
    ///
    /// # Errors
    /// [`DataError::Config`] when the tokenizer has neither a pad nor an EOS token.
    pub fn collator(&self) -> Result<Collator, DataError> {
        let pad = self
            .tokenizer
            .info()
            .pad_token_id()
            .ok_or(DataError::Config {
                field: "pad_token",
                reason: "the tokenizer has neither pad_token nor eos_token to pad with".into(),
            })?;
        Collator::new(&self.config, pad)
    }

    /// Reads and tokenizes the training data at `path`, streaming it in chunks: a JSON/JSONL,
    /// Parquet or Arrow IPC file, a `save_to_disk` directory, a directory of shards, a Hub-layout
    /// dataset directory (split `dataset_train_split`) or a glob (see [`crate::resolve_data_files`]).
    ///
    /// # Errors
    /// The first bad record's error (unless `skip_invalid_records`), or a file-level error.
    pub fn process_file(&self, path: impl AsRef<Path>) -> Result<TokenizedDataset, DataError> {
        self.process_split(path, &self.config.dataset_train_split)
    }

    /// As [`Self::process_file`] for evaluation data: dataset directories give their
    /// `dataset_test_split`. A single file or a glob reads the same as with `process_file`.
    ///
    /// # Errors
    /// As [`Self::process_file`].
    pub fn process_eval_file(&self, path: impl AsRef<Path>) -> Result<TokenizedDataset, DataError> {
        self.process_split(path, &self.config.dataset_test_split)
    }

    /// As [`Self::process_file`], reading split `split` from dataset directories.
    ///
    /// # Errors
    /// As [`Self::process_file`].
    pub fn process_split(
        &self,
        path: impl AsRef<Path>,
        split: &str,
    ) -> Result<TokenizedDataset, DataError> {
        self.process_paths(&[path.as_ref()], split)
    }

    /// Reads and tokenizes several data paths, concatenated in the given order (dataset
    /// directories give their `dataset_train_split`).
    ///
    /// # Errors
    /// As [`Self::process_file`].
    pub fn process_files<P: AsRef<Path>>(
        &self,
        paths: &[P],
    ) -> Result<TokenizedDataset, DataError> {
        self.process_paths(paths, &self.config.dataset_train_split)
    }

    fn process_paths<P: AsRef<Path>>(
        &self,
        paths: &[P],
        split: &str,
    ) -> Result<TokenizedDataset, DataError> {
        self.process_with(|on_record| {
            let mut files = Vec::new();
            for path in paths {
                let read = read_data(path.as_ref(), split, &self.columns, &mut *on_record)?;
                files.extend(read.into_iter().map(|f| f.path));
            }
            Ok(files)
        })
    }

    /// Reads and tokenizes split `split` of the dataset `dataset` as `datasets.load_dataset`
    /// would load it: a dataset directory whose `README.md` declares `configs:` (the config
    /// `dataset_config`, else the default one), a `save_to_disk` directory, a Hub-layout
    /// directory or a data file (see [`crate::resolve_dataset`]). This is what `dataset_name`
    /// reads; a Hub id is resolved to its local snapshot directory before it gets here.
    ///
    /// # Errors
    /// As [`Self::process_file`], and [`DataError::DataSource`] when the dataset has no such
    /// split or config.
    pub fn process_dataset(
        &self,
        dataset: impl AsRef<Path>,
        split: &str,
    ) -> Result<TokenizedDataset, DataError> {
        let files = resolve_dataset(
            dataset.as_ref(),
            self.config.dataset_config.as_deref(),
            split,
        )?;
        self.process_with(|on_record| {
            for file in &files {
                crate::reader::read_file(file, &self.columns, &mut &mut *on_record)?;
            }
            Ok(files.iter().map(|f| f.path.clone()).collect())
        })
    }

    /// Whether the dataset `dataset` has split `split` (for an optional evaluation split).
    ///
    /// # Errors
    /// [`DataError::DataSource`] or [`DataError::Io`] when the dataset itself cannot be read.
    pub fn dataset_has_split(
        &self,
        dataset: impl AsRef<Path>,
        split: &str,
    ) -> Result<bool, DataError> {
        crate::dataset_source::dataset_has_split(
            dataset.as_ref(),
            self.config.dataset_config.as_deref(),
            split,
        )
    }

    /// Reads and tokenizes split `split` (`train`, or `test` with `test_split_size`) of a
    /// mixture of datasets, as TRL's `get_dataset` builds it.
    ///
    /// # Errors
    /// As [`Self::process_dataset`] for each entry, and [`DataError::Config`] for a split the
    /// mixture does not have.
    pub fn process_mixture(
        &self,
        mixture: &DatasetMixture,
        split: &str,
    ) -> Result<TokenizedDataset, DataError> {
        self.process_with(|on_record| mixture.read(split, &self.columns, on_record))
    }

    /// Runs `read` (which hands every record to its callback and returns the files it read),
    /// tokenizing in parallel chunks of [`CHUNK`] records.
    fn process_with(
        &self,
        read: impl FnOnce(&mut RecordReader<'_>) -> Result<Vec<std::path::PathBuf>, DataError>,
    ) -> Result<TokenizedDataset, DataError> {
        let mut out = self.empty_dataset();
        let mut chunk = Vec::with_capacity(CHUNK);
        let files = {
            let mut on_record = |record: Result<PreferenceRecord, DataError>| {
                out.report.records_read += 1;
                match record {
                    Ok(record) => chunk.push(record),
                    Err(err) => self.skip_or_fail(&mut out.report, err)?,
                }
                if chunk.len() == CHUNK {
                    self.tokenize_chunk(&chunk, &mut out)?;
                    chunk.clear();
                }
                Ok(())
            };
            read(&mut on_record)?
        };
        out.report.files.extend(files);
        self.tokenize_chunk(&chunk, &mut out)?;
        Ok(out)
    }

    /// Tokenizes records already in memory.
    ///
    /// # Errors
    /// The first bad record's error (unless `skip_invalid_records`).
    pub fn process_records(
        &self,
        records: &[PreferenceRecord],
    ) -> Result<TokenizedDataset, DataError> {
        let mut out = self.empty_dataset();
        out.report.records_read = records.len();
        for chunk in records.chunks(CHUNK) {
            self.tokenize_chunk(chunk, &mut out)?;
        }
        Ok(out)
    }

    /// Tokenizes one record (no skipping; the error names the record).
    ///
    /// # Errors
    /// [`DataError::NoChatTemplate`], [`DataError::TemplateRender`], [`DataError::Tokenize`],
    /// [`DataError::InvalidRecord`] (a completion renders to nothing) or
    /// [`DataError::CompletionTruncatedAway`] (the pair's TRL version would drop it).
    pub fn tokenize_record(&self, record: &PreferenceRecord) -> Result<TokenizedPair, DataError> {
        match self.tokenize(record)? {
            Outcome::Kept { pair, .. } => Ok(pair),
            Outcome::Dropped(reason) => Err(reason),
        }
    }

    fn empty_dataset(&self) -> TokenizedDataset {
        TokenizedDataset {
            max_length: self.config.max_length,
            truncation_mode: self.config.truncation_mode(),
            ..Default::default()
        }
    }

    fn skip_or_fail(&self, report: &mut DataReport, err: DataError) -> Result<(), DataError> {
        if self.config.skip_invalid_records && err.is_record_error() {
            report.note_skip(&err, self.config.max_reported_reasons);
            Ok(())
        } else {
            Err(err)
        }
    }

    /// Tokenizes in parallel, then folds results in input order so the dataset, the report and
    /// the first error are the same on every run.
    fn tokenize_chunk(
        &self,
        chunk: &[PreferenceRecord],
        out: &mut TokenizedDataset,
    ) -> Result<(), DataError> {
        let results: Vec<Result<Outcome, DataError>> =
            chunk.par_iter().map(|r| self.tokenize(r)).collect();
        for (record, result) in chunk.iter().zip(results) {
            match result {
                Ok(Outcome::Kept { pair, notes }) => {
                    let report = &mut out.report;
                    report.pairs_kept += 1;
                    report.prompts_truncated += usize::from(notes.prompt_truncated);
                    report.prompts_not_prefix += usize::from(notes.prompt_not_prefix);
                    report.pairs_unscored += usize::from(notes.unscored);
                    if let Some(max) = self.config.max_length
                        && pair.chosen_len().max(pair.rejected_len()) > max
                    {
                        report.pairs_over_max_length += 1;
                    }
                    out.pairs.push(pair);
                    out.origins.push(record.origin.clone());
                }
                Ok(Outcome::Dropped(reason)) => out
                    .report
                    .note_skip(&reason, self.config.max_reported_reasons),
                Err(err) => self.skip_or_fail(&mut out.report, err)?,
            }
        }
        Ok(())
    }

    fn tokenize(&self, record: &PreferenceRecord) -> Result<Outcome, DataError> {
        match self.config.trl_semantics {
            TrlPipeline::V1 => v1::tokenize(&self.tokenizer, &self.config, &self.columns, record),
            TrlPipeline::V0_28 => {
                v0_28::tokenize(&self.tokenizer, &self.config, &self.columns, record)
            }
        }
    }
}
