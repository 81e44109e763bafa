//! Validation of the message lists of conversational records, and TRL's implicit-prompt
//! extraction (`extract_prompt`).

use minijinja::value::Value as TemplateValue;
use serde_json::{Map, Value};

use super::{KNOWN_ROLES, Message, PairBody, json_type};
use crate::error::{DataError, RecordOrigin};

pub(super) fn take_field(
    object: &mut Map<String, Value>,
    field: &str,
    origin: &RecordOrigin,
) -> Result<Value, DataError> {
    match object.remove(field) {
        Some(Value::Null) | None => Err(DataError::MissingField {
            origin: origin.clone(),
            field: field.into(),
        }),
        Some(value) => Ok(value),
    }
}

pub(super) fn as_text(
    value: Value,
    field: &str,
    may_be_empty: bool,
    expected: &'static str,
    origin: &RecordOrigin,
) -> Result<String, DataError> {
    match value {
        Value::String(text) => {
            if text.is_empty() && !may_be_empty {
                return Err(DataError::EmptyField {
                    origin: origin.clone(),
                    field: field.into(),
                });
            }
            Ok(text)
        }
        other => Err(DataError::WrongType {
            origin: origin.clone(),
            field: field.into(),
            expected,
            found: json_type(&other),
        }),
    }
}

pub(super) fn as_messages(
    value: Value,
    twin: Option<TemplateValue>,
    field: &str,
    expected: &'static str,
    origin: &RecordOrigin,
) -> Result<Vec<Message>, DataError> {
    let Value::Array(items) = value else {
        return Err(DataError::WrongType {
            origin: origin.clone(),
            field: field.into(),
            expected,
            found: json_type(&value),
        });
    };
    if items.is_empty() {
        return Err(DataError::EmptyField {
            origin: origin.clone(),
            field: field.into(),
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let twin = twin.as_ref().and_then(|t| t.get_item_by_index(i).ok());
            as_message(item, twin, &format!("{field}[{i}]"), origin)
        })
        .collect()
}

fn as_message(
    value: Value,
    twin: Option<TemplateValue>,
    field: &str,
    origin: &RecordOrigin,
) -> Result<Message, DataError> {
    let found = json_type(&value);
    let Value::Object(mut object) = value else {
        return Err(DataError::WrongType {
            origin: origin.clone(),
            field: field.into(),
            expected: "a message object with `role` and `content`",
            found,
        });
    };
    let mut string_key = |key: &str| -> Result<String, DataError> {
        let field = format!("{field}.{key}");
        match object.remove(key) {
            Some(Value::String(text)) => Ok(text),
            None => Err(DataError::MissingField {
                origin: origin.clone(),
                field,
            }),
            Some(other) => Err(DataError::WrongType {
                origin: origin.clone(),
                field,
                expected: "a string",
                found: json_type(&other),
            }),
        }
    };
    let role = string_key("role")?;
    let content = string_key("content")?;
    if !KNOWN_ROLES.contains(&role.as_str()) {
        return Err(DataError::UnknownRole {
            origin: origin.clone(),
            field: format!("{field}.role"),
            role,
        });
    }
    Ok(Message {
        role,
        content,
        extra: extra_keys(object, twin),
    })
}

/// The keys of a message other than `role` and `content`: in the twin's order when there is an
/// order-preserving twin, else in the (sorted) order of `object`.
fn extra_keys(
    object: Map<String, Value>,
    twin: Option<TemplateValue>,
) -> Vec<(String, TemplateValue)> {
    if let Some(twin) = twin.filter(|t| t.kind() == minijinja::value::ValueKind::Map)
        && let Ok(keys) = twin.try_iter()
    {
        return keys
            .filter_map(|key| {
                let name = key.as_str()?.to_string();
                if name == "role" || name == "content" || !object.contains_key(&name) {
                    return None;
                }
                let value = twin.get_item(&key).ok()?;
                Some((name, value))
            })
            .collect();
    }
    object
        .into_iter()
        .map(|(key, value)| (key, TemplateValue::from_serialize(&value)))
        .collect()
}

/// TRL's `extract_prompt` on strings: the longest common prefix (by character), ending before
/// the first difference; a space just before the difference belongs to the completions. When
/// one string starts with the whole other, TRL's loop stops one character early; kept so the
/// split matches TRL and both completions stay non-empty.
pub(super) fn split_text(chosen: String, rejected: String) -> PairBody {
    let mut split = None;
    let mut last = 0;
    for ((byte, c), r) in chosen.char_indices().zip(rejected.chars()) {
        last = byte;
        if c != r {
            split = Some(byte);
            break;
        }
    }
    let split = match split {
        Some(split) if chosen[..split].ends_with(' ') => split - 1,
        Some(split) => split,
        None => last,
    };
    PairBody::Standard {
        prompt: chosen[..split].to_string(),
        rejected: rejected[split..].to_string(),
        chosen: chosen[split..].to_string(),
    }
}

/// TRL's `extract_prompt` on conversations: the shared leading messages.
pub(super) fn split_messages(
    mut chosen: Vec<Message>,
    mut rejected: Vec<Message>,
    chosen_key: &str,
    origin: &RecordOrigin,
) -> Result<PairBody, DataError> {
    let shortest = chosen.len().min(rejected.len());
    let split = (0..shortest)
        .find(|&i| chosen[i] != rejected[i])
        .unwrap_or(shortest.saturating_sub(1));
    if split == 0 {
        return Err(DataError::InvalidRecord {
            origin: origin.clone(),
            field: chosen_key.into(),
            reason: "there is no `prompt`, and `chosen` and `rejected` differ from their first message on, so no implicit prompt can be extracted".into(),
        });
    }
    let prompt: Vec<Message> = chosen.drain(..split).collect();
    rejected.drain(..split);
    Ok(PairBody::Conversational {
        prompt,
        chosen,
        rejected,
    })
}

/// TRL renders a prompt ending in a user/tool turn with the generation prompt and one ending in
/// an assistant turn as a continuation; any other last role is an error there, and here.
pub(super) fn check_prompt_end(
    prompt: &[Message],
    prompt_key: &str,
    origin: &RecordOrigin,
) -> Result<(), DataError> {
    let Some(last) = prompt.last() else {
        return Err(DataError::EmptyField {
            origin: origin.clone(),
            field: prompt_key.into(),
        });
    };
    if matches!(last.role.as_str(), "user" | "tool" | "assistant") {
        return Ok(());
    }
    Err(DataError::InvalidRecord {
        origin: origin.clone(),
        field: format!("{prompt_key}[{}].role", prompt.len() - 1),
        reason: format!(
            "the prompt's last message must be from user, tool or assistant, found `{}`",
            last.role
        ),
    })
}
