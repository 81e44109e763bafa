//! Preference records: validation of one parsed JSON object into a [`PreferenceRecord`], in
//! TRL's three formats.
//!
//! * *standard*: `prompt`, `chosen`, `rejected` are strings;
//! * *conversational*: the same fields are lists of `{"role", "content"}` messages;
//! * *implicit prompt*: only `chosen` and `rejected` (strings or conversations); the shared
//!   start becomes the prompt, as TRL's `extract_prompt` does it (messages are compared whole;
//!   strings character by character, and a space just before the first difference goes to the
//!   completion). A string `prompt` next to conversational `chosen`/`rejected` is ignored and the
//!   prompt is extracted, as TRL's `maybe_extract_prompt` does.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{DataError, RecordOrigin};

/// The roles a message may have.
pub const KNOWN_ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "developer"];

/// Which columns (JSON keys) hold the prompt, chosen and rejected texts: the column mapping
/// of [`crate::DataConfig`]. Error messages name fields by these names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnNames {
    /// The prompt column (absent in a file: implicit prompt). Default `prompt`.
    pub prompt: String,
    /// The preferred completion column. Default `chosen`.
    pub chosen: String,
    /// The dispreferred completion column. Default `rejected`.
    pub rejected: String,
}

impl Default for ColumnNames {
    fn default() -> Self {
        Self {
            prompt: "prompt".into(),
            chosen: "chosen".into(),
            rejected: "rejected".into(),
        }
    }
}

/// One chat message. Keys other than `role` and `content` (`name`, `tool_calls`, ...) are kept
/// and passed to the chat template untouched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// One of [`KNOWN_ROLES`].
    pub role: String,
    /// The message text.
    pub content: String,
    /// Any other keys of the message object.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// A message with only a role and a content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            extra: Map::new(),
        }
    }
}

/// The text of a pair, in one of the two TRL representations.
#[derive(Debug, Clone, PartialEq)]
pub enum PairBody {
    /// Plain strings; the completions get the EOS token appended at tokenization.
    Standard {
        /// The prompt (may be empty).
        prompt: String,
        /// The preferred completion (not empty).
        chosen: String,
        /// The dispreferred completion (not empty).
        rejected: String,
    },
    /// Conversations rendered with the tokenizer's chat template.
    Conversational {
        /// The prompt turns (not empty; the last is from user, tool or assistant).
        prompt: Vec<Message>,
        /// The preferred continuation (not empty).
        chosen: Vec<Message>,
        /// The dispreferred continuation (not empty).
        rejected: Vec<Message>,
    },
}

/// One validated preference pair and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceRecord {
    /// File and line/index, for error messages.
    pub origin: RecordOrigin,
    /// The pair's text.
    pub body: PairBody,
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// How `chosen` is written, which fixes how `rejected` and `prompt` must be written.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Messages,
}

impl PreferenceRecord {
    /// Validates one parsed JSON value (one JSONL line or one array element) with the default
    /// column names `prompt`, `chosen`, `rejected`.
    ///
    /// # Errors
    /// A record-level [`DataError`] naming `origin` and the offending field.
    pub fn from_json(value: Value, origin: RecordOrigin) -> Result<Self, DataError> {
        Self::from_json_with_columns(value, origin, &ColumnNames::default())
    }

    /// Validates one parsed JSON value whose prompt, chosen and rejected texts are under the
    /// keys `columns` names; errors name fields by those keys.
    ///
    /// # Errors
    /// A record-level [`DataError`] naming `origin` and the offending field.
    pub fn from_json_with_columns(
        value: Value,
        origin: RecordOrigin,
        columns: &ColumnNames,
    ) -> Result<Self, DataError> {
        let found = json_type(&value);
        let Value::Object(mut object) = value else {
            return Err(DataError::WrongType {
                origin,
                field: "<record>".into(),
                expected: "a JSON object with `chosen` and `rejected`",
                found,
            });
        };
        let (prompt_key, chosen_key, rejected_key) = (
            columns.prompt.as_str(),
            columns.chosen.as_str(),
            columns.rejected.as_str(),
        );
        let chosen = take_field(&mut object, chosen_key, &origin)?;
        let rejected = take_field(&mut object, rejected_key, &origin)?;
        let prompt = object.remove(prompt_key).filter(|p| !p.is_null());

        let kind = match &chosen {
            Value::String(_) => Kind::Text,
            Value::Array(_) => Kind::Messages,
            other => {
                return Err(DataError::WrongType {
                    origin,
                    field: chosen_key.into(),
                    expected: "a string or a list of messages",
                    found: json_type(other),
                });
            }
        };
        let body = match kind {
            Kind::Text => {
                let chosen = as_text(chosen, chosen_key, false, "a string", &origin)?;
                let rejected = as_text(
                    rejected,
                    rejected_key,
                    false,
                    "a string, like `chosen`",
                    &origin,
                )?;
                match prompt {
                    Some(prompt) => {
                        let prompt =
                            as_text(prompt, prompt_key, true, "a string, like `chosen`", &origin)?;
                        PairBody::Standard {
                            prompt,
                            chosen,
                            rejected,
                        }
                    }
                    None => split_text(chosen, rejected),
                }
            }
            Kind::Messages => {
                let chosen = as_messages(chosen, chosen_key, "a list of messages", &origin)?;
                let rejected = as_messages(
                    rejected,
                    rejected_key,
                    "a list of messages, like `chosen`",
                    &origin,
                )?;
                match prompt {
                    Some(Value::String(_)) | None => {
                        split_messages(chosen, rejected, chosen_key, &origin)?
                    }
                    Some(prompt) => {
                        let prompt = as_messages(
                            prompt,
                            prompt_key,
                            "a list of messages, like `chosen`",
                            &origin,
                        )?;
                        PairBody::Conversational {
                            prompt,
                            chosen,
                            rejected,
                        }
                    }
                }
            }
        };
        if let PairBody::Conversational { prompt, .. } = &body {
            check_prompt_end(prompt, prompt_key, &origin)?;
        }
        Ok(Self { origin, body })
    }
}

fn take_field(
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

fn as_text(
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

fn as_messages(
    value: Value,
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
        .map(|(i, item)| as_message(item, &format!("{field}[{i}]"), origin))
        .collect()
}

fn as_message(value: Value, field: &str, origin: &RecordOrigin) -> Result<Message, DataError> {
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
        extra: object,
    })
}

/// TRL's `extract_prompt` on strings: the longest common prefix (by character), ending before
/// the first difference; a space just before the difference belongs to the completions. When
/// one string starts with the whole other, TRL's loop stops one character early; kept so the
/// split matches TRL and both completions stay non-empty.
fn split_text(chosen: String, rejected: String) -> PairBody {
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
fn split_messages(
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
fn check_prompt_end(
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
