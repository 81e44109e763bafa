//! One record to one [`TokenizedPair`], the way each TRL version prepares its dataset:
//! [`v1`] (TRL 1.16, `trl_semantics = "1.x"`) and [`v0_28`] (TRL 0.28), with the helpers they
//! share (encoding, chat-template rendering with a record's `tools` and
//! `chat_template_kwargs`).

pub(crate) mod v0_28;
pub(crate) mod v1;

use crate::config::DataConfig;
use crate::dataset::TokenizedPair;
use crate::error::{DataError, RecordOrigin};
use crate::record::{ColumnNames, Message, PreferenceRecord};
use crate::template::RenderInput;
use crate::tokenizer::PreferenceTokenizer;

/// What became of one record.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The pair goes into the dataset.
    Kept {
        /// The ids.
        pair: TokenizedPair,
        /// What happened on the way, for the report.
        notes: PairNotes,
    },
    /// The record is left out as its TRL version leaves it out (TRL 1.x: the prompt fills
    /// `max_length` under `keep_start`); counted in the report, never an error.
    Dropped(DataError),
}

/// Facts about a kept pair that the report counts.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PairNotes {
    /// TRL 0.28: the prompt was cut to `max_prompt_length`.
    pub prompt_truncated: bool,
    /// TRL 1.x: the tokenized prompt was not a prefix of the tokenized prompt + completion, so
    /// its diverging tail is not part of the pair (TRL warns once).
    pub prompt_not_prefix: bool,
    /// TRL 1.x: a completion has no token scored after the next-token shift and `max_length`
    /// truncation (TRL keeps such pairs; they contribute no gradient).
    pub unscored: bool,
}

/// Tokenizes one record's texts, refusing a text over the configured
/// [`max_text_bytes`](DataConfig::max_text_bytes) before the tokenizer sees it.
pub(crate) struct TextEncoder<'a> {
    tokenizer: &'a PreferenceTokenizer,
    max_text_bytes: usize,
    origin: &'a RecordOrigin,
}

impl<'a> TextEncoder<'a> {
    /// The encoder of one record.
    pub(crate) fn new(
        tokenizer: &'a PreferenceTokenizer,
        config: &DataConfig,
        origin: &'a RecordOrigin,
    ) -> Self {
        Self {
            tokenizer,
            max_text_bytes: config.max_text_bytes(),
            origin,
        }
    }

    /// The most bytes a text may have to be tokenized.
    pub(crate) fn max_text_bytes(&self) -> usize {
        self.max_text_bytes
    }

    /// Token ids of `text`, with the tokenizer's post-processor specials when `special`;
    /// errors name the record and `field`.
    pub(crate) fn encode(
        &self,
        text: &str,
        special: bool,
        field: &str,
    ) -> Result<Vec<u32>, DataError> {
        if text.len() > self.max_text_bytes {
            return Err(DataError::TextTooLong {
                origin: self.origin.clone(),
                field: field.into(),
                bytes: text.len(),
                limit: self.max_text_bytes,
            });
        }
        let result = if special {
            self.tokenizer.encode_with_special_tokens(text, true)
        } else {
            self.tokenizer.encode(text)
        };
        result.map_err(|source| DataError::Tokenize {
            origin: self.origin.clone(),
            field: field.into(),
            source,
        })
    }
}

/// Renders `messages` with the record's tools and template arguments; errors name the record,
/// the field and the template line.
fn render(
    tokenizer: &PreferenceTokenizer,
    record: &PreferenceRecord,
    messages: &[Message],
    add_generation_prompt: bool,
    continue_final_message: bool,
    field: &str,
    max_text_bytes: usize,
) -> Result<String, DataError> {
    let input = RenderInput {
        messages,
        tools: record.tools.as_ref(),
        kwargs: &record.chat_template_kwargs,
        add_generation_prompt,
        continue_final_message,
        // A longer text would be refused before tokenizing: rendering stops there.
        max_output_bytes: Some(max_text_bytes),
    };
    match tokenizer.apply_chat_template(&input) {
        None => Err(DataError::NoChatTemplate {
            origin: record.origin.clone(),
            field: field.into(),
        }),
        Some(Err(source)) => Err(DataError::TemplateRender {
            origin: record.origin.clone(),
            field: field.into(),
            line: source.line(),
            source,
        }),
        Some(Ok(text)) => Ok(text),
    }
}

/// The three renderings of a conversational pair: the prompt (with the generation prompt, or
/// as a continuation of its last message when `continue_final`), prompt + chosen and
/// prompt + rejected (neither).
pub(crate) fn render_pair(
    tokenizer: &PreferenceTokenizer,
    columns: &ColumnNames,
    record: &PreferenceRecord,
    turns: (&[Message], &[Message], &[Message]),
    continue_final: bool,
    max_text_bytes: usize,
) -> Result<(String, String, String), DataError> {
    let (prompt, chosen, rejected) = turns;
    let joined = |more: &[Message]| [prompt, more].concat();
    Ok((
        render(
            tokenizer,
            record,
            prompt,
            !continue_final,
            continue_final,
            &columns.prompt,
            max_text_bytes,
        )?,
        render(
            tokenizer,
            record,
            &joined(chosen),
            false,
            false,
            &columns.chosen,
            max_text_bytes,
        )?,
        render(
            tokenizer,
            record,
            &joined(rejected),
            false,
            false,
            &columns.rejected,
            max_text_bytes,
        )?,
    ))
}
