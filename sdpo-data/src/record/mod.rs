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
//!
//! Next to the texts a record may carry what TRL passes to the chat template: `tools` (a JSON
//! string, as TRL recommends, or a list of tool schemas) and `chat_template_kwargs` (an object
//! of per-record template arguments such as Qwen3's `enable_thinking`). What reaches the
//! template keeps the key order of the input (Python dicts are ordered, and templates write
//! tool schemas with `tojson`), so a record may come with an order-preserving twin of its JSON
//! (see [`PreferenceRecord::from_json_ordered`]).

mod messages;
mod template_fields;

use minijinja::value::Value as TemplateValue;
use serde_json::Value;

use crate::error::{DataError, RecordOrigin};
use messages::{as_messages, as_text, check_prompt_end, split_messages, split_text, take_field};
pub use template_fields::{TEMPLATE_FIELDS, needs_ordered_twin};
use template_fields::{chat_template_kwargs, tools};

/// The roles a message may have.
pub const KNOWN_ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "developer"];

/// Which columns (JSON keys) hold the prompt, chosen and rejected texts: the column mapping
/// of [`crate::DataConfig`]. Error messages name fields by these names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnNames {
    /// The prompt column (absent in a file: implicit prompt). Default `prompt`; empty: the
    /// prompt is never read (a mixture entry whose `columns` leave it out).
    pub prompt: String,
    /// The preferred completion column. Default `chosen`.
    pub chosen: String,
    /// The dispreferred completion column. Default `rejected`.
    pub rejected: String,
    /// Which of [`TEMPLATE_FIELDS`] (`tools`, `chat_template_kwargs`) are read. Default both.
    pub template_fields: Vec<String>,
}

impl ColumnNames {
    /// Whether the template field `name` (`tools`, `chat_template_kwargs`) is read.
    pub fn reads(&self, name: &str) -> bool {
        self.template_fields.iter().any(|f| f == name)
    }
}

impl Default for ColumnNames {
    fn default() -> Self {
        Self {
            prompt: "prompt".into(),
            chosen: "chosen".into(),
            rejected: "rejected".into(),
            template_fields: TEMPLATE_FIELDS.iter().map(|f| f.to_string()).collect(),
        }
    }
}

/// One chat message. Keys other than `role` and `content` (`name`, `tool_calls`,
/// `reasoning_content`, ...) are kept in their order and passed to the chat template untouched.
#[derive(Debug, Clone)]
pub struct Message {
    /// One of [`KNOWN_ROLES`].
    pub role: String,
    /// The message text.
    pub content: String,
    /// Any other keys of the message object, in input order.
    pub extra: Vec<(String, TemplateValue)>,
}

/// Messages are equal as Python dicts are: same role, content and other keys, in any order.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.role == other.role
            && self.content == other.content
            && self.extra.len() == other.extra.len()
            && TemplateValue::from_iter(self.extra.iter().cloned())
                == TemplateValue::from_iter(other.extra.iter().cloned())
    }
}

impl Message {
    /// A message with only a role and a content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            extra: Vec::new(),
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

/// One validated preference pair, what its chat template sees besides the messages, and where
/// it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceRecord {
    /// File and line/index, for error messages.
    pub origin: RecordOrigin,
    /// The pair's text.
    pub body: PairBody,
    /// The `tools` column: a list of tool schemas (parsed when given as a JSON string), or
    /// `None`. Passed to the chat template of conversational records.
    pub tools: Option<TemplateValue>,
    /// The `chat_template_kwargs` column: template arguments, in input order.
    pub chat_template_kwargs: Vec<(String, TemplateValue)>,
}

pub(crate) fn json_type(value: &Value) -> &'static str {
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
pub(crate) enum Kind {
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
        Self::from_json_ordered(value, None, origin, columns)
    }

    /// As [`Self::from_json_with_columns`], with `ordered`, the same record parsed into an
    /// order-preserving value: message keys, `tools` and `chat_template_kwargs` are taken from
    /// it in their input order (without it, object keys come sorted).
    ///
    /// # Errors
    /// A record-level [`DataError`] naming `origin` and the offending field.
    pub fn from_json_ordered(
        value: Value,
        ordered: Option<&TemplateValue>,
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
        let field_twin = |key: &str| ordered.and_then(|o| o.get_attr(key).ok());
        let mut template_field = |name: &str| {
            if columns.reads(name) {
                object.remove(name)
            } else {
                None
            }
        };
        let tools_value = template_field("tools");
        let kwargs_value = template_field("chat_template_kwargs");
        let tools = tools(tools_value, field_twin("tools"), &origin)?;
        let chat_template_kwargs =
            chat_template_kwargs(kwargs_value, field_twin("chat_template_kwargs"), &origin)?;
        let chosen = take_field(&mut object, chosen_key, &origin)?;
        let rejected = take_field(&mut object, rejected_key, &origin)?;
        let prompt = if prompt_key.is_empty() {
            None
        } else {
            object.remove(prompt_key).filter(|p| !p.is_null())
        };

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
                let chosen = as_messages(
                    chosen,
                    field_twin(chosen_key),
                    chosen_key,
                    "a list of messages",
                    &origin,
                )?;
                let rejected = as_messages(
                    rejected,
                    field_twin(rejected_key),
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
                            field_twin(prompt_key),
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
        Ok(Self {
            origin,
            body,
            tools,
            chat_template_kwargs,
        })
    }
}
