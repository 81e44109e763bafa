//! TRL 0.28's preparation (`trl_semantics = "0.28"`):
//!
//! * standard records: prompt, chosen and rejected are tokenized separately (no post-processor
//!   specials) and EOS is appended to each completion unless it already ends with EOS;
//! * conversational records: the prompt is rendered with the generation prompt (or, when it
//!   ends with an assistant turn, as a continuation of that turn); prompt + chosen and
//!   prompt + rejected are rendered whole, and each completion is the rendering's suffix after
//!   the common prefix of the three renderings (TRL's `apply_chat_template`). Nothing is
//!   appended: the template closes the turn;
//! * BOS is prepended to the prompt only when `add_bos_token` is set and it is not already there;
//! * `max_prompt_length` cuts the prompt (by the truncation mode); a pair whose completion would
//!   be cut away entirely by `max_length`, or that has no scored completion token, is an error
//!   (a counted skip with `skip_invalid_records`).

use super::{Outcome, PairNotes, TextEncoder, render_pair};
use crate::collate::scored_completion_tokens;
use crate::config::{DataConfig, TruncationMode};
use crate::dataset::TokenizedPair;
use crate::error::DataError;
use crate::record::{ColumnNames, Message, PairBody, PreferenceRecord};
use crate::tokenizer::PreferenceTokenizer;

/// Tokenizes one record as TRL 0.28 does.
pub(crate) fn tokenize(
    tokenizer: &PreferenceTokenizer,
    config: &DataConfig,
    columns: &ColumnNames,
    record: &PreferenceRecord,
) -> Result<Outcome, DataError> {
    let origin = &record.origin;
    let encoder = TextEncoder::new(tokenizer, config, origin);
    let info = tokenizer.info();
    let (mut prompt_ids, chosen_ids, rejected_ids) = match &record.body {
        PairBody::Standard {
            prompt,
            chosen,
            rejected,
        } => {
            let mut chosen_ids = encoder.encode(chosen, false, &columns.chosen)?;
            let mut rejected_ids = encoder.encode(rejected, false, &columns.rejected)?;
            if let Some(eos) = info.eos_token_id() {
                for ids in [&mut chosen_ids, &mut rejected_ids] {
                    if ids.last() != Some(&eos) {
                        ids.push(eos);
                    }
                }
            }
            (
                encoder.encode(prompt, false, &columns.prompt)?,
                chosen_ids,
                rejected_ids,
            )
        }
        PairBody::Conversational {
            prompt,
            chosen,
            rejected,
        } => {
            let (prompt, chosen, rejected) = render_conversation(
                tokenizer,
                columns,
                record,
                (prompt, chosen, rejected),
                encoder.max_text_bytes(),
            )?;
            (
                encoder.encode(&prompt, false, &columns.prompt)?,
                encoder.encode(&chosen, false, &columns.chosen)?,
                encoder.encode(&rejected, false, &columns.rejected)?,
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
        (&chosen_ids, &columns.chosen),
        (&rejected_ids, &columns.rejected),
    ] {
        if ids.is_empty() {
            return Err(DataError::InvalidRecord {
                origin: origin.clone(),
                field: field.clone(),
                reason: "the completion tokenizes to no tokens".into(),
            });
        }
    }
    let mode = config.truncation_mode();
    let mut notes = PairNotes::default();
    if let Some(max) = config.max_prompt_length()
        && prompt_ids.len() > max
    {
        notes.prompt_truncated = true;
        match mode {
            TruncationMode::KeepEnd => {
                prompt_ids.drain(..prompt_ids.len() - max);
            }
            TruncationMode::KeepStart => prompt_ids.truncate(max),
        }
    }
    if let Some(max) = config.max_length
        && mode == TruncationMode::KeepStart
        && prompt_ids.len() >= max
    {
        return Err(DataError::CompletionTruncatedAway {
            origin: origin.clone(),
            field: columns.prompt.clone(),
            prompt_len: prompt_ids.len(),
            max_length: max,
            mode: mode.as_str(),
        });
    }
    for (ids, field) in [(&chosen_ids, "chosen"), (&rejected_ids, "rejected")] {
        let max = config.max_length;
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
    Ok(Outcome::Kept {
        pair: TokenizedPair {
            prompt_ids,
            chosen_ids,
            rejected_ids,
        },
        notes,
    })
}

/// Returns (prompt text, chosen text, rejected text) as TRL 0.28's `apply_chat_template` does.
fn render_conversation(
    tokenizer: &PreferenceTokenizer,
    columns: &ColumnNames,
    record: &PreferenceRecord,
    turns: (&[Message], &[Message], &[Message]),
    max_text_bytes: usize,
) -> Result<(String, String, String), DataError> {
    let (prompt, chosen, rejected) = turns;
    let continue_final = prompt.last().is_some_and(|m| m.role == "assistant");
    let (prompt_text, full_chosen, full_rejected) = render_pair(
        tokenizer,
        columns,
        record,
        (prompt, chosen, rejected),
        continue_final,
        max_text_bytes,
    )?;
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

/// Length in bytes of the longest common prefix, on a character boundary of both strings.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}
