//! Chat templates: HF's Jinja `chat_template` rendered with minijinja, set up the way
//! transformers sets up Jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls, Python string
//! methods such as `.strip()`, `raise_exception`, and a `tojson` that writes what Python's
//! `json.dumps` writes), plus transformers' `continue_final_message` cut.

use std::path::Path;

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

use crate::error::DataError;
use crate::record::Message;

const TEMPLATE_NAME: &str = "chat_template";

/// The special-token strings a template may use (`{{ bos_token }}`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TemplateTokens {
    /// `bos_token`, if the tokenizer has one.
    pub bos_token: Option<String>,
    /// `eos_token`, if the tokenizer has one.
    pub eos_token: Option<String>,
    /// `pad_token`, if the tokenizer has one.
    pub pad_token: Option<String>,
    /// `unk_token`, if the tokenizer has one.
    pub unk_token: Option<String>,
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    tokens: TemplateTokens,
}

impl ChatTemplate {
    /// Compiles `source`; `origin` names where it came from, for the error message.
    ///
    /// # Errors
    /// [`DataError::TemplateSyntax`] when the template does not parse.
    pub fn new(source: &str, tokens: TemplateTokens, origin: &Path) -> Result<Self, DataError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|source| DataError::TemplateSyntax {
                path: origin.to_path_buf(),
                source,
            })?;
        Ok(Self {
            env,
            source: source.to_string(),
            tokens,
        })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` as transformers' `apply_chat_template(..., tokenize=False)` does.
    ///
    /// With `continue_final_message`, the text is cut right after the last message's content
    /// (its end-of-turn markup removed) so a model continues that message.
    ///
    /// # Errors
    /// The template's own error (including `raise_exception`), or an `InvalidOperation` error
    /// when `continue_final_message` is set and the final message is not found in the output.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        continue_final_message: bool,
    ) -> Result<String, Error> {
        let template = self.env.get_template(TEMPLATE_NAME)?;
        let rendered = template.render(context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.tokens.bos_token,
            eos_token => self.tokens.eos_token,
            pad_token => self.tokens.pad_token,
            unk_token => self.tokens.unk_token,
        })?;
        match messages.last() {
            Some(last) if continue_final_message => {
                cut_after_final_message(rendered, &last.content)
            }
            _ => Ok(rendered),
        }
    }
}

/// transformers: find the stripped final content from the right and cut after it, keeping its
/// leading whitespace only when the template kept it too.
fn cut_after_final_message(mut rendered: String, content: &str) -> Result<String, Error> {
    let stripped = content.trim();
    let Some(start) = rendered.rfind(stripped) else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "the prompt ends with an assistant message to continue, but that message does not appear in the rendered chat",
        ));
    };
    let left_stripped = content.trim_start();
    let end = if rendered[start..].starts_with(left_stripped) {
        start + left_stripped.len()
    } else {
        start + stripped.len()
    };
    rendered.truncate(end);
    Ok(rendered)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `json.dumps(value, ensure_ascii=False, indent=indent)`: `", "` and `": "` separators
/// without indent, `","` and `": "` with it; not HTML-escaped (minijinja's own `tojson` is).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let result = match indent {
        Some(width) => {
            let pad = vec![b' '; width];
            let formatter = serde_json::ser::PrettyFormatter::with_indent(&pad);
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonFormatter,
        )),
    };
    result
        .map_err(|err| Error::new(ErrorKind::InvalidOperation, "tojson failed").with_source(err))?;
    let text = String::from_utf8(out)
        .map_err(|err| Error::new(ErrorKind::InvalidOperation, "tojson failed").with_source(err))?;
    Ok(Value::from_safe_string(text))
}

/// Python's default `json.dumps` separators: `", "` between items, `": "` after keys.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}
