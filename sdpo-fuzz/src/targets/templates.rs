//! Chat templates and tokenizer configs: `chat_template.jinja` and `tokenizer_config.json`
//! read by [`PreferenceTokenizer::from_dir`] next to a small tokenizer, then rendered on
//! conversational records under the template's fuel, recursion and output limits.

use std::path::Path;

use arbitrary::{Result, Unstructured};
use sdpo_data::{DataConfig, PreferenceProcessor, PreferenceTokenizer};
use serde_json::{Value, json};

use crate::structured::{perturb, string, to_json, value};
use crate::{Rejection, workspace_root};

/// A chat template as `chat_template.jinja` next to a small tokenizer, rendered on
/// conversational records with tools and template arguments.
fn chat_template(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tokenizer = workspace_root().join("fixtures/fuzz/seeds/tokenizer");
    for entry in ["tokenizer.json", "tokenizer_config.json"] {
        std::os::unix::fs::symlink(tokenizer.join(entry), dir.join(entry))?;
    }
    let records = dir.join("records.jsonl");
    std::fs::write(&records, TEMPLATE_RECORDS)?;
    let tokenizer = PreferenceTokenizer::from_dir(dir)?;
    PreferenceProcessor::new(tokenizer, DataConfig::default())?.process_file(&records)?;
    Ok(())
}

const TEMPLATE_RECORDS: &str = concat!(
    r#"{"prompt": [{"role": "system", "content": "t4"}, {"role": "user", "content": "t1"}], "chosen": [{"role": "assistant", "content": "t2"}], "rejected": [{"role": "assistant", "content": "t3"}]}"#,
    "\n",
    r#"{"prompt": [{"role": "user", "content": "t5"}], "chosen": [{"role": "assistant", "content": "t6"}], "rejected": [{"role": "assistant", "content": "t7"}], "tools": [{"type": "function", "function": {"name": "w", "parameters": {}}}], "chat_template_kwargs": {"enable_thinking": false}}"#,
    "\n"
);

/// A template assembled from the constructs real chat templates use, and the ones that loop,
/// recurse or write without end.
fn template(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    const PIECES: [&str; 22] = [
        "{% for message in messages %}",
        "{% endfor %}",
        "{{ message['role'] }}",
        "{{ message.content }}",
        "{% if add_generation_prompt %}",
        "{% endif %}",
        "{% else %}",
        "{{ bos_token }}",
        "{{ eos_token }}",
        "{{ raise_exception('no') }}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% set ns = namespace(a=1) %}",
        "{{ tools | tojson }}",
        "{{ messages[0].content[0] }}",
        "{{ strftime_now('%Y') }}",
        "{% generation %}",
        "{% endgeneration %}",
        "{{ enable_thinking }}",
        "{{ (messages | length) // 0 }}",
        "{{ message.content.split('x')[5] }}",
        "{% include 'other' %}",
        "{{ range(9999999999) | list }}",
    ];
    const BOUND_PIECES: [&str; 2] = [
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'x' * 100000000 }}",
    ];
    let mut text = String::new();
    for _ in 0..u.int_in_range(1..=10)? {
        if u.ratio(1, 6)? {
            text.push_str(&string(u, &["<|im_start|>", "\n", "{{", "{%", "}}"])?);
        } else if u.ratio(1, 60)? {
            // Rare: each runs into the fuel or output bound (up to 3.6 s of a debug build),
            // the same bound every time; as often as the others they took most of the run.
            text.push_str(u.choose(&BOUND_PIECES)?);
        } else {
            text.push_str(u.choose(&PIECES)?);
        }
    }
    Ok(text.into_bytes())
}

/// `tokenizer_config.json` next to a small `tokenizer.json`: special tokens, `chat_template`
/// as a string or a list, `add_bos_token`.
fn tokenizer_config(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tokenizer = workspace_root().join("fixtures/fuzz/seeds/tokenizer/tokenizer.json");
    std::os::unix::fs::symlink(tokenizer, dir.join("tokenizer.json"))?;
    let tokenizer = PreferenceTokenizer::from_dir(dir)?;
    let records = dir.join("records.jsonl");
    // Plain-text records when the config has no chat template, conversational ones when it has.
    let text = if tokenizer.info().has_chat_template {
        TEMPLATE_RECORDS
    } else {
        // Words of the small tokenizer's vocabulary (`t0` to `t319`).
        "{\"prompt\": \"t1 t2\", \"chosen\": \" t3\", \"rejected\": \" t4\"}\n"
    };
    std::fs::write(&records, text)?;
    PreferenceProcessor::new(tokenizer, DataConfig::default())?.process_file(&records)?;
    Ok(())
}

fn tokenizer_config_json(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    const KEYS: [&str; 8] = [
        "bos_token",
        "eos_token",
        "pad_token",
        "unk_token",
        "chat_template",
        "add_bos_token",
        "added_tokens_decoder",
        "model_max_length",
    ];
    let token = |u: &mut Unstructured<'_>| -> Result<Value> {
        Ok(match u.int_in_range(0..=3)? {
            0 => json!(u.choose(&["t0", "t319", "t5", "<s>", ""])?),
            1 => json!({"content": u.choose(&["t0", "t319", "nope"])?, "special": true}),
            2 => Value::Null,
            _ => value(u, &KEYS, 2)?,
        })
    };
    let chat_template = match u.int_in_range(0..=2)? {
        0 => Value::String(String::from_utf8_lossy(&template(u)?).into_owned()),
        1 => {
            json!([{"name": "default", "template": String::from_utf8_lossy(&template(u)?)}, {"name": string(u, &["tool_use", "default"])?, "template": "{{ 1 }}"}])
        }
        _ => value(u, &["name", "template"], 2)?,
    };
    let config = json!({
        "bos_token": token(u)?,
        "eos_token": token(u)?,
        "pad_token": token(u)?,
        "chat_template": chat_template,
        "add_bos_token": value(u, &KEYS, 0)?,
    });
    let config = perturb(u, config, &KEYS)?;
    to_json(u, &config)
}

pub(crate) static TARGETS: [crate::Target; 2] = [
    crate::Target {
        name: "chat_template",
        about: "chat_template.jinja compiled by PreferenceTokenizer::from_dir and rendered on records with tools",
        file_name: "chat_template.jinja",
        names: &["chat_template.jinja", "records.jsonl"],
        seeds: &["fixtures/**/*.jinja"],
        generate: template,
        run: chat_template,
        locators: &["template", "fuel", "recursion", "MiB"],
    },
    crate::Target {
        name: "tokenizer_config",
        about: "tokenizer_config.json (special tokens, chat_template string or list) through PreferenceTokenizer::from_dir",
        file_name: "tokenizer_config.json",
        names: &["tokenizer_config.json", "records.jsonl"],
        seeds: &["fixtures/**/tokenizer_config.json"],
        generate: tokenizer_config_json,
        run: tokenizer_config,
        locators: &["template", "fuel", "recursion", "MiB"],
    },
];
