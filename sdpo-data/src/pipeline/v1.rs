//! TRL 1.16's preparation (`trl_semantics = "1.x"`, `DPOTrainer._prepare_dataset`):
//!
//! 1. plain-text records: the EOS text is appended to `chosen` and `rejected` unless they
//!    already end with it;
//! 2. three whole texts are tokenized: the prompt, prompt + chosen and prompt + rejected.
//!    Plain text goes through the tokenizer with its post-processor (`tokenizer(text)`, so a
//!    BOS the tokenizer adds is there); conversations through the chat template
//!    (`add_generation_prompt=True` for the prompt, never `continue_final_message`, the
//!    record's `tools` and `chat_template_kwargs`), then the tokenizer without specials;
//! 3. the prompt ends where the three token lists stop agreeing (`common_prefix_length`), and
//!    each completion is the rest of its whole text;
//! 4. with a `max_length` and `keep_start`, a record whose prompt alone fills `max_length` is
//!    dropped (counted in the report).
//!
//! Truncation of each row to `max_length` happens in the collator.

use super::{Outcome, PairNotes, TextEncoder, render_pair};
use crate::collate::scored_completion_tokens;
use crate::config::{DataConfig, TruncationMode};
use crate::dataset::TokenizedPair;
use crate::error::DataError;
use crate::record::{ColumnNames, PairBody, PreferenceRecord};
use crate::tokenizer::PreferenceTokenizer;

/// Tokenizes one record as TRL 1.16 does.
pub(crate) fn tokenize(
    tokenizer: &PreferenceTokenizer,
    config: &DataConfig,
    columns: &ColumnNames,
    record: &PreferenceRecord,
) -> Result<Outcome, DataError> {
    let origin = &record.origin;
    let encoder = TextEncoder::new(tokenizer, config, origin);
    let (prompt_ids, full_chosen, full_rejected) = match &record.body {
        PairBody::Standard {
            prompt,
            chosen,
            rejected,
        } => {
            let eos = tokenizer.info().eos.as_ref().map(|t| t.content.as_str());
            let with_eos = |text: &str| match eos {
                Some(eos) if !text.ends_with(eos) => format!("{prompt}{text}{eos}"),
                _ => format!("{prompt}{text}"),
            };
            (
                encoder.encode(prompt, true, &columns.prompt)?,
                encoder.encode(&with_eos(chosen), true, &columns.chosen)?,
                encoder.encode(&with_eos(rejected), true, &columns.rejected)?,
            )
        }
        PairBody::Conversational {
            prompt,
            chosen,
            rejected,
        } => {
            let (prompt_text, chosen_text, rejected_text) = render_pair(
                tokenizer,
                columns,
                record,
                (prompt, chosen, rejected),
                false,
                encoder.max_text_bytes(),
            )?;
            (
                encoder.encode(&prompt_text, false, &columns.prompt)?,
                encoder.encode(&chosen_text, false, &columns.chosen)?,
                encoder.encode(&rejected_text, false, &columns.rejected)?,
            )
        }
    };
    let prompt_len = common_prefix_length(&prompt_ids, &full_chosen)
        .min(common_prefix_length(&prompt_ids, &full_rejected));
    let mut notes = PairNotes {
        prompt_not_prefix: prompt_len < prompt_ids.len(),
        ..PairNotes::default()
    };
    let pair = TokenizedPair {
        prompt_ids: prompt_ids[..prompt_len].to_vec(),
        chosen_ids: full_chosen[prompt_len..].to_vec(),
        rejected_ids: full_rejected[prompt_len..].to_vec(),
    };
    let mode = config.truncation_mode();
    if let Some(max) = config.max_length
        && mode == TruncationMode::KeepStart
        && prompt_len >= max
    {
        return Ok(Outcome::Dropped(DataError::CompletionTruncatedAway {
            origin: origin.clone(),
            field: columns.prompt.clone(),
            prompt_len,
            max_length: max,
            mode: mode.as_str(),
        }));
    }
    notes.unscored = [pair.chosen_ids.len(), pair.rejected_ids.len()]
        .into_iter()
        .any(|len| scored_completion_tokens(prompt_len, len, config.max_length, mode) == 0);
    Ok(Outcome::Kept { pair, notes })
}

/// How many leading ids `a` and `b` share (TRL's `common_prefix_length`).
pub(crate) fn common_prefix_length(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
