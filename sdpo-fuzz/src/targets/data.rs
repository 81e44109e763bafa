//! Preference data: JSON, JSONL and gzip-compressed records in all three formats, Parquet and
//! Arrow IPC files, dataset directories (`README.md` `configs:`, `save_to_disk`'s `state.json`),
//! and chat templates rendered under their fuel, recursion and output limits.
//!
//! Each target runs what `sdpo train` runs on such a file: [`PreferenceProcessor::process_file`]
//! or [`PreferenceProcessor::process_dataset`] with a real tokenizer, so reading, validation,
//! templating and tokenization are all under test.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arbitrary::{Result, Unstructured};
use sdpo_data::{DataConfig, PreferenceProcessor, PreferenceTokenizer};
use serde_json::{Value, json};

use crate::structured::{deep_json, messages, perturb, string, to_json, value};
use crate::{Rejection, workspace_root};

/// The keys of preference records and what sits in them.
pub(crate) const RECORD_KEYS: [&str; 12] = [
    "prompt",
    "chosen",
    "rejected",
    "messages",
    "tools",
    "chat_template_kwargs",
    "role",
    "content",
    "images",
    "text",
    "score_chosen",
    "id",
];

const ROLES: [&str; 6] = ["user", "assistant", "system", "tool", "", "developer"];

/// The processor the data targets share: the real SmolLM2 tokenizer and its chat template, TRL
/// 1.x's pipeline.
fn processor() -> &'static PreferenceProcessor {
    static PROCESSOR: OnceLock<PreferenceProcessor> = OnceLock::new();
    PROCESSOR.get_or_init(|| {
        let tokenizer = PreferenceTokenizer::from_dir(workspace_root().join("fixtures/smollm2"))
            .unwrap_or_else(|e| panic!("the fuzz harness needs fixtures/smollm2: {e}"));
        PreferenceProcessor::new(tokenizer, DataConfig::default())
            .unwrap_or_else(|e| panic!("the default data config: {e}"))
    })
}

/// One preference record in one of the three formats (explicit prompt, implicit prompt,
/// conversational), perturbed.
pub(crate) fn record(u: &mut Unstructured<'_>) -> Result<Value> {
    let text = |u: &mut Unstructured<'_>| -> Result<Value> {
        Ok(Value::String(string(
            u,
            &["Hi", "Hello there", "", "\u{0}", "<|im_start|>"],
        )?))
    };
    let mut record = match u.int_in_range(0..=2)? {
        0 => json!({"prompt": text(u)?, "chosen": text(u)?, "rejected": text(u)?}),
        1 => json!({"chosen": messages(u, &ROLES)?, "rejected": messages(u, &ROLES)?}),
        _ => json!({
            "prompt": messages(u, &ROLES)?,
            "chosen": messages(u, &ROLES)?,
            "rejected": messages(u, &ROLES)?,
        }),
    };
    if u.ratio(1, 5)? {
        record["tools"] = if u.arbitrary()? {
            Value::String(serde_json::to_string(&value(u, &RECORD_KEYS, 2)?).unwrap_or_default())
        } else {
            value(u, &["type", "function", "name", "parameters"], 3)?
        };
    }
    if u.ratio(1, 5)? {
        record["chat_template_kwargs"] =
            value(u, &["enable_thinking", "add_generation_prompt"], 2)?;
    }
    perturb(u, record, &RECORD_KEYS)
}

/// JSONL text: a few records, now and then a blank, broken or deeply nested line.
fn jsonl(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(1..=5)? {
        match u.int_in_range(0..=19)? {
            0 => out.extend(deep_json(u)?),
            1 => {}
            2 => out.extend(u.arbitrary::<String>()?.into_bytes()),
            _ => out.extend(serde_json::to_vec(&record(u)?).unwrap_or_default()),
        }
        out.push(b'\n');
    }
    Ok(out)
}

fn json_array(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    if u.ratio(1, 10)? {
        return deep_json(u);
    }
    let records: Vec<Value> = (0..u.int_in_range(0..=4)?)
        .map(|_| record(u))
        .collect::<Result<_>>()?;
    let value = if u.ratio(1, 8)? {
        json!({"data": records})
    } else {
        Value::Array(records)
    };
    to_json(u, &value)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

fn jsonl_gz(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let text = jsonl(u)?;
    let mut bytes = gzip(&text);
    if u.ratio(1, 4)? && !bytes.is_empty() {
        // A stream cut short or with a wrong trailer.
        let cut = u.int_in_range(0..=bytes.len() - 1)?;
        bytes.truncate(cut);
    }
    Ok(bytes)
}

fn process_file(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    processor().process_file(path)?;
    Ok(())
}

/// Columns of the three formats as Arrow arrays: strings, message lists, or wrong types.
fn batch(u: &mut Unstructured<'_>) -> Result<arrow_array::RecordBatch> {
    use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Fields};
    let rows = u.int_in_range(0..=4)?;
    let mut columns: Vec<(String, ArrayRef)> = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        let name = string(u, &RECORD_KEYS)?;
        let array: ArrayRef = match u.int_in_range(0..=3)? {
            0 => Arc::new(Int64Array::from(
                (0..rows)
                    .map(|_| u.arbitrary::<Option<i64>>())
                    .collect::<Result<Vec<_>>>()?,
            )),
            1 => {
                let fields = Fields::from(vec![
                    Field::new("role", DataType::Utf8, true),
                    Field::new("content", DataType::Utf8, true),
                ]);
                let mut list = ListBuilder::new(StructBuilder::from_fields(fields, 0));
                for _ in 0..rows {
                    for _ in 0..u.int_in_range(0..=3)? {
                        let entry = list.values();
                        let role = u.choose(&ROLES)?.to_string();
                        let content = string(u, &["Hi", ""])?;
                        if let Some(b) = entry.field_builder::<StringBuilder>(0) {
                            b.append_value(role);
                        }
                        if let Some(b) = entry.field_builder::<StringBuilder>(1) {
                            b.append_option(u.ratio(7, 8)?.then_some(content));
                        }
                        entry.append(true);
                    }
                    list.append(u.ratio(7, 8)?);
                }
                Arc::new(list.finish())
            }
            _ => Arc::new(StringArray::from(
                (0..rows)
                    .map(|_| {
                        Ok(u.ratio(7, 8)?
                            .then(|| string(u, &["Hi", "Yes", ""]).unwrap_or_default()))
                    })
                    .collect::<Result<Vec<_>>>()?,
            )),
        };
        if columns.iter().all(|(n, _)| *n != name) {
            columns.push((name, array));
        }
    }
    arrow_array::RecordBatch::try_from_iter(columns).map_err(|_| arbitrary::Error::IncorrectFormat)
}

fn parquet_file(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let batch = batch(u)?;
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None)
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    writer
        .write(&batch)
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    writer
        .close()
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    Ok(out)
}

fn arrow_stream(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let batch = batch(u)?;
    let mut out = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    writer
        .write(&batch)
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    writer
        .finish()
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    drop(writer);
    Ok(out)
}

/// A dataset card whose `configs:` name splits, paths and patterns (some outside the dataset).
fn card(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let paths = [
        "data/train/*.jsonl",
        "data/test-*.jsonl",
        "single/*.json",
        "**",
        "../*",
        "/etc/*",
        "data/**/*.jsonl",
        "small",
        "",
        "data/train/part-*.jsonl",
    ];
    let mut text = String::from("---\nconfigs:\n");
    for _ in 0..u.int_in_range(0..=3)? {
        text.push_str(&format!(
            "- config_name: {}\n",
            string(u, &["default", "small", "x"])?
        ));
        if u.arbitrary()? {
            text.push_str(&format!("  default: {}\n", u.arbitrary::<bool>()?));
        }
        match u.int_in_range(0..=3)? {
            0 => text.push_str(&format!("  data_dir: {}\n", u.choose(&paths)?)),
            1 => text.push_str(&format!("  data_files: {}\n", u.choose(&paths)?)),
            _ => {
                text.push_str("  data_files:\n");
                for _ in 0..u.int_in_range(0..=3)? {
                    text.push_str(&format!(
                        "  - split: {}\n",
                        string(u, &["train", "test", "validation"])?
                    ));
                    text.push_str(&format!("    path: {}\n", u.choose(&paths)?));
                }
            }
        }
    }
    text.push_str("---\n# card\n");
    Ok(text.into_bytes())
}

/// `README.md` of a dataset directory laid out as `fixtures/hub_dataset`: the card is the
/// input, the data files are the fixture's (linked).
fn dataset_card(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fixture = workspace_root().join("fixtures/hub_dataset");
    for entry in ["data", "single", "small"] {
        std::os::unix::fs::symlink(fixture.join(entry), dir.join(entry))?;
    }
    let processor = processor();
    for split in sdpo_data::dataset_split_names(dir, None)? {
        processor.process_dataset(dir, &split)?;
    }
    Ok(())
}

/// `state.json` of a `save_to_disk` directory: the input lists the Arrow files (the fixture's,
/// linked, or names that are not there).
fn dataset_state(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fixture = workspace_root().join("fixtures/arrow/standard_disk");
    for entry in [
        "data-00000-of-00002.arrow",
        "data-00001-of-00002.arrow",
        "dataset_info.json",
    ] {
        std::os::unix::fs::symlink(fixture.join(entry), dir.join(entry))?;
    }
    processor().process_dataset(dir, "train")?;
    Ok(())
}

fn state(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let names = [
        "data-00000-of-00002.arrow",
        "data-00001-of-00002.arrow",
        "../x.arrow",
        "missing.arrow",
        "/dev/zero",
        "",
    ];
    let files: Vec<Value> = (0..u.int_in_range(0..=3)?)
        .map(|_| Ok(json!({"filename": u.choose(&names)?})))
        .collect::<Result<_>>()?;
    let state = json!({"_data_files": files, "_split": null, "_fingerprint": "x"});
    let state = perturb(
        u,
        state,
        &["_data_files", "filename", "_split", "_format_columns"],
    )?;
    to_json(u, &state)
}

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

/// Where a data error says the input went wrong.
const DATA_LOCATORS: &[&str] = &[
    "split",
    "pattern",
    "data_files",
    "data_dir",
    "config `",
    "configs",
    "empty",
    "too short",
];

/// The data targets.
pub(crate) static TARGETS: [crate::Target; 9] = [
    crate::Target {
        name: "records_jsonl",
        about: "JSON Lines preference records (three formats) through process_file",
        file_name: "train.jsonl",
        names: &[],
        seeds: &[
            "fixtures/arrow/*.jsonl",
            "sdpo-data/tests/bad_inputs/*.jsonl",
            "examples/*/*.jsonl",
            "fixtures/hub_dataset/data/*.jsonl",
        ],
        generate: jsonl,
        run: process_file,
        locators: DATA_LOCATORS,
    },
    crate::Target {
        name: "records_json",
        about: "a JSON file of preference records (an array, or an object of columns) through process_file",
        file_name: "train.json",
        names: &[],
        seeds: &[
            "sdpo-data/tests/bad_inputs/*.json",
            "fixtures/hub_dataset/single/*.json",
            "examples/*/*.json",
        ],
        generate: json_array,
        run: process_file,
        locators: DATA_LOCATORS,
    },
    crate::Target {
        name: "records_jsonl_gz",
        about: "gzip-compressed JSON Lines (.jsonl.gz) through process_file",
        file_name: "train.jsonl.gz",
        names: &[],
        seeds: &["fixtures/hub_dataset/data/train/*.gz"],
        generate: jsonl_gz,
        run: process_file,
        locators: DATA_LOCATORS,
    },
    crate::Target {
        name: "parquet",
        about: "Parquet files (Hub and datasets.to_parquet layouts) through process_file",
        file_name: "train.parquet",
        names: &[],
        seeds: &[
            "fixtures/arrow/*.parquet",
            "sdpo-data/tests/bad_inputs/*.parquet",
            "fixtures/arrow/hub/data/*",
        ],
        generate: parquet_file,
        run: process_file,
        locators: DATA_LOCATORS,
    },
    crate::Target {
        name: "arrow_ipc",
        about: "Arrow IPC stream files (save_to_disk shards) through process_file",
        file_name: "train.arrow",
        names: &[],
        seeds: &[
            "fixtures/arrow/*_disk/*.arrow",
            "fixtures/arrow/dict/*/*.arrow",
        ],
        generate: arrow_stream,
        run: process_file,
        locators: DATA_LOCATORS,
    },
    crate::Target {
        name: "dataset_card",
        about: "a dataset directory's README.md `configs:` through dataset_split_names and process_dataset",
        file_name: "README.md",
        names: &[],
        seeds: &["fixtures/hub_dataset/README.md"],
        generate: card,
        run: dataset_card,
        locators: DATA_LOCATORS,
    },
    crate::Target {
        name: "dataset_state",
        about: "a save_to_disk directory's state.json through process_dataset",
        file_name: "state.json",
        names: &["state.json", ".arrow"],
        seeds: &["fixtures/arrow/*_disk/state.json"],
        generate: state,
        run: dataset_state,
        locators: DATA_LOCATORS,
    },
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
