//! TRL's YAML configuration files (`trl dpo --config run.yaml`) as flat JSON maps.

use anyhow::{Result, anyhow, bail};
use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::{Yaml, YamlLoader};

/// The top-level mapping of a YAML document, its values as JSON. Keys must be strings; anchors
/// and aliases are resolved by the parser; a value YAML cannot represent as JSON (`.nan`) is an
/// error naming its key.
pub fn parse_yaml(text: &str) -> Result<Map<String, Value>> {
    check_shape(text)?;
    let docs = YamlLoader::load_from_str(text).map_err(|e| anyhow!("not valid YAML: {e}"))?;
    match docs.into_iter().next() {
        None => Ok(Map::new()),
        Some(Yaml::Hash(hash)) => {
            let mut map = Map::new();
            for (key, value) in hash {
                let key = match key {
                    Yaml::String(s) => s,
                    other => bail!("top-level key {other:?} is not a string"),
                };
                let json = to_json(value).map_err(|e| anyhow!("key `{key}`: {e}"))?;
                map.insert(key, json);
            }
            Ok(map)
        }
        Some(_) => bail!("the file must hold a YAML mapping of keys to values"),
    }
}

fn to_json(value: Yaml) -> Result<Value> {
    Ok(match value {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(text) => {
            let x: f64 = text
                .parse()
                .map_err(|_| anyhow!("`{text}` is not a number"))?;
            Value::Number(Number::from_f64(x).ok_or_else(|| anyhow!("`{text}` is not finite"))?)
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Array(items) => Value::Array(items.into_iter().map(to_json).collect::<Result<_>>()?),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (key, value) in hash {
                let key = match key {
                    Yaml::String(s) => s,
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => bail!("mapping key {other:?} is not a string"),
                };
                map.insert(key, to_json(value)?);
            }
            Value::Object(map)
        }
        Yaml::Alias(_) | Yaml::BadValue => bail!("unsupported YAML value"),
    })
}

/// The deepest a configuration may nest: yaml-rust2's loader, the conversion below and the
/// value's drop each recurse once per level.
const MAX_DEPTH: usize = 64;

/// The most values a configuration may hold once its aliases are expanded (the loader copies an
/// anchored value at each alias: nine aliases of nine aliases are 387 million values).
const MAX_VALUES: usize = 100_000;

/// Walks the document's events (yaml-rust2's event parser is iterative) and refuses, with the
/// line, a nesting deeper than [`MAX_DEPTH`] or aliases that expand past [`MAX_VALUES`], before
/// the recursive loader sees it.
fn check_shape(text: &str) -> Result<()> {
    let mut parser = Parser::new_from_str(text);
    // The value count of each open collection (and its anchor), and of each anchor.
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut anchored: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut total = 0usize;
    loop {
        let (event, mark) = parser
            .next_token()
            .map_err(|e| anyhow!("not valid YAML: {e}"))?;
        // What the event adds to its parent collection, and to the document's total (a
        // collection's values are in the total already, only the collection itself is new).
        let (added, new_values) = match event {
            Event::StreamEnd => return Ok(()),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    bail!(
                        "line {}: nested deeper than {MAX_DEPTH} levels",
                        mark.line()
                    );
                }
                open.push((anchor, 0));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((anchor, count)) = open.pop() else {
                    continue;
                };
                let size = count.saturating_add(1);
                if anchor > 0 {
                    anchored.insert(anchor, size);
                }
                (size, 1)
            }
            Event::Scalar(_, _, anchor, _) => {
                if anchor > 0 {
                    anchored.insert(anchor, 1);
                }
                (1, 1)
            }
            Event::Alias(anchor) => {
                let size = anchored.get(&anchor).copied().unwrap_or(1);
                (size, size)
            }
            _ => continue,
        };
        total = total.saturating_add(new_values);
        if total > MAX_VALUES {
            bail!(
                "line {}: the document holds more than {MAX_VALUES} values once its aliases are expanded",
                mark.line()
            );
        }
        if let Some((_, count)) = open.last_mut() {
            *count = count.saturating_add(added);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trl_yaml_reads_as_json() {
        let map = parse_yaml(
            "model_name_or_path: Qwen/Qwen2-0.5B-Instruct\nlearning_rate: 5.0e-7\n\
             lora_target_modules: [q_proj, v_proj]\nbf16: true\nwarmup_steps: 0.1\n\
             eval_steps: 50\nenv:\n  HF_HUB_OFFLINE: 1\nmax_prompt_length: null\n",
        )
        .unwrap();
        assert_eq!(map["model_name_or_path"], "Qwen/Qwen2-0.5B-Instruct");
        assert_eq!(map["learning_rate"], 5e-7);
        assert_eq!(
            map["lora_target_modules"],
            serde_json::json!(["q_proj", "v_proj"])
        );
        assert_eq!(map["bf16"], true);
        assert_eq!(map["warmup_steps"], 0.1);
        assert_eq!(map["eval_steps"], 50);
        assert_eq!(map["env"]["HF_HUB_OFFLINE"], 1);
        assert!(map["max_prompt_length"].is_null());
        assert!(parse_yaml("- a\n- b\n").is_err());
        let err = parse_yaml("a: [1, 2\n").unwrap_err().to_string();
        assert!(
            err.contains("not valid YAML") && err.contains("line"),
            "{err}"
        );
    }
}
