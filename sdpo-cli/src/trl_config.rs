//! From the keys of a file, TRL-style flags and `--set` to the keys `TrainConfig` reads: values
//! typed as `HfArgumentParser` types them, TRL keys honoured, mapped, warned about or refused
//! as [`crate::trl_keys`] says, unknown keys refused with a suggestion.

use std::collections::BTreeSet;

use anyhow::{Result, anyhow, bail};
use sdpo_train::TrainConfig;
use serde_json::{Map, Value};

use crate::trl_keys::{Kind, Status, TrlKey, lookup};

/// The keys for `TrainConfig`, and what else the TRL keys said.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The keys `TrainConfig` reads.
    pub map: Map<String, Value>,
    /// One line per key that changes nothing here.
    pub warnings: Vec<String>,
    /// TRL's `resume_from_checkpoint`.
    pub resume_from_checkpoint: Option<String>,
}

/// `huggingface_hub`/argparse's `string_to_bool`.
fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// A TOML literal (`1e-5`, `true`, `["a", "b"]`), else the text as a string.
pub fn parse_literal(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    toml::from_str::<toml::Table>(&doc)
        .ok()
        .and_then(|mut t| t.remove("v"))
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

fn number(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    text.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
}

/// `value` read as `kind` (a string from a flag or from YAML 1.1 becomes a number or a bool
/// where the key wants one, as argparse converts it).
pub fn coerce(kind: Kind, value: Value) -> Result<Value, String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        _ => None,
    };
    Ok(match (kind, value) {
        (_, Value::Null) => Value::Null,
        (Kind::Bool, Value::Bool(b)) => Value::Bool(b),
        (Kind::Bool, Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 1) => {
            Value::Bool(n.as_u64() == Some(1))
        }
        (Kind::Bool, v) => Value::Bool(
            text(&v)
                .and_then(|t| parse_bool(&t))
                .ok_or_else(|| format!("expected true or false, got {v}"))?,
        ),
        (Kind::Int | Kind::Float | Kind::Steps, Value::String(s)) => {
            number(&s).ok_or_else(|| format!("expected a number, got `{s}`"))?
        }
        (Kind::Str, Value::Number(n)) => Value::String(n.to_string()),
        (Kind::Str, Value::Bool(b)) => Value::String(b.to_string()),
        (Kind::Dict, Value::String(s)) => serde_json::from_str::<Map<String, Value>>(&s)
            .map(Value::Object)
            .map_err(|e| format!("expected a mapping or a JSON object, got `{s}`: {e}"))?,
        (Kind::FloatList, Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|v| coerce(Kind::Float, v))
                .collect::<Result<_, _>>()?,
        ),
        (_, v) => v,
    })
}

/// The value of a TRL-style flag: `--flag` (a bool), `--key value`, `--key v1 v2` (a list).
pub fn flag_value(key: &str, tokens: &[String], kind: Option<Kind>) -> Result<Value> {
    let one = || -> Result<&String> {
        match tokens {
            [only] => Ok(only),
            [] => Err(anyhow!("--{key} needs a value")),
            _ => Err(anyhow!("--{key} takes one value, got {}", tokens.len())),
        }
    };
    Ok(match kind {
        Some(Kind::Bool) if tokens.is_empty() => Value::Bool(true),
        Some(Kind::Str) => Value::String(one()?.clone()),
        Some(Kind::StrList) if tokens.len() == 1 && key == "lora_target_modules" => {
            // TRL's ModelConfig turns a one-entry list into its entry (PEFT then reads a
            // string as a regular expression, or `all-linear`).
            Value::String(tokens[0].clone())
        }
        Some(Kind::StrList) => Value::Array(tokens.iter().cloned().map(Value::String).collect()),
        Some(Kind::FloatList) => Value::Array(tokens.iter().map(|t| parse_literal(t)).collect()),
        Some(_) => Value::String(one()?.clone()),
        None if tokens.is_empty() => Value::Bool(true),
        None if tokens.len() == 1 => parse_literal(&tokens[0]),
        None => Value::Array(tokens.iter().map(|t| parse_literal(t)).collect()),
    })
}

/// The kind of a key: the TRL catalogue's, else what sdpo's default value suggests.
pub fn kind_of(key: &str) -> Option<Kind> {
    if let Some(trl) = lookup(key) {
        return Some(trl.kind);
    }
    match TrainConfig::default().to_map().get(key)? {
        Value::Bool(_) => Some(Kind::Bool),
        Value::Number(n) if n.is_f64() => Some(Kind::Float),
        Value::Number(_) => Some(Kind::Int),
        _ => None,
    }
}

fn is_default(key: &TrlKey, value: &Value) -> bool {
    let default: Value = serde_json::from_str(key.default).unwrap_or(Value::Null);
    match (value, &default) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::String(s)) if s.is_empty() => a.is_empty(),
        _ => *value == default,
    }
}

/// The closest known key to a misspelt one, when close enough to be a typo (the same rule as
/// a configuration file's keys: [`sdpo_train::config::closest_key`]).
fn suggestion(unknown: &str, known: &BTreeSet<String>) -> Option<String> {
    sdpo_train::config::closest_key(unknown, known.iter().map(String::as_str)).map(str::to_string)
}

/// Applies the TRL catalogue to `input` (keys in the order they were given).
pub fn prepare(input: Map<String, Value>) -> Result<Prepared> {
    let known = TrainConfig::known_keys();
    let mut out = Prepared::default();
    let mut rpo_alpha = None;
    for (key, value) in input {
        let trl = lookup(&key);
        let value = match kind_of(&key) {
            Some(kind) => coerce(kind, value).map_err(|e| anyhow!("key `{key}`: {e}"))?,
            None => value,
        };
        if value.is_null() {
            continue; // Unset: the default.
        }
        if key == "datasets" && value.as_array().is_some_and(Vec::is_empty) {
            continue; // TRL's default, an empty mixture: no mixture.
        }
        match trl.map(|k| k.status) {
            None | Some(Status::Honoured) if known.contains(&key) => {
                check_value(&key, &value)?;
                out.map.insert(key, value);
            }
            None | Some(Status::Honoured) => {
                let mut all = known.clone();
                all.extend(crate::trl_keys::TRL_KEYS.iter().map(|k| k.name.to_string()));
                let hint = suggestion(&key, &all)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                bail!("unknown key `{key}`{hint}; docs/configuration.md lists every key");
            }
            Some(Status::Mapped(_)) => map_key(&key, value, &mut out, &mut rpo_alpha)?,
            Some(_) if trl.is_some_and(|t| is_default(t, &value)) => {}
            Some(Status::Ignored(why)) => out.warnings.push(format!(
                "`{key}` = {value} changes nothing here and is ignored: {why}"
            )),
            Some(Status::Tracking) => out.warnings.push(format!(
                "`{key}` = {value} is ignored: it configures a tracking integration sdpo-rs does \
                 not have (report_to supports tensorboard and mlflow; docs/tracking.md)"
            )),
            Some(Status::Refused(why)) => bail!("`{key}` = {value} is not supported: {why}"),
        }
    }
    if let Some(alpha) = rpo_alpha {
        apply_rpo_alpha(&mut out.map, alpha)?;
    }
    Ok(out)
}

/// Values sdpo refuses with a reason before `TrainConfig` would refuse them without one.
fn check_value(key: &str, value: &Value) -> Result<()> {
    let text = value.as_str().unwrap_or_default();
    match (key, text) {
        (
            "optim",
            "adamw_torch" | "adamw_torch_fused" | "adamw_8bit" | "adamw_bnb_8bit"
            | "paged_adamw_8bit",
        ) => Ok(()),
        ("optim", other) => bail!(
            "`optim` = `{other}` is not supported: sdpo-rs implements AdamW (`adamw_torch`, \
             `adamw_torch_fused`: the same update) and bitsandbytes' 8-bit AdamW (`adamw_8bit`, \
             also spelled `adamw_bnb_8bit` and `paged_adamw_8bit`)"
        ),
        ("lr_scheduler_type", "reduce_lr_on_plateau" | "greedy") => bail!(
            "`lr_scheduler_type` = `{text}` is not supported: it adapts the learning rate to \
             evaluation or training metrics, which the schedule here does not read"
        ),
        _ => Ok(()),
    }
}

fn map_key(key: &str, value: Value, out: &mut Prepared, rpo_alpha: &mut Option<f64>) -> Result<()> {
    match key {
        "bf16" => {
            out.map.insert("bf16".into(), value);
        }
        "activation_checkpointing" => {
            out.map.insert("gradient_checkpointing".into(), value);
        }
        "use_bnb_nested_quant" => {
            out.map.insert("bnb_4bit_use_double_quant".into(), value);
        }
        "resume_from_checkpoint" => {
            out.resume_from_checkpoint = value.as_str().map(str::to_string);
        }
        "pad_to_multiple_of" => match &value {
            Value::String(s) if ["auto", "none", "null"].contains(&s.to_lowercase().as_str()) => {}
            Value::String(s) => {
                let n = number(s).ok_or_else(|| anyhow!("key `pad_to_multiple_of`: `{s}`"))?;
                out.map.insert(key.into(), n);
            }
            other => {
                out.map.insert(key.into(), other.clone());
            }
        },
        "train_sampling_strategy" => match value.as_str() {
            Some("random") => {}
            Some("group_by_length") => {
                out.map.insert("group_by_length".into(), Value::Bool(true));
            }
            _ => bail!(
                "`train_sampling_strategy` = {value} is not supported: batches are shuffled per \
                 epoch (`random`), optionally grouped by length (`group_by_length`)"
            ),
        },
        "model_init_kwargs" => map_model_init_kwargs(value, out)?,
        "rpo_alpha" => {
            *rpo_alpha = Some(
                value
                    .as_f64()
                    .ok_or_else(|| anyhow!("key `rpo_alpha`: expected a number, got {value}"))?,
            );
        }
        other => bail!("internal: no mapping for `{other}`"),
    }
    Ok(())
}

/// `model_init_kwargs` (the options DPOTrainer passes to `from_pretrained`): each entry is read
/// as the `ModelConfig` key of the same meaning (`dtype` and its old name `torch_dtype`,
/// `revision` as `model_revision`, `attn_implementation`, `trust_remote_code`), with that key's
/// handling; one that contradicts a key given directly is refused, as is any other option.
fn map_model_init_kwargs(value: Value, out: &mut Prepared) -> Result<()> {
    let Value::Object(entries) = value else {
        bail!(
            "`model_init_kwargs` = {value}: expected a mapping such as {{\"dtype\": \"bfloat16\"}}"
        );
    };
    let mut translated = Map::new();
    for (name, value) in entries {
        let key = match name.as_str() {
            "dtype" | "torch_dtype" => "dtype",
            "revision" => "model_revision",
            "attn_implementation" | "trust_remote_code" => name.as_str(),
            _ => bail!(
                "`model_init_kwargs.{name}` = {value} is not supported: of from_pretrained's \
                 options only dtype (torch_dtype), revision, attn_implementation and \
                 trust_remote_code apply here"
            ),
        };
        translated.insert(key.to_string(), value);
    }
    let inner = prepare(translated)?;
    for (key, value) in inner.map {
        match out.map.get(&key) {
            Some(given) if *given != value => bail!(
                "`model_init_kwargs` sets `{key}` = {value}, but `{key}` = {given} is given too"
            ),
            _ => {
                out.map.insert(key, value);
            }
        }
    }
    out.warnings.extend(inner.warnings);
    Ok(())
}

/// RPO as TRL 1.x writes it: `loss_type` gains `"sft"` with weight `alpha` (the others keep
/// theirs, 1.0 when unset).
fn apply_rpo_alpha(map: &mut Map<String, Value>, alpha: f64) -> Result<()> {
    let default_types = TrainConfig::default().to_map()["loss_type"].clone();
    let mut types: Vec<Value> = match map.get("loss_type").cloned().unwrap_or(default_types) {
        Value::Array(items) => items,
        one => vec![one],
    };
    if types.iter().any(|t| t == "sft") {
        bail!(
            "`rpo_alpha` adds an \"sft\" loss, and loss_type already has one: set its weight in loss_weights instead"
        );
    }
    let mut weights: Vec<Value> = match map.get("loss_weights") {
        Some(Value::Array(w)) => w.clone(),
        _ => vec![Value::from(1.0); types.len()],
    };
    types.push(Value::String("sft".into()));
    weights.push(Value::from(alpha));
    map.insert("loss_type".into(), Value::Array(types));
    map.insert("loss_weights".into(), Value::Array(weights));
    Ok(())
}
