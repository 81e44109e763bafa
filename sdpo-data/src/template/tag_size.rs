//! The size of a template's tags, checked before minijinja compiles it.
//!
//! minijinja folds constants while it compiles an expression: at every node it tries to
//! evaluate the whole subtree below it, so compiling one expression takes time quadratic in its
//! depth. A chain of operators is as deep as it is long (`x + 1 + 1 + ...` nests to the left,
//! `not not not x` to the right): one tag of 200 KB compiled for minutes (a finding of
//! `sdpo-fuzz`). An expression lives inside one tag, so bounding the code of each tag bounds the
//! time of each compile step, and bounding the sum of the squares of the tags' code sizes bounds
//! the whole compile (50 tags of 8 KB each took 6 s in a debug build). The 73 chat templates of
//! `fixtures/chat_templates.json` hold a few hundred bytes of code per tag.

/// The most code one tag (`{{ ... }}` or `{% ... %}`) may hold, in bytes outside string
/// literals: 8 KiB, a few thousand operators at most, which compile in milliseconds.
pub const TEMPLATE_MAX_TAG_CODE_BYTES: usize = 8 << 10;

/// The most compile work a whole template may take: the sum over its tags of the square of
/// each tag's code bytes, 2^28 (four tags at the per-tag bound; about half a second in a debug
/// build).
pub const TEMPLATE_MAX_COMPILE_WORK: u64 = 1 << 28;

/// A template whose tags hold more code than the bounds allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OversizedTag {
    /// The 1-based template line of the tag that crossed a bound.
    pub line: usize,
    /// That tag's code in bytes (counted up to one past [`TEMPLATE_MAX_TAG_CODE_BYTES`]).
    pub code_bytes: usize,
    /// Whether it crossed [`TEMPLATE_MAX_COMPILE_WORK`] (the tags together) rather than the
    /// bound of one tag.
    pub together: bool,
}

impl OversizedTag {
    /// What is wrong, in words.
    pub fn message(&self) -> String {
        if self.together {
            format!(
                "the template's tags hold too much code together (the sum of the squares of \
                 their code bytes passes {TEMPLATE_MAX_COMPILE_WORK} at this tag): minijinja \
                 compiles each expression in time quadratic in its length"
            )
        } else {
            format!(
                "a tag with more than {TEMPLATE_MAX_TAG_CODE_BYTES} bytes of code: its \
                 expression would compile in time quadratic in its length"
            )
        }
    }
}

/// The first tag of `source` that crosses [`TEMPLATE_MAX_TAG_CODE_BYTES`] or, with the tags
/// before it, [`TEMPLATE_MAX_COMPILE_WORK`], scanning as Jinja's lexer does: comments and
/// `{% raw %}` blocks are text, string literals (with backslash escapes) are not code, and a
/// tag ends at its closing delimiter outside brackets.
pub(crate) fn first_oversized_tag(source: &str) -> Option<OversizedTag> {
    let bytes = source.as_bytes();
    let line_of = |at: usize| 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
    let mut work: u64 = 0;
    let mut at = 0;
    while let Some(open) = find(bytes, at, b"{") {
        let &kind = bytes.get(open + 1)?;
        at = match kind {
            b'#' => match find(bytes, open + 2, b"#}") {
                Some(close) => close + 2,
                None => return None,
            },
            b'{' | b'%' => {
                let close: &[u8] = if kind == b'{' { b"}}" } else { b"%}" };
                if kind == b'%' && is_raw_tag(bytes, open + 2) {
                    match find(bytes, open + 2, b"endraw") {
                        Some(end) => end + 6,
                        None => return None,
                    }
                } else {
                    let (end, code_bytes) = scan_tag(bytes, open + 2, close);
                    work += (code_bytes as u64).pow(2);
                    let too_long = code_bytes > TEMPLATE_MAX_TAG_CODE_BYTES;
                    if too_long || work > TEMPLATE_MAX_COMPILE_WORK {
                        return Some(OversizedTag {
                            line: line_of(open),
                            code_bytes,
                            together: !too_long,
                        });
                    }
                    end
                }
            }
            _ => open + 1,
        };
    }
    None
}

/// Scans a tag's body from `start` to its `close` delimiter (outside strings and brackets):
/// the index past the delimiter (the end of `bytes` when there is none) and the code bytes,
/// counted until they pass the bound.
fn scan_tag(bytes: &[u8], start: usize, close: &[u8]) -> (usize, usize) {
    let mut code_bytes = 0;
    let mut depth: usize = 0;
    let mut i = start;
    while i < bytes.len() {
        let byte = bytes[i];
        if depth == 0 && bytes[i..].starts_with(close) {
            return (i + close.len(), code_bytes);
        }
        match byte {
            b'"' | b'\'' => {
                i = skip_string(bytes, i + 1, byte);
                code_bytes += 2;
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if !byte.is_ascii_whitespace() {
            code_bytes += 1;
            if code_bytes > TEMPLATE_MAX_TAG_CODE_BYTES {
                return (bytes.len(), code_bytes);
            }
        }
        i += 1;
    }
    (bytes.len(), code_bytes)
}

/// The index past the string literal whose body starts at `start` and ends at `quote`.
fn skip_string(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Whether the `{%` tag whose body starts at `start` is `{% raw %}` (with `-`/`+` markers).
fn is_raw_tag(bytes: &[u8], start: usize) -> bool {
    let rest = &bytes[start.min(bytes.len())..];
    let rest = rest
        .strip_prefix(b"-")
        .or(rest.strip_prefix(b"+"))
        .unwrap_or(rest);
    let body = rest.trim_ascii_start();
    body.strip_prefix(b"raw").is_some_and(|after| {
        let after = after.trim_ascii_start();
        after.starts_with(b"%}") || after.starts_with(b"-%}") || after.starts_with(b"+%}")
    })
}

/// The first index at or after `from` where `needle` starts.
fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|position| from + position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_operator_chain_in_one_tag_is_found_with_its_line() {
        let chain = format!("a\n{{{{ x{} }}}}", " + 1".repeat(5_000));
        let found = first_oversized_tag(&chain).expect("a 10 KB chain");
        assert_eq!(found.line, 2);
        assert!(found.code_bytes > TEMPLATE_MAX_TAG_CODE_BYTES);
        let statement = format!("{{% if {} x %}}{{% endif %}}", "not ".repeat(3_000));
        assert!(first_oversized_tag(&statement).is_some_and(|tag| !tag.together));
    }

    #[test]
    fn many_large_tags_together_cross_the_work_bound_at_the_tag_that_crosses_it() {
        // Each tag holds 2 + 2 * 4,000 = 8,002 code bytes: within one tag's bound, and four of
        // them (2.56e8) within the work bound, the fifth (3.2e8) past it.
        let tag = format!("{{{{ x{} }}}}\n", "+1".repeat(4_000));
        assert_eq!(first_oversized_tag(&tag.repeat(4)), None);
        let found = first_oversized_tag(&tag.repeat(50)).expect("50 large tags");
        assert!(found.together);
        assert_eq!(found.line, 5);
    }

    #[test]
    fn strings_comments_raw_blocks_and_many_small_tags_are_not_code() {
        let literal = format!("{{{{ '{}' }}}}", "x".repeat(100_000));
        assert_eq!(first_oversized_tag(&literal), None);
        let escaped = format!("{{{{ \"\\\"{}\" }}}}", "}}".repeat(10_000));
        assert_eq!(first_oversized_tag(&escaped), None);
        let comment = format!("{{# {} #}}", "+ 1".repeat(10_000));
        assert_eq!(first_oversized_tag(&comment), None);
        let raw = format!(
            "{{%- raw %}}{{{{ {} }}}}{{% endraw %}}",
            "+ 1".repeat(10_000)
        );
        assert_eq!(first_oversized_tag(&raw), None);
        let many = "{{ x + 1 }}".repeat(10_000);
        assert_eq!(first_oversized_tag(&many), None);
        let nested = format!("{{{{ {{'a': {{'b': 1}}}} }}}}{}", "}}".repeat(10_000));
        assert_eq!(first_oversized_tag(&nested), None);
    }

    #[test]
    fn every_shipped_chat_template_passes_the_bound() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/chat_templates.json"
        );
        let text = std::fs::read_to_string(path).expect("fixtures/chat_templates.json");
        let fixture: serde_json::Value = serde_json::from_str(&text).expect("its JSON");
        let templates = fixture["templates"].as_array().expect("its templates");
        assert!(!templates.is_empty());
        for template in templates {
            let source = template["chat_template"]
                .as_str()
                .expect("a template string");
            assert_eq!(first_oversized_tag(source), None, "{}", template["name"]);
        }
    }
}
