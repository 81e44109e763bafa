//! Chat templates: HF's Jinja `chat_template` rendered with minijinja the way transformers 5
//! renders it with Jinja2 (`apply_chat_template(..., tokenize=False)`): the variables it passes
//! (`messages`, `tools`, `documents`, `add_generation_prompt`, the special tokens, per-record
//! keyword arguments), the messages as it normalises them (keys holding `null` dropped,
//! reasoning fields aliased), its `continue_final_message` cut, and the Jinja2 behaviours that
//! minijinja lacks, shimmed in [`environment`]. Rendering is bounded in time, depth and size.

mod environment;
mod python;
mod tag_size;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

use crate::error::DataError;
use crate::record::Message;

use environment::{BoundedOutput, TEMPLATE_NAME, build_environment};
pub use environment::{
    TEMPLATE_FUEL, TEMPLATE_MAX_OUTPUT_BYTES, TEMPLATE_RECURSION_LIMIT, TemplateClock,
};
use python::is_python_space;
pub use tag_size::{TEMPLATE_MAX_COMPILE_WORK, TEMPLATE_MAX_TAG_CODE_BYTES};

/// The special-token strings a template may use (`{{ bos_token }}`, ...): transformers'
/// `special_tokens_map`, the named tokens the tokenizer config sets (no fallbacks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TemplateTokens {
    /// `bos_token`.
    pub bos_token: Option<String>,
    /// `eos_token`.
    pub eos_token: Option<String>,
    /// `unk_token`.
    pub unk_token: Option<String>,
    /// `sep_token`.
    pub sep_token: Option<String>,
    /// `pad_token`.
    pub pad_token: Option<String>,
    /// `cls_token`.
    pub cls_token: Option<String>,
    /// `mask_token`.
    pub mask_token: Option<String>,
}

impl TemplateTokens {
    fn entries(&self) -> [(&'static str, &Option<String>); 7] {
        [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("unk_token", &self.unk_token),
            ("sep_token", &self.sep_token),
            ("pad_token", &self.pad_token),
            ("cls_token", &self.cls_token),
            ("mask_token", &self.mask_token),
        ]
    }
}

/// The keyword arguments of transformers' `apply_chat_template` itself; a record's
/// `chat_template_kwargs` may not set them (in TRL they collide with the arguments TRL passes,
/// or change tokenization), except `tools` and `documents`, which reach the template.
pub const RESERVED_TEMPLATE_KWARGS: [&str; 14] = [
    "messages",
    "conversation",
    "chat_template",
    "add_generation_prompt",
    "continue_final_message",
    "tokenize",
    "sanitize_control_tokens",
    "padding",
    "truncation",
    "max_length",
    "return_tensors",
    "return_dict",
    "return_assistant_tokens_mask",
    "tokenizer_kwargs",
];

/// One rendering: the conversation and what else the template sees.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderInput<'a> {
    /// The conversation.
    pub messages: &'a [Message],
    /// `tools`: a list of JSON-schema objects, or `None`.
    pub tools: Option<&'a Value>,
    /// Per-record keyword arguments (`enable_thinking`, `date_string`, ...), as ordered pairs.
    pub kwargs: &'a [(String, Value)],
    /// End with the header that starts an assistant turn.
    pub add_generation_prompt: bool,
    /// Cut the text right after the last message's content, so a model continues it.
    pub continue_final_message: bool,
    /// Stop rendering past this many bytes (the pipeline's `max_text_bytes`: a longer text
    /// would not be tokenized); `None`, or more than [`TEMPLATE_MAX_OUTPUT_BYTES`]: that cap.
    pub max_output_bytes: Option<usize>,
}

/// A compiled chat template.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    tokens: TemplateTokens,
}

const CONTINUE_TAG: &str = "CONTINUE_FINAL_MESSAGE_TAG ";

/// Runs `f` on a thread of its own with [`RENDER_STACK_BYTES`] of stack; `Err` says why the
/// thread could not run it.
fn on_large_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("chat template".into())
            .stack_size(RENDER_STACK_BYTES)
            .spawn_scoped(scope, f)
            .map_err(|e| format!("cannot start the template engine's thread: {e}"))?
            .join()
            .map_err(|_| "the template engine failed".to_string())
    })
}

/// The stack a render (or a compile) runs on. Within its fuel a template can build a value nested millions
/// deep (a namespace holding a list of itself, one level per loop step), and the engine drops
/// such a value one stack frame per level: 50,000 levels overflowed a 2 MiB thread stack. The
/// stack is reserved, not touched: a render uses only the pages its frames reach.
const RENDER_STACK_BYTES: usize = 1 << 30;

impl ChatTemplate {
    /// Compiles `source`; `origin` names where it came from, for the error message.
    ///
    /// # Errors
    /// [`DataError::TemplateSyntax`] when the template does not parse.
    pub fn new(source: &str, tokens: TemplateTokens, origin: &Path) -> Result<Self, DataError> {
        Self::with_clock(source, tokens, origin, TemplateClock::Local)
    }

    /// As [`Self::new`], with the clock `strftime_now` reads (a fixed instant makes renders
    /// that print today's date reproducible).
    ///
    /// # Errors
    /// [`DataError::TemplateSyntax`] when the template does not parse, or when one of its tags
    /// holds more than [`TEMPLATE_MAX_TAG_CODE_BYTES`] of code or all together more than
    /// [`TEMPLATE_MAX_COMPILE_WORK`].
    pub fn with_clock(
        source: &str,
        tokens: TemplateTokens,
        origin: &Path,
        clock: TemplateClock,
    ) -> Result<Self, DataError> {
        if let Some(tag) = tag_size::first_oversized_tag(source) {
            return Err(DataError::TemplateSyntax {
                path: origin.to_path_buf(),
                line: Some(tag.line),
                source: Error::new(ErrorKind::SyntaxError, tag.message()),
            });
        }
        // Compiled on a large stack too: minijinja's parser recurses once per unary operator
        // (`- - - - ...` 100,000 times overflowed an 8 MiB stack).
        let env = on_large_stack(|| {
            crate::error::contain_panic(|| build_environment(source.to_string(), clock))
        })
        .unwrap_or_else(Err)
        .map_err(|message| {
            Error::new(
                ErrorKind::SyntaxError,
                format!("the template engine failed on this template: {message}"),
            )
        })
        .and_then(|built| built)
        .map_err(|source| DataError::TemplateSyntax {
            path: origin.to_path_buf(),
            line: source.line(),
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

    /// The special tokens the template sees.
    pub fn tokens(&self) -> &TemplateTokens {
        &self.tokens
    }

    /// Renders `input` as transformers' `apply_chat_template(..., tokenize=False)` does.
    ///
    /// # Errors
    /// The template's own error (`raise_exception`, an undefined value misused, ...) with its
    /// line; [`ErrorKind::OutOfFuel`] or a recursion or output-size error for a template that
    /// runs away; an `InvalidOperation` error when `continue_final_message` cannot be applied,
    /// or a reserved keyword argument is given.
    pub fn render(&self, input: &RenderInput<'_>) -> Result<String, Error> {
        if input.continue_final_message && input.add_generation_prompt {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "continue_final_message and add_generation_prompt are not compatible",
            ));
        }
        let mut messages: Vec<Value> = input.messages.iter().map(message_value).collect();
        let mut final_content = None;
        if input.continue_final_message {
            let Some(last) = input.messages.last() else {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "continue_final_message is set but the conversation is empty",
                ));
            };
            if !self.source.contains("content") {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "continue_final_message is set but the template never reads `content`",
                ));
            }
            let mut tagged = last.clone();
            tagged.content.push_str(CONTINUE_TAG);
            if let Some(slot) = messages.last_mut() {
                *slot = message_value(&tagged);
            }
            final_content = Some(last.content.as_str());
        }
        let mut context: Vec<(String, Value)> = Vec::with_capacity(12 + input.kwargs.len());
        for (name, token) in self.tokens.entries() {
            if let Some(token) = token {
                context.push((name.to_string(), Value::from(token.as_str())));
            }
        }
        let mut tools = input.tools.cloned().unwrap_or(Value::from(()));
        let mut documents = Value::from(());
        for (key, value) in input.kwargs {
            match key.as_str() {
                "tools" => tools = value.clone(),
                "documents" => documents = value.clone(),
                reserved if RESERVED_TEMPLATE_KWARGS.contains(&reserved) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!(
                            "chat_template_kwargs sets `{reserved}`, an argument of apply_chat_template itself"
                        ),
                    ));
                }
                _ => context.push((key.clone(), value.clone())),
            }
        }
        context.push(("messages".into(), Value::from(messages.split_off(0))));
        context.push(("tools".into(), tools));
        context.push(("documents".into(), documents));
        context.push((
            "add_generation_prompt".into(),
            Value::from(input.add_generation_prompt),
        ));
        // The continue tag is cut off again after rendering: room for it on top of the bound.
        let limit = input
            .max_output_bytes
            .map_or(TEMPLATE_MAX_OUTPUT_BYTES, |bytes| {
                bytes.saturating_add(CONTINUE_TAG.len())
            })
            .min(TEMPLATE_MAX_OUTPUT_BYTES);
        let rendered = self.render_bounded(Value::from_iter(context), limit)?;
        match final_content {
            Some(content) => cut_at_continue_tag(rendered, content),
            None => Ok(rendered),
        }
    }

    fn render_bounded(&self, context: Value, limit: usize) -> Result<String, Error> {
        on_large_stack(|| self.render_here(context, limit))
            .unwrap_or_else(|message| Err(Error::new(ErrorKind::InvalidOperation, message)))
    }

    fn render_here(&self, context: Value, limit: usize) -> Result<String, Error> {
        let template = self.env.get_template(TEMPLATE_NAME)?;
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut out = BoundedOutput {
            text: Vec::new(),
            limit,
            overflowed: Arc::clone(&overflowed),
        };
        let rendered =
            crate::error::contain_panic(|| template.render_captured_to(context, &mut out))
                .unwrap_or_else(|message| {
                    Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("the template engine failed: {message}"),
                    ))
                });
        if let Err(err) = rendered {
            if overflowed.load(Ordering::Relaxed) {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    if limit < TEMPLATE_MAX_OUTPUT_BYTES {
                        format!(
                            "the rendered text passed {limit} bytes, more than the pipeline \
                             tokenizes (max_text_bytes; a chat template may write at most {} MiB)",
                            TEMPLATE_MAX_OUTPUT_BYTES >> 20
                        )
                    } else {
                        format!(
                            "the rendered text passed {} MiB, the most a chat template may write",
                            TEMPLATE_MAX_OUTPUT_BYTES >> 20
                        )
                    },
                ));
            }
            return Err(err);
        }
        String::from_utf8(out.text)
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, "rendered text is not UTF-8"))
    }
}

/// A message as the template sees it: `role`, `content`, then the other keys in their order;
/// keys holding `null` are dropped (transformers' `_normalize_chat_messages`), and a reasoning
/// text under `reasoning_content`, `thinking` or `reasoning` is also put under `thinking` and
/// `reasoning_content`, as transformers 5 fills them (`thinking` first, `reasoning_content`
/// last).
fn message_value(message: &Message) -> Value {
    let mut entries: Vec<(String, Value)> = Vec::with_capacity(2 + message.extra.len());
    entries.push(("role".into(), Value::from(message.role.as_str())));
    entries.push(("content".into(), Value::from(message.content.as_str())));
    for (key, value) in &message.extra {
        if !value.is_none() && !value.is_undefined() {
            entries.push((key.clone(), value.clone()));
        }
    }
    let reasoning = ["reasoning_content", "thinking", "reasoning"]
        .iter()
        .find_map(|name| {
            entries
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        });
    if let Some(reasoning) = reasoning {
        // `{"thinking": r, **message, "reasoning_content": r}`: `thinking` comes first and keeps
        // the message's own value when it has one.
        let own = entries
            .iter()
            .find(|(k, _)| k == "thinking")
            .map(|(_, v)| v.clone());
        entries.retain(|(k, _)| k != "thinking");
        entries.insert(
            0,
            ("thinking".into(), own.unwrap_or_else(|| reasoning.clone())),
        );
        match entries.iter_mut().find(|(k, _)| k == "reasoning_content") {
            Some(slot) => slot.1 = reasoning,
            None => entries.push(("reasoning_content".into(), reasoning)),
        }
    }
    Value::from_iter(entries)
}

/// transformers 5's `continue_final_message`: the final message was rendered with a tag
/// appended; the text ends where the tag starts (and, when the template trimmed the message,
/// before the white space it left).
fn cut_at_continue_tag(mut rendered: String, final_content: &str) -> Result<String, Error> {
    let tag = CONTINUE_TAG.trim_end();
    let stripped = final_content.trim_matches(is_python_space);
    if !rendered.contains(stripped) || !rendered.contains(tag) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "continue_final_message is set but the final message does not appear in the chat \
             after applying the chat template (the template deletes part of it)",
        ));
    }
    let at = rendered.rfind(tag).unwrap_or(rendered.len());
    if rendered[at..].starts_with(CONTINUE_TAG) {
        rendered.truncate(at);
    } else {
        let kept = rendered[..at].trim_end_matches(is_python_space).len();
        rendered.truncate(kept);
    }
    Ok(rendered)
}
