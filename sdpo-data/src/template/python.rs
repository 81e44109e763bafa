//! How Python writes values, for the places where Jinja2's output differs from minijinja's:
//! `str()` (what `{{ x }}` and `|string` print: `True`, `None`, `1e-05`, `['a', 1]`),
//! `repr()` of strings inside containers, `json.dumps` (what transformers' `tojson` writes),
//! and Python's notion of whitespace (`str.strip()`, `str.split()`).

use std::fmt::Write;

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Python's `str.isspace()`: Unicode white space plus the four ASCII separators 0x1C-0x1F.
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `repr(float)`: the shortest round-tripping digits, positional for exponents in
/// `-4..16`, else `1e-05` / `1.5e+16`.
pub(crate) fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // `{:e}` gives the shortest round-tripping mantissa, e.g. `1.5e-7`.
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{text}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs())
    }
}

/// Python's `repr(str)`: single quotes unless the text holds a single quote and no double
/// quote; backslash escapes for the quote, `\\`, `\n`, `\r`, `\t` and other control characters.
fn string_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// The deepest a value is written: Python's `repr` and `json.dumps` fail on a value nested
/// about 1,000 deep (and on one that contains itself, which a namespace can), and each level
/// here is a native stack frame.
pub(crate) const MAX_VALUE_DEPTH: usize = 200;

/// A value nested deeper than [`MAX_VALUE_DEPTH`] (or containing itself), or one whose text
/// passes the template output cap.
fn unwritable(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{what}: the value is nested deeper than {MAX_VALUE_DEPTH} levels (or contains itself) or its text passes {} MiB",
            super::environment::TEMPLATE_MAX_OUTPUT_BYTES >> 20
        ),
    )
}

fn check_room(depth: usize, out: &str, what: &str) -> Result<(), Error> {
    if depth > MAX_VALUE_DEPTH || out.len() > super::environment::TEMPLATE_MAX_OUTPUT_BYTES {
        return Err(unwritable(what));
    }
    Ok(())
}

/// Python's `str(value)` (`repr` for the items of containers).
///
/// # Errors
/// A value nested deeper than [`MAX_VALUE_DEPTH`] or whose text passes the output cap.
pub(crate) fn python_str(value: &Value) -> Result<String, Error> {
    let mut out = String::new();
    write_python(value, false, 0, &mut out)?;
    Ok(out)
}

fn write_python(value: &Value, nested: bool, depth: usize, out: &mut String) -> Result<(), Error> {
    check_room(depth, out, "str")?;
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::String => match value.as_str() {
            Some(s) if nested => string_repr(s, out),
            Some(s) => out.push_str(s),
            None => {}
        },
        ValueKind::Number => match f64_if_float(value) {
            Some(x) => out.push_str(&float_repr(x)),
            None => {
                let _ = write!(out, "{value}");
            }
        },
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(items) = value.try_iter() {
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_python(&item, true, depth + 1, out)?;
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(keys) = value.try_iter() {
                for (i, key) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_python(&key, true, depth + 1, out)?;
                    out.push_str(": ");
                    let item = value.get_item(&key).unwrap_or_default();
                    write_python(&item, true, depth + 1, out)?;
                }
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
    Ok(())
}

/// The value as `f64` when it is a float (not an integer).
fn f64_if_float(value: &Value) -> Option<f64> {
    if value.is_integer() {
        None
    } else {
        f64::try_from(value.clone()).ok()
    }
}

/// Options of Python's `json.dumps` that transformers' `tojson` exposes.
pub(crate) struct JsonOptions {
    /// `ensure_ascii`: escape every non-ASCII character as `\uXXXX`.
    pub ensure_ascii: bool,
    /// `indent`: `None` for one line, else the indentation string of one level.
    pub indent: Option<String>,
    /// `(item_separator, key_separator)`; Python's default depends on `indent`.
    pub separators: (String, String),
    /// `sort_keys`.
    pub sort_keys: bool,
}

/// `json.dumps(value, ...)`.
///
/// # Errors
/// When the value holds something JSON cannot write (an undefined value, a callable).
pub(crate) fn json_dumps(value: &Value, options: &JsonOptions) -> Result<String, Error> {
    let mut out = String::new();
    write_json(value, options, 0, &mut out)?;
    Ok(out)
}

fn write_json(
    value: &Value,
    options: &JsonOptions,
    level: usize,
    out: &mut String,
) -> Result<(), Error> {
    check_room(level, out, "tojson")?;
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => match f64_if_float(value) {
            Some(x) if x.is_nan() => out.push_str("NaN"),
            Some(x) if x.is_infinite() => {
                out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Some(x) => out.push_str(&float_repr(x)),
            None => {
                let _ = write!(out, "{value}");
            }
        },
        ValueKind::String => json_string(value.as_str().unwrap_or_default(), options, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, options, level, '[', ']', &items, |item, out| {
                write_json(item, options, level + 1, out)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if options.sort_keys {
                keys.sort_by_key(|key| key.to_string());
            }
            write_container(out, options, level, '{', '}', &keys, |key, out| {
                let name = match key.as_str() {
                    Some(s) => s.to_string(),
                    None => python_str(key)?,
                };
                json_string(&name, options, out);
                out.push_str(&options.separators.1);
                write_json(&value.get_item(key)?, options, level + 1, out)
            })?;
        }
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: Object of type Undefined is not JSON serializable",
            ));
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of kind {other} is not JSON serializable"),
            ));
        }
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    options: &JsonOptions,
    level: usize,
    open: char,
    close: char,
    items: &[Value],
    mut write_item: impl FnMut(&Value, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&options.separators.0);
        }
        if let Some(indent) = &options.indent {
            out.push('\n');
            out.push_str(&indent.repeat(level + 1));
        }
        write_item(item, out)?;
    }
    if let Some(indent) = &options.indent {
        out.push('\n');
        out.push_str(&indent.repeat(level));
    }
    out.push(close);
    Ok(())
}

fn json_string(s: &str, options: &JsonOptions, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if options.ensure_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (x, text) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (21.5, "21.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345.0, "123456789012345.0"),
            (-2.5e-7, "-2.5e-07"),
            (0.0, "0.0"),
        ] {
            assert_eq!(float_repr(x), text, "{x}");
        }
    }

    #[test]
    fn values_print_as_python_str() {
        let value = Value::from_serialize(serde_json::json!({
            "a": [true, null, "it's", 1, 2.0],
            "b": "x\ny"
        }));
        let text = |v: &Value| python_str(v).expect("a shallow value prints");
        assert_eq!(
            text(&value),
            r#"{'a': [True, None, "it's", 1, 2.0], 'b': 'x\ny'}"#
        );
        assert_eq!(text(&Value::from(false)), "False");
        assert_eq!(text(&Value::from(())), "None");
    }

    #[test]
    fn values_nested_past_the_depth_limit_are_an_error_not_a_stack_overflow() {
        let nested = |depth: usize| {
            let mut value = Value::from(1);
            for _ in 0..depth {
                value = Value::from(vec![value]);
            }
            value
        };
        let options = JsonOptions {
            ensure_ascii: false,
            indent: None,
            separators: (", ".into(), ": ".into()),
            sort_keys: false,
        };
        let at_limit = nested(MAX_VALUE_DEPTH);
        assert_eq!(
            python_str(&at_limit)
                .expect("at the limit")
                .matches('[')
                .count(),
            MAX_VALUE_DEPTH
        );
        assert!(json_dumps(&at_limit, &options).is_ok());
        let past = nested(MAX_VALUE_DEPTH + 1);
        for err in [
            python_str(&past).unwrap_err(),
            json_dumps(&past, &options).unwrap_err(),
        ] {
            assert!(err.to_string().contains("nested deeper than 200"), "{err}");
        }
    }

    #[test]
    fn json_dumps_matches_python_separators_and_escapes() {
        let value = Value::from_serialize(serde_json::json!({"k": [1, 1e-5, "é\u{1}"], "e": {}}));
        let compact = JsonOptions {
            ensure_ascii: false,
            indent: None,
            separators: (", ".into(), ": ".into()),
            sort_keys: false,
        };
        assert_eq!(
            json_dumps(&value, &compact).unwrap(),
            "{\"e\": {}, \"k\": [1, 1e-05, \"é\\u0001\"]}"
        );
        let ascii_indent = JsonOptions {
            ensure_ascii: true,
            indent: Some("  ".into()),
            separators: (",".into(), ": ".into()),
            sort_keys: true,
        };
        assert_eq!(
            json_dumps(&value, &ascii_indent).unwrap(),
            "{\n  \"e\": {},\n  \"k\": [\n    1,\n    1e-05,\n    \"\\u00e9\\u0001\"\n  ]\n}"
        );
    }

    #[test]
    fn python_whitespace_includes_the_ascii_separators() {
        assert!(is_python_space('\u{1f}'));
        assert!(is_python_space('\u{a0}'));
        assert!(!is_python_space('\u{200b}'));
    }
}
