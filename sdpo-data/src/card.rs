//! The `configs:` block of a dataset repository's `README.md` (its YAML front matter), read as
//! `datasets` reads it (`MetadataConfigs`): each config has a `config_name`, optional
//! `data_files` (a pattern, a list of patterns, or a list of `{split, path}` where `path` is a
//! pattern or a list of them), an optional `data_dir`, and `default: true` for the config loaded
//! when none is named.

use std::path::Path;

use serde::Deserialize;

use crate::error::DataError;

/// The dataset card file.
pub const README: &str = "README.md";

/// One entry of `configs:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardConfig {
    /// `config_name`.
    pub name: String,
    /// `default: true`.
    pub default: bool,
    /// `data_dir`: a folder the patterns (or the inferred layout) are relative to.
    pub data_dir: Option<String>,
    /// `(split, patterns)` in the card's order; `None` when `data_files` is absent (the files
    /// are then inferred from the layout under `data_dir`).
    pub data_files: Option<Vec<(String, Vec<String>)>>,
}

#[derive(Deserialize)]
struct FrontMatter {
    #[serde(default)]
    configs: Option<serde_yaml_ng::Value>,
}

/// The configs of the card at `dir/README.md`; empty when there is no card, no front matter or
/// no `configs:` key.
///
/// # Errors
/// [`DataError::DataSource`] naming the card and the entry when the YAML or an entry is malformed
/// (as `datasets` refuses it).
pub fn read_card_configs(dir: &Path) -> Result<Vec<CardConfig>, DataError> {
    let path = dir.join(README);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = crate::error::read_text(&path)?;
    let Some(yaml) = front_matter(&text) else {
        return Ok(Vec::new());
    };
    let bad = |reason: String| DataError::DataSource {
        path: path.clone(),
        reason,
    };
    if let Some(line) = deeper_flow_than_allowed(yaml) {
        // The front matter starts on the card's line 2 (after `---`).
        return Err(bad(format!(
            "the YAML front matter nests flow collections (`{{`, `[`) deeper than \
             {MAX_FLOW_DEPTH} levels at line {}",
            line + 1
        )));
    }
    let matter: FrontMatter = serde_yaml_ng::from_str(yaml).map_err(|e| {
        // The front matter starts on the card's line 2 (after `---`).
        match e.location() {
            Some(at) => bad(format!(
                "the YAML front matter does not parse at line {}, column {}: {e}",
                at.line() + 1,
                at.column()
            )),
            None => bad(format!(
                "the YAML front matter (lines 2 to {}) does not parse: {e}",
                yaml.lines().count() + 1
            )),
        }
    })?;
    let Some(configs) = matter.configs else {
        return Ok(Vec::new());
    };
    let serde_yaml_ng::Value::Sequence(entries) = configs else {
        return Err(bad("`configs` must be a list".into()));
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            parse_config(entry).map_err(|reason| bad(format!("configs[{i}]: {reason}")))
        })
        .collect()
}

/// The deepest flow nesting (`{`, `[`) a card's front matter may have. libyaml's scanner (under
/// serde_yaml_ng) looks at every open flow level at each token, so scanning `{"a":{"a":...`
/// 100,000 deep took minutes before the parser's recursion limit could refuse it (`sdpo-fuzz`).
const MAX_FLOW_DEPTH: usize = 64;

/// The 1-based line of `yaml` where a `{` or `[` opens a flow level deeper than
/// [`MAX_FLOW_DEPTH`], if one does. Quoted scalars and comments are skipped; a bracket inside a
/// plain or block scalar counts too, which can only matter for text with 64 unclosed brackets.
fn deeper_flow_than_allowed(yaml: &str) -> Option<usize> {
    let bytes = yaml.as_bytes();
    let mut depth = 0usize;
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let starts_token = i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\r');
        let starts_value = starts_token || matches!(bytes[i - 1], b'[' | b'{' | b',' | b':');
        match byte {
            b'\n' => line += 1,
            b'#' if starts_token => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'\'' | b'"' if starts_value => {
                // A quoted scalar: `''` escapes a single quote, `\` escapes in double quotes.
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\n' => line += 1,
                        b'\\' if byte == b'"' => i += 1,
                        b'\'' if byte == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        quote if quote == byte => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(line);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The text between a leading `---` line and the next `---` line.
fn front_matter(text: &str) -> Option<&str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some(&rest[..offset]);
        }
        offset += line.len();
    }
    None
}

fn parse_config(entry: &serde_yaml_ng::Value) -> Result<CardConfig, String> {
    use serde_yaml_ng::Value as Y;
    let Y::Mapping(map) = entry else {
        return Err("each config must be a mapping".into());
    };
    let get = |key: &str| map.get(Y::String(key.into()));
    let name = match get("config_name") {
        Some(Y::String(s)) => s.clone(),
        Some(_) => return Err("`config_name` must be a string".into()),
        None => return Err("each config must include `config_name`".into()),
    };
    let default = matches!(get("default"), Some(Y::Bool(true)));
    let data_dir = match get("data_dir") {
        None | Some(Y::Null) => None,
        Some(Y::String(s)) => Some(s.clone()),
        Some(_) => return Err(format!("config `{name}`: `data_dir` must be a string")),
    };
    if let Some(key) = ["field", "sep", "delimiter"]
        .into_iter()
        .find(|k| get(k).is_some())
    {
        return Err(format!(
            "config `{name}`: `{key}` changes how files are read and is not supported"
        ));
    }
    let data_files = match get("data_files") {
        None | Some(Y::Null) => None,
        Some(value) => Some(
            data_files(value)
                .map_err(|reason| format!("config `{name}`: `data_files`: {reason}"))?,
        ),
    };
    let paths = data_dir.iter().map(|dir| ("data_dir", dir)).chain(
        data_files
            .iter()
            .flatten()
            .flat_map(|(_, patterns)| patterns.iter().map(|p| ("data_files", p))),
    );
    for (key, path) in paths {
        if leaves_the_dataset(path) {
            return Err(format!(
                "config `{name}`: `{key}`: `{path}` leaves the dataset directory (an absolute path or `..`)"
            ));
        }
    }
    Ok(CardConfig {
        name,
        default,
        data_dir,
        data_files,
    })
}

/// `datasets`' `sanitize_patterns` on the YAML forms it accepts.
fn data_files(value: &serde_yaml_ng::Value) -> Result<Vec<(String, Vec<String>)>, String> {
    use serde_yaml_ng::Value as Y;
    let strings = |value: &Y| -> Result<Vec<String>, String> {
        match value {
            Y::String(s) => Ok(vec![s.clone()]),
            Y::Sequence(items) => items
                .iter()
                .map(|item| match item {
                    Y::String(s) => Ok(s.clone()),
                    _ => Err("a path list must hold strings".to_string()),
                })
                .collect(),
            _ => Err("a path must be a string or a list of strings".into()),
        }
    };
    match value {
        Y::String(s) => Ok(vec![("train".into(), vec![s.clone()])]),
        Y::Sequence(items) if items.iter().all(|i| matches!(i, Y::String(_))) => {
            Ok(vec![("train".into(), strings(value)?)])
        }
        Y::Sequence(items) => {
            let mut out: Vec<(String, Vec<String>)> = Vec::new();
            for item in items {
                let Y::Mapping(map) = item else {
                    return Err(
                        "expected a string, a list of strings, or a list of {split, path}".into(),
                    );
                };
                let split = match map.get(Y::String("split".into())) {
                    Some(Y::String(s)) => s.clone(),
                    _ => return Err("each {split, path} entry needs a string `split`".into()),
                };
                if map.len() != 2 {
                    return Err(format!(
                        "the entry for split `{split}` must have exactly `split` and `path`"
                    ));
                }
                let path = map
                    .get(Y::String("path".into()))
                    .ok_or_else(|| format!("the entry for split `{split}` has no `path`"))?;
                if out.iter().any(|(s, _)| *s == split) {
                    return Err(format!("split `{split}` is listed twice"));
                }
                out.push((split, strings(path)?));
            }
            Ok(out)
        }
        _ => Err("expected a string, a list of strings, or a list of {split, path}".into()),
    }
}

/// `MetadataConfigs.get_default_config_name`: the only config, or the one named `default`, or
/// the one with `default: true`.
///
/// # Errors
/// A message when several configs claim to be the default.
pub fn default_config(configs: &[CardConfig]) -> Result<Option<&CardConfig>, String> {
    let mut found: Option<&CardConfig> = None;
    for config in configs {
        if configs.len() == 1 || config.name == "default" || config.default {
            if let Some(first) = found {
                return Err(format!(
                    "the dataset has several default configs: `{}` and `{}`",
                    first.name, config.name
                ));
            }
            found = Some(config);
        }
    }
    Ok(found)
}

/// Whether a card's path or pattern reaches outside the dataset directory: `datasets` resolves
/// them inside the repository, and a card from the Hub must not make us read the machine's
/// files.
fn leaves_the_dataset(path: &str) -> bool {
    let path = std::path::Path::new(path);
    path.has_root()
        || path.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_the_first_yaml_block() {
        assert_eq!(front_matter("---\na: 1\n---\n# Title\n"), Some("a: 1\n"));
        assert_eq!(front_matter("# no front matter\n---\n"), None);
        assert_eq!(front_matter("---\nunterminated: 1\n"), None);
    }

    #[test]
    fn flow_nesting_past_the_bound_is_found_with_its_line_and_quotes_are_not_nesting() {
        let within = format!("a: {}1{}\n", "[".repeat(64), "]".repeat(64));
        assert_eq!(deeper_flow_than_allowed(&within), None);
        let past = format!("a: 1\nb: {}1{}\n", "[".repeat(65), "]".repeat(65));
        assert_eq!(deeper_flow_than_allowed(&past), Some(2));
        let deep = format!("c: {}\n", "{\"a\":".repeat(100_000));
        assert_eq!(deeper_flow_than_allowed(&deep), Some(1));
        let quoted = format!(
            "a: '{}'\nb: \"{}\\\"\"\nc: it's [1] # {}\n",
            "{".repeat(100),
            "[".repeat(100),
            "[".repeat(100)
        );
        assert_eq!(deeper_flow_than_allowed(&quoted), None);
    }

    #[test]
    fn data_files_take_the_three_yaml_forms() {
        let parse = |yaml: &str| data_files(&serde_yaml_ng::from_str(yaml).unwrap());
        assert_eq!(
            parse("data/*.jsonl").unwrap(),
            vec![("train".to_string(), vec!["data/*.jsonl".to_string()])]
        );
        assert_eq!(parse("[a.parquet, b.parquet]").unwrap()[0].1.len(), 2);
        let splits =
            parse("- split: train\n  path: [t1/*, t2/*]\n- split: test\n  path: test/*\n").unwrap();
        assert_eq!(
            splits[0],
            ("train".into(), vec!["t1/*".into(), "t2/*".into()])
        );
        assert_eq!(splits[1], ("test".into(), vec!["test/*".into()]));
        assert!(parse("- split: train\n  path: a\n- split: train\n  path: b\n").is_err());
        assert!(parse("{train: a}").is_err());
    }
}
