//! [`PreferenceProcessor`]: records to [`TokenizedPair`]s, the way TRL 0.28's `DPOTrainer`
//! prepares its dataset, in parallel with rayon.
//!
//! * Standard records: prompt, chosen and rejected are tokenized separately (no post-processor
//!   specials) and EOS is appended to each completion unless it already ends with EOS.
//! * Conversational records: the prompt is rendered with the generation prompt (or, when it
//!   ends with an assistant turn, as a continuation of that turn); prompt + chosen and
//!   prompt + rejected are rendered whole, and each completion is the rendering's suffix after
//!   the prompt (TRL's `apply_chat_template`, taking the common prefix of the three renderings
//!   as the prompt). Nothing is appended: the template closes the turn.
//! * BOS is prepended to the prompt only when `add_bos_token` is set and it is not already there.
//! * `max_prompt_length` cuts the prompt (by `truncation_mode`); a pair whose completion would be
//!   cut away entirely by `max_length` is an error, or a counted drop when skipping is allowed.

use std::path::Path;

use rayon::prelude::*;

use crate::collate::{Collator, scored_completion_tokens};
use crate::config::{DataConfig, TruncationMode};
use crate::dataset::{DataReport, TokenizedDataset, TokenizedPair};
use crate::error::{DataError, RecordOrigin};
use crate::reader::read_data;
use crate::record::{ColumnNames, Message, PairBody, PreferenceRecord};
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

/// A pair plus what truncation did to it.
struct Tokenized {
    pair: TokenizedPair,
    prompt_truncated: bool,
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
        let mut out = self.empty_dataset();
        let mut chunk = Vec::with_capacity(CHUNK);
        for path in paths {
            let files = read_data(path.as_ref(), split, &self.columns, |record| {
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
            })?;
            out.report.files.extend(files.into_iter().map(|f| f.path));
        }
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
    /// [`DataError::CompletionTruncatedAway`].
    pub fn tokenize_record(&self, record: &PreferenceRecord) -> Result<TokenizedPair, DataError> {
        self.tokenize(record).map(|t| t.pair)
    }

    fn empty_dataset(&self) -> TokenizedDataset {
        TokenizedDataset {
            max_length: self.config.max_length,
            truncation_mode: self.config.truncation_mode,
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
        let results: Vec<Result<Tokenized, DataError>> =
            chunk.par_iter().map(|r| self.tokenize(r)).collect();
        for (record, result) in chunk.iter().zip(results) {
            match result {
                Ok(t) => {
                    let report = &mut out.report;
                    report.pairs_kept += 1;
                    report.prompts_truncated += usize::from(t.prompt_truncated);
                    if let Some(max) = self.config.max_length
                        && t.pair.chosen_len().max(t.pair.rejected_len()) > max
                    {
                        report.pairs_over_max_length += 1;
                    }
                    out.pairs.push(t.pair);
                    out.origins.push(record.origin.clone());
                }
                Err(err) => self.skip_or_fail(&mut out.report, err)?,
            }
        }
        Ok(())
    }

    fn tokenize(&self, record: &PreferenceRecord) -> Result<Tokenized, DataError> {
        let origin = &record.origin;
        let info = self.tokenizer.info();
        let (mut prompt_ids, mut chosen_ids, mut rejected_ids) = match &record.body {
            PairBody::Standard {
                prompt,
                chosen,
                rejected,
            } => {
                let mut chosen_ids = self.encode(chosen, &self.columns.chosen, origin)?;
                let mut rejected_ids = self.encode(rejected, &self.columns.rejected, origin)?;
                if let Some(eos) = info.eos_token_id() {
                    for ids in [&mut chosen_ids, &mut rejected_ids] {
                        if ids.last() != Some(&eos) {
                            ids.push(eos);
                        }
                    }
                }
                (
                    self.encode(prompt, &self.columns.prompt, origin)?,
                    chosen_ids,
                    rejected_ids,
                )
            }
            PairBody::Conversational {
                prompt,
                chosen,
                rejected,
            } => {
                let (prompt, chosen, rejected) =
                    self.render_conversation(prompt, chosen, rejected, origin)?;
                (
                    self.encode(&prompt, &self.columns.prompt, origin)?,
                    self.encode(&chosen, &self.columns.chosen, origin)?,
                    self.encode(&rejected, &self.columns.rejected, origin)?,
                )
            }
        };
        if info.add_bos_token
            && let Some(bos) = info.bos_token_id()
            && prompt_ids.first() != Some(&bos)
        {
            prompt_ids.insert(0, bos);
        }
        for (ids, field) in [
            (&mut chosen_ids, &self.columns.chosen),
            (&mut rejected_ids, &self.columns.rejected),
        ] {
            if ids.is_empty() {
                return Err(DataError::InvalidRecord {
                    origin: origin.clone(),
                    field: field.clone(),
                    reason: "the completion tokenizes to no tokens".into(),
                });
            }
        }
        let mode = self.config.truncation_mode;
        let mut prompt_truncated = false;
        if let Some(max) = self.config.max_prompt_length
            && prompt_ids.len() > max
        {
            prompt_truncated = true;
            match mode {
                TruncationMode::KeepEnd => {
                    prompt_ids.drain(..prompt_ids.len() - max);
                }
                TruncationMode::KeepStart => prompt_ids.truncate(max),
            }
        }
        if let Some(max) = self.config.max_length
            && mode == TruncationMode::KeepStart
            && prompt_ids.len() >= max
        {
            return Err(DataError::CompletionTruncatedAway {
                origin: origin.clone(),
                field: self.columns.prompt.clone(),
                prompt_len: prompt_ids.len(),
                max_length: max,
                mode: mode.as_str(),
            });
        }
        for (ids, field) in [(&chosen_ids, "chosen"), (&rejected_ids, "rejected")] {
            let max = self.config.max_length;
            if scored_completion_tokens(prompt_ids.len(), ids.len(), max, mode) == 0 {
                return Err(DataError::NoScoredToken {
                    origin: origin.clone(),
                    field: field.into(),
                    prompt_len: prompt_ids.len(),
                    completion_len: ids.len(),
                    max_length: max.map_or("none".into(), |m| m.to_string()),
                    mode: mode.as_str(),
                });
            }
        }
        Ok(Tokenized {
            pair: TokenizedPair {
                prompt_ids,
                chosen_ids,
                rejected_ids,
            },
            prompt_truncated,
        })
    }

    fn encode(
        &self,
        text: &str,
        field: &str,
        origin: &RecordOrigin,
    ) -> Result<Vec<u32>, DataError> {
        self.tokenizer
            .encode(text)
            .map_err(|source| DataError::Tokenize {
                origin: origin.clone(),
                field: field.into(),
                source,
            })
    }

    /// Returns (prompt text, chosen text, rejected text) as TRL's `apply_chat_template` does.
    fn render_conversation(
        &self,
        prompt: &[Message],
        chosen: &[Message],
        rejected: &[Message],
        origin: &RecordOrigin,
    ) -> Result<(String, String, String), DataError> {
        let continue_final = prompt.last().is_some_and(|m| m.role == "assistant");
        let render = |messages: &[Message], generation: bool, cont: bool, field: &str| match self
            .tokenizer
            .apply_chat_template(messages, generation, cont)
        {
            None => Err(DataError::NoChatTemplate {
                origin: origin.clone(),
                field: field.into(),
            }),
            Some(Err(source)) => Err(DataError::TemplateRender {
                origin: origin.clone(),
                field: field.into(),
                source,
            }),
            Some(Ok(text)) => Ok(text),
        };
        let prompt_text = render(
            prompt,
            !continue_final,
            continue_final,
            &self.columns.prompt,
        )?;
        let mut joined = Vec::with_capacity(prompt.len() + chosen.len().max(rejected.len()));
        joined.extend_from_slice(prompt);
        joined.extend_from_slice(chosen);
        let full_chosen = render(&joined, false, false, &self.columns.chosen)?;
        joined.truncate(prompt.len());
        joined.extend_from_slice(rejected);
        let full_rejected = render(&joined, false, false, &self.columns.rejected)?;
        // Some templates (DeepSeek-R1) add markup with the generation prompt that the full
        // rendering lacks; the shared prefix is the prompt, as in TRL.
        let split = common_prefix_len(&prompt_text, &full_chosen)
            .min(common_prefix_len(&prompt_text, &full_rejected));
        let mut prompt_text = prompt_text;
        prompt_text.truncate(split);
        Ok((
            prompt_text,
            full_chosen[split..].to_string(),
            full_rejected[split..].to_string(),
        ))
    }
}

/// Length in bytes of the longest common prefix, on a character boundary of both strings.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}
