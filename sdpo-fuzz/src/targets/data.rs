//! Preference data: JSON, JSONL and gzip-compressed records in all three formats, Parquet and
//! Arrow IPC files, and dataset directories (`README.md` `configs:`, `save_to_disk`'s
//! `state.json`). Chat templates and tokenizer configs are in [`super::templates`].
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
pub(crate) static TARGETS: [crate::Target; 7] = [
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
];
