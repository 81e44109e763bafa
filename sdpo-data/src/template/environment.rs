//! The minijinja environment, set up to render what transformers' Jinja2 sandbox renders:
//! `trim_blocks`, `lstrip_blocks`, loop controls, Python's string methods, `raise_exception`,
//! `strftime_now`, transformers' `tojson`, and shims where Jinja2 and minijinja differ:
//!
//! | Jinja2 (transformers) | minijinja alone | shim |
//! | --- | --- | --- |
//! | `{{ True }}`, `{{ None }}`, `{{ 1e-05 }}`, `{{ [1, 'a'] }}` | `true`, `none`, `0.00001`, `[1, "a"]` | a formatter writing Python's `str()` |
//! | `x \| string` | minijinja's display | Python's `str()` |
//! | `'abc' is sequence`, `{} is sequence` | false | true (anything with `len` and indexing) |
//! | `True is number` | false | true (Python's `bool` is a number) |
//! | `None is iterable` | true | false (an undefined value is iterable in both) |
//! | `s.strip()`, `s.split()`, `\| trim` | Rust's white space | Python's white space (adds 0x1C-0x1F) |
//! | `{% generation %}...{% endgeneration %}` (transformers' tag) | unknown tag | rewritten to an `if true` block |
//!
//! Bounds, so a hostile template fails instead of running away: a fuel budget of template
//! instructions per rendering, a recursion limit, and a cap on the rendered text.

use std::sync::Arc;

use chrono::{DateTime, Local};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

use super::python::{JsonOptions, is_python_space, json_dumps, python_str};

/// Template instructions one rendering may run (minijinja "fuel"): thousands of times what
/// the longest shipped template needs on a long conversation, and a fraction of a second.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// Nesting depth of macro calls and recursive loops one rendering may reach.
pub const TEMPLATE_RECURSION_LIMIT: usize = 100;

/// The largest rendered text, in bytes (what the pipeline then tokenizes is bounded by
/// [`max_text_bytes`](crate::DataConfig::max_text_bytes)).
pub const TEMPLATE_MAX_OUTPUT_BYTES: usize = 32 << 20;

/// The template's name in minijinja's error messages.
pub(crate) const TEMPLATE_NAME: &str = "chat_template";

/// What `strftime_now` reads: the local clock, or a fixed instant (reproducible renders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TemplateClock {
    /// `datetime.now()`, local time, as transformers does.
    #[default]
    Local,
    /// Always this instant (in its own offset).
    Fixed(DateTime<chrono::FixedOffset>),
}

/// The environment holding one compiled template.
pub(crate) fn build_environment(
    source: String,
    clock: TemplateClock,
) -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    // No execution state attached to errors (minijinja's default in debug builds): an error
    // would carry the template's variables out of the render's own large stack, and a value
    // nested a million deep dropped on another thread overflows its stack.
    env.set_debug(false);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(TEMPLATE_RECURSION_LIMIT);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(python_methods);
    env.set_formatter(|out, _state, value| {
        if value.is_undefined() {
            return Ok(());
        }
        match value.as_str() {
            Some(s) if value.kind() == ValueKind::String => out.write_str(s)?,
            _ => out.write_str(&python_str(value)?)?,
        }
        Ok(())
    });
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", move |format: String| {
        strftime_now(clock, &format)
    });
    env.add_filter("tojson", tojson);
    env.add_filter("string", |value: Value| python_str(&value).map(Value::from));
    env.add_filter("trim", trim);
    env.add_test("sequence", |value: Value| {
        matches!(
            value.kind(),
            ValueKind::Seq | ValueKind::String | ValueKind::Map
        )
    });
    env.add_test("iterable", |value: Value| {
        matches!(
            value.kind(),
            ValueKind::Seq
                | ValueKind::Map
                | ValueKind::String
                | ValueKind::Iterable
                | ValueKind::Undefined
        )
    });
    env.add_test("number", |value: Value| {
        matches!(value.kind(), ValueKind::Number | ValueKind::Bool)
    });
    env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(&source))?;
    Ok(env)
}

fn raise_exception(message: Value) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        python_str(&message)?,
    ))
}

/// `datetime.now().strftime(format)`; an unknown `%` directive is an error (Python would print
/// it as is on some platforms; a template using one is broken either way).
fn strftime_now(clock: TemplateClock, format: &str) -> Result<Value, Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: `{format}` is not a valid strftime format"),
        ));
    }
    let text = match clock {
        TemplateClock::Local => Local::now()
            .format_with_items(items.into_iter())
            .to_string(),
        TemplateClock::Fixed(now) => now.format_with_items(items.into_iter()).to_string(),
    };
    Ok(Value::from(text))
}

/// The longest `tojson` indent: each level of the output repeats it.
const MAX_INDENT: usize = 64;

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`
/// = `json.dumps` with those arguments (not Jinja2's HTML-escaping filter).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => {
            let indent = match v.as_str() {
                Some(s) => s.to_string(),
                None => " ".repeat(usize::try_from(v)?.min(MAX_INDENT + 1)),
            };
            if indent.len() > MAX_INDENT {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: an indent longer than {MAX_INDENT} characters"),
                ));
            }
            Some(indent)
        }
    };
    let separators = match separators {
        Some(v) if !v.is_none() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [item, key] => (python_str(item)?, python_str(key)?),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair (item_separator, key_separator)",
                    ));
                }
            }
        }
        _ if indent.is_some() => (",".into(), ": ".into()),
        _ => (", ".into(), ": ".into()),
    };
    let options = JsonOptions {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        separators,
        sort_keys: sort_keys.unwrap_or(false),
    };
    json_dumps(&value, &options).map(Value::from_safe_string)
}

/// Jinja2's `trim(value, chars=None)` = `str(value).strip(chars)`.
fn trim(value: Value, chars: Option<String>) -> Result<Value, Error> {
    let text = python_str(&value)?;
    Ok(Value::from(python_strip(
        &text,
        chars.as_deref(),
        true,
        true,
    )))
}

fn python_strip<'a>(s: &'a str, chars: Option<&str>, start: bool, end: bool) -> &'a str {
    let strip = |c: char| match chars {
        Some(set) => set.contains(c),
        None => is_python_space(c),
    };
    let s = if start {
        s.trim_start_matches(strip)
    } else {
        s
    };
    if end { s.trim_end_matches(strip) } else { s }
}

/// Python's string methods with Python's white space (`strip`, `lstrip`, `rstrip`, `split()`
/// without a separator); everything else goes to minijinja-contrib's `pycompat`.
fn python_methods(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str().filter(|_| value.kind() == ValueKind::String) {
        let chars = || -> Result<Option<String>, Error> {
            match args {
                [] => Ok(None),
                [v] if v.is_none() => Ok(None),
                [v] => Ok(Some(v.as_str().map(str::to_string).ok_or_else(|| {
                    Error::new(ErrorKind::InvalidOperation, "strip arg must be None or str")
                })?)),
                _ => Err(Error::from(ErrorKind::TooManyArguments)),
            }
        };
        match method {
            "strip" => {
                return Ok(Value::from(python_strip(
                    s,
                    chars()?.as_deref(),
                    true,
                    true,
                )));
            }
            "lstrip" => {
                return Ok(Value::from(python_strip(
                    s,
                    chars()?.as_deref(),
                    true,
                    false,
                )));
            }
            "rstrip" => {
                return Ok(Value::from(python_strip(
                    s,
                    chars()?.as_deref(),
                    false,
                    true,
                )));
            }
            "split" if args.is_empty() || (args.len() == 1 && args[0].is_none()) => {
                return Ok(s
                    .split(is_python_space)
                    .filter(|part| !part.is_empty())
                    .map(Value::from)
                    .collect());
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// transformers' `{% generation %}` tag (it marks assistant text for
/// `return_assistant_tokens_mask`) renders its body unchanged. minijinja has no custom tags, so
/// each `{% generation %}` becomes `{% if true %}` and each `{% endgeneration %}` `{% endif %}`,
/// keeping the whitespace-control markers (and so the output) and the line numbers.
pub(crate) fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match parse_tag(tag) {
            Some((len, open_marker, word, close_marker)) => {
                let replacement = if word == "generation" {
                    "if true"
                } else {
                    "endif"
                };
                out.push_str("{%");
                out.push_str(open_marker);
                out.push(' ');
                out.push_str(replacement);
                out.push(' ');
                out.push_str(close_marker);
                out.push_str("%}");
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `{%[-+]? (end)?generation [-+]?%}` at the start of `tag`: (length, markers, word).
fn parse_tag(tag: &str) -> Option<(usize, &str, &str, &str)> {
    let body = &tag[2..];
    let open_marker = if body.starts_with(['-', '+']) {
        &body[..1]
    } else {
        ""
    };
    let after_open = &body[open_marker.len()..];
    let word_text = after_open.trim_start_matches([' ', '\t']);
    let word = ["endgeneration", "generation"]
        .into_iter()
        .find(|w| word_text.starts_with(w))?;
    let after_word = &word_text[word.len()..];
    let after_spaces = after_word.trim_start_matches([' ', '\t']);
    let close_marker = if after_spaces.starts_with(['-', '+']) {
        &after_spaces[..1]
    } else {
        ""
    };
    let closing = &after_spaces[close_marker.len()..];
    if !closing.starts_with("%}") {
        return None;
    }
    let len = tag.len() - closing.len() + 2;
    Some((len, open_marker, word, close_marker))
}

/// Collects a rendering, failing once it passes `limit` (at most
/// [`TEMPLATE_MAX_OUTPUT_BYTES`]).
pub(crate) struct BoundedOutput {
    /// The text so far.
    pub text: Vec<u8>,
    /// The most it may hold, in bytes.
    pub limit: usize,
    /// Set when the cap was hit.
    pub overflowed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.limit {
            self.overflowed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other("rendered text too long"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_if_blocks_with_their_markers() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation %}b{% endgeneration -%}c"),
            "a{%- if true %}b{% endif -%}c"
        );
        assert_eq!(
            rewrite_generation_tags("{% generation%}x{%endgeneration%}"),
            "{% if true %}x{% endif %}"
        );
        // Other tags and look-alikes are left alone.
        for source in [
            "{% if generation_x %}y{% endif %}",
            "{% generationx %}",
            "{%- set a = 1 %}",
        ] {
            assert_eq!(rewrite_generation_tags(source), source);
        }
    }
}
