//! The columns TRL passes to the chat template besides the messages: `tools` and
//! `chat_template_kwargs`, validated as TRL and transformers would use them.

use minijinja::value::{Value as TemplateValue, ValueKind};
use serde_json::Value;

use super::json_type;
use crate::error::{DataError, RecordOrigin};
use crate::template::RESERVED_TEMPLATE_KWARGS;

/// The column names TRL reads for the template (fixed, not mapped).
pub const TEMPLATE_FIELDS: [&str; 2] = ["tools", "chat_template_kwargs"];

/// Whether the record `value` holds objects whose key order reaches a chat template (tool
/// schemas, message keys besides `role` and `content`, keyword arguments with nested objects),
/// so that reading it again into an order-preserving value is worth it.
pub fn needs_ordered_twin(value: &Value) -> bool {
    let Value::Object(object) = value else {
        return false;
    };
    object.iter().any(|(key, field)| match field {
        Value::Array(items) if key == "tools" => !items.is_empty(),
        Value::Object(kwargs) if key == "chat_template_kwargs" => kwargs
            .values()
            .any(|v| matches!(v, Value::Object(_) | Value::Array(_))),
        Value::Array(items) => items.iter().any(|item| {
            item.as_object().is_some_and(|message| {
                message.len() > 2 || message.keys().any(|k| k != "role" && k != "content")
            })
        }),
        _ => false,
    })
}

fn invalid(origin: &RecordOrigin, field: &str, reason: String) -> DataError {
    DataError::InvalidRecord {
        origin: origin.clone(),
        field: field.into(),
        reason,
    }
}

/// The `tools` field: absent or `null` is no tools; a string is parsed as JSON (TRL's
/// `json.loads`); the result must be `null` or a list of objects (transformers refuses other
/// tools).
pub(super) fn tools(
    value: Option<Value>,
    twin: Option<TemplateValue>,
    origin: &RecordOrigin,
) -> Result<Option<TemplateValue>, DataError> {
    let (parsed, twin) = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => {
            let ordered: TemplateValue = serde_json::from_str(&text).map_err(|err| {
                invalid(
                    origin,
                    "tools",
                    format!("a string column must hold JSON (TRL runs json.loads on it): {err}"),
                )
            })?;
            let plain: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            (plain, Some(ordered))
        }
        Some(other) => (other, twin),
    };
    match &parsed {
        Value::Null => return Ok(None),
        Value::Array(items) => {
            if let Some((i, item)) = items.iter().enumerate().find(|(_, t)| !t.is_object()) {
                return Err(invalid(
                    origin,
                    &format!("tools[{i}]"),
                    format!(
                        "each tool must be a JSON schema object, found {}",
                        json_type(item)
                    ),
                ));
            }
        }
        other => {
            return Err(DataError::WrongType {
                origin: origin.clone(),
                field: "tools".into(),
                expected: "a list of tool schemas (or a JSON string of one)",
                found: json_type(other),
            });
        }
    }
    Ok(Some(match twin {
        Some(twin) if twin.kind() == ValueKind::Seq => twin,
        _ => TemplateValue::from_serialize(&parsed),
    }))
}

/// The `chat_template_kwargs` field: absent or `null` is none; otherwise an object whose keys
/// become template variables, none of them an argument of `apply_chat_template` itself.
pub(super) fn chat_template_kwargs(
    value: Option<Value>,
    twin: Option<TemplateValue>,
    origin: &RecordOrigin,
) -> Result<Vec<(String, TemplateValue)>, DataError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(object)) => object,
        Some(other) => {
            return Err(DataError::WrongType {
                origin: origin.clone(),
                field: "chat_template_kwargs".into(),
                expected: "an object of chat template arguments",
                found: json_type(&other),
            });
        }
    };
    if let Some(key) = object
        .keys()
        .find(|k| RESERVED_TEMPLATE_KWARGS.contains(&k.as_str()))
    {
        return Err(invalid(
            origin,
            &format!("chat_template_kwargs.{key}"),
            "is an argument of apply_chat_template itself, not of the template (TRL passes \
             it already, or it changes tokenization)"
                .into(),
        ));
    }
    let ordered_keys: Option<Vec<String>> = twin
        .as_ref()
        .filter(|t| t.kind() == ValueKind::Map)
        .and_then(|t| t.try_iter().ok())
        .map(|keys| {
            keys.filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        });
    let keys = ordered_keys.unwrap_or_else(|| object.keys().cloned().collect());
    Ok(keys
        .into_iter()
        .filter_map(|key| {
            let plain = object.get(&key)?;
            let value = twin
                .as_ref()
                .and_then(|t| t.get_attr(&key).ok())
                .filter(|v| !v.is_undefined())
                .unwrap_or_else(|| TemplateValue::from_serialize(plain));
            Some((key, value))
        })
        .collect())
}
