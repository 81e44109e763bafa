//! Parquet and Arrow inputs: files written by pyarrow / `datasets` (`fixtures/arrow/`, made by
//! `tools/make_arrow_fixtures.py`) and by the Rust crates here must give exactly the pairs, token
//! ids and content hash of the equivalent JSONL file; dataset directories, globs, splits and the
//! column mapping pick the right files and columns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, DictionaryArray, LargeStringArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sdpo_data::{
    DataConfig, DataError, FileKind, RecordLocation, TokenizedDataset, resolve_data_files,
};
use serde_json::Value;

use crate::common::{fixtures_dir, processor, temp_dir, unlimited};

fn arrow_dir() -> PathBuf {
    fixtures_dir().join("arrow")
}

/// The fixture parts and the JSONL each must equal.
const PARTS: [&str; 4] = [
    "standard",
    "conversational",
    "implicit",
    "implicit_conversational",
];

fn process(config: DataConfig, path: &Path) -> TokenizedDataset {
    processor(config)
        .process_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_same(expected: &TokenizedDataset, got: &TokenizedDataset, what: &str) {
    assert!(!expected.is_empty(), "{what}: the reference has pairs");
    assert_eq!(got.len(), expected.len(), "{what}: pair count");
    for (i, (e, g)) in expected.pairs.iter().zip(&got.pairs).enumerate() {
        assert_eq!(g, e, "{what}: pair {i}");
    }
    assert_eq!(got.content_hash(), expected.content_hash(), "{what}: hash");
    assert_eq!(got.report.skipped_total(), 0, "{what}");
    assert_eq!(got.report.records_read, expected.report.records_read);
}

#[test]
fn python_written_files_match_jsonl() {
    let mut checked = 0;
    for part in PARTS {
        let dir = arrow_dir();
        let reference = process(unlimited(), &dir.join(format!("{part}.jsonl")));
        for input in [
            format!("{part}.parquet"),          // pyarrow, zstd, 2 row groups
            format!("{part}_datasets.parquet"), // datasets.to_parquet, snappy
            format!("{part}_disk"),             // datasets.save_to_disk, 2 Arrow shards
        ] {
            let got = process(unlimited(), &dir.join(&input));
            assert_same(&reference, &got, &input);
            checked += 1;
        }
    }
    eprintln!("python-written columnar fixtures: {checked} files checked");
    assert_eq!(checked, 12);
}

#[test]
fn row_locations_run_on_across_row_groups_and_shards() {
    let dir = arrow_dir();
    let parquet = process(unlimited(), &dir.join("standard.parquet"));
    let rows: Vec<RecordLocation> = parquet.origins.iter().map(|o| o.location).collect();
    // 7 rows, row_group_size 4.
    for (row, location) in rows.iter().enumerate() {
        assert_eq!(
            *location,
            RecordLocation::RowGroupRow {
                row_group: row / 4,
                row
            }
        );
    }
    let disk = process(unlimited(), &dir.join("standard_disk"));
    assert_eq!(disk.report.files.len(), 2, "two shards");
    assert!(disk.report.files[0].ends_with("data-00000-of-00002.arrow"));
    // The second shard's rows count from 0 again, in their own file.
    let second = disk
        .origins
        .iter()
        .find(|o| o.path.ends_with("data-00001-of-00002.arrow"))
        .expect("rows from the second shard");
    assert_eq!(
        second.location,
        RecordLocation::BatchRow { batch: 0, row: 0 }
    );
}

/// A JSON value as an Arrow column: strings, or lists of `{role, content}` messages.
fn column(values: &[&Value]) -> (DataType, ArrayRef) {
    if values.iter().all(|v| v.is_string()) {
        let array = StringArray::from_iter_values(values.iter().map(|v| v.as_str().unwrap()));
        return (DataType::Utf8, Arc::new(array));
    }
    let fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, true),
        Field::new("content", DataType::Utf8, true),
    ]);
    let mut builder = ListBuilder::new(StructBuilder::from_fields(fields.clone(), 4));
    for value in values {
        for message in value.as_array().expect("a list of messages") {
            let messages = builder.values();
            for (i, key) in ["role", "content"].into_iter().enumerate() {
                messages
                    .field_builder::<StringBuilder>(i)
                    .unwrap()
                    .append_value(message[key].as_str().unwrap());
            }
            messages.append(true);
        }
        builder.append(true);
    }
    let array = builder.finish();
    (array.data_type().clone(), Arc::new(array))
}

/// The rows of a JSONL fixture as one record batch (columns in first-row key order, plus an
/// ignored extra column), with the prompt dictionary- or large-string-encoded when asked.
fn batch_from_jsonl(path: &Path, prompt_encoding: &str) -> RecordBatch {
    let rows: Vec<Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut fields = vec![Field::new("extra", DataType::Int32, false)];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(arrow_array::Int32Array::from_iter_values(
        0..rows.len() as i32,
    ))];
    for key in ["prompt", "chosen", "rejected"] {
        let values: Vec<&Value> = rows.iter().filter_map(|r| r.get(key)).collect();
        if values.is_empty() {
            continue;
        }
        let (mut data_type, mut array) = column(&values);
        if key == "prompt" && data_type == DataType::Utf8 {
            let texts = values.iter().map(|v| v.as_str().unwrap());
            match prompt_encoding {
                "dictionary" => {
                    let dict: DictionaryArray<Int32Type> = texts.collect();
                    data_type = dict.data_type().clone();
                    array = Arc::new(dict);
                }
                "large" => {
                    array = Arc::new(LargeStringArray::from_iter_values(texts));
                    data_type = DataType::LargeUtf8;
                }
                _ => {}
            }
        }
        fields.push(Field::new(key, data_type, true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

fn write_parquet(path: &Path, batch: &RecordBatch, compression: Compression) {
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(2))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn rust_written_files_match_jsonl() {
    let dir = temp_dir("rust-arrow");
    let mut checked = 0;
    for part in [
        "standard",
        "conversational",
        "implicit",
        "implicit_conversational",
    ] {
        let jsonl = arrow_dir().join(format!("{part}.jsonl"));
        let reference = process(unlimited(), &jsonl);
        let mut inputs = Vec::new();
        for (name, compression, encoding) in [
            ("plain", Compression::UNCOMPRESSED, "plain"),
            ("snappy", Compression::SNAPPY, "dictionary"),
            (
                "zstd",
                Compression::ZSTD(ZstdLevel::try_new(3).unwrap()),
                "large",
            ),
        ] {
            let path = dir.join(format!("{part}_{name}.parquet"));
            write_parquet(&path, &batch_from_jsonl(&jsonl, encoding), compression);
            inputs.push(path);
        }
        let batch = batch_from_jsonl(&jsonl, "plain");
        // Arrow IPC stream (what datasets writes) and file format, with an odd extension so the
        // kind is sniffed from the bytes.
        let stream = dir.join(format!("{part}.stream.bin"));
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(
            std::fs::File::create(&stream).unwrap(),
            &batch.schema(),
        )
        .unwrap();
        writer.write(&batch.slice(0, 2)).unwrap();
        writer.write(&batch.slice(2, batch.num_rows() - 2)).unwrap();
        writer.finish().unwrap();
        inputs.push(stream);
        let file = dir.join(format!("{part}.file.bin"));
        let mut writer = arrow_ipc::writer::FileWriter::try_new(
            std::fs::File::create(&file).unwrap(),
            &batch.schema(),
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        inputs.push(file);
        for input in &inputs {
            let got = process(unlimited(), input);
            assert_same(&reference, &got, &input.display().to_string());
            checked += 1;
        }
        let kinds: Vec<FileKind> = inputs
            .iter()
            .map(|p| FileKind::of_file(p).unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                FileKind::Parquet,
                FileKind::Parquet,
                FileKind::Parquet,
                FileKind::ArrowIpc,
                FileKind::ArrowIpc
            ]
        );
    }
    eprintln!("rust-written columnar files: {checked} checked");
    assert_eq!(checked, 20);
}

#[test]
fn hub_layout_splits_globs_and_dataset_dicts() {
    let dir = arrow_dir();
    let train = process(unlimited(), &dir.join("hub_train.jsonl"));
    let test = process(unlimited(), &dir.join("hub_test.jsonl"));
    let p = processor(unlimited());
    let hub = dir.join("hub");
    let mut checked = 0;
    for (what, got, expected) in [
        ("hub train", p.process_file(&hub), &train),
        ("hub test", p.process_eval_file(&hub), &test),
        (
            "glob",
            p.process_file(dir.join("hub/data/train-*.parquet")),
            &train,
        ),
        ("dict train", p.process_file(dir.join("dict")), &train),
        ("dict test", p.process_eval_file(dir.join("dict")), &test),
        ("explicit split", p.process_split(&hub, "test"), &test),
    ] {
        let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_same(expected, &got, what);
        checked += 1;
    }
    let files = resolve_data_files(&hub, "train").unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "train-00000-of-00002.parquet",
            "train-00001-of-00002.parquet"
        ],
        "shards in name order"
    );
    // A split that is not there is an error naming the splits that are.
    let config = DataConfig {
        dataset_train_split: "validation".into(),
        ..unlimited()
    };
    for path in [hub.clone(), dir.join("dict")] {
        let err = processor(config.clone()).process_file(&path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, DataError::DataSource { .. }), "{err:?}");
        assert!(message.contains("validation"), "{message}");
        assert!(message.contains("test, train"), "{message}");
    }
    let err = p
        .process_file(dir.join("hub/data/nothing-*.parquet"))
        .unwrap_err();
    assert!(err.to_string().contains("matches no file"), "{err}");
    eprintln!("dataset layouts: {checked} checked");
}

#[test]
fn a_directory_of_unnamed_shards_is_read_whole_in_name_order() {
    let dir = temp_dir("shards");
    let jsonl = arrow_dir().join("standard.jsonl");
    let batch = batch_from_jsonl(&jsonl, "plain");
    // Shards of 3, 3 and 1 rows, named so that name order is row order.
    for (i, start) in [0usize, 3, 6].into_iter().enumerate() {
        let len = (batch.num_rows() - start).min(3);
        write_parquet(
            &dir.join(format!("part-{i:05}.parquet")),
            &batch.slice(start, len),
            Compression::SNAPPY,
        );
    }
    let reference = process(unlimited(), &jsonl);
    let got = process(unlimited(), &dir);
    assert_same(&reference, &got, "shard directory");
    assert_eq!(got.report.files.len(), 3);
    // Parquet and JSON files for one split are refused: likely the same data twice.
    std::fs::copy(&jsonl, dir.join("part-00003.jsonl")).unwrap();
    let err = processor(unlimited()).process_file(&dir).unwrap_err();
    assert!(err.to_string().contains("JSON and Parquet"), "{err}");
}

#[test]
fn column_mapping_reads_other_column_names() {
    let dir = arrow_dir();
    let reference = process(unlimited(), &dir.join("mapped.jsonl"));
    let mapping = DataConfig {
        prompt_column: "question".into(),
        chosen_column: "response_j".into(),
        rejected_column: "response_k".into(),
        ..unlimited()
    };
    let got = process(mapping.clone(), &dir.join("mapped.parquet"));
    assert_same(&reference, &got, "mapped parquet");
    // The mapping applies to JSON keys too.
    let renamed: String = std::fs::read_to_string(dir.join("mapped.jsonl"))
        .unwrap()
        .replace("\"prompt\":", "\"question\":")
        .replace("\"chosen\":", "\"response_j\":")
        .replace("\"rejected\":", "\"response_k\":");
    let json = temp_dir("mapped").join("mapped.jsonl");
    std::fs::write(&json, renamed).unwrap();
    assert_same(&reference, &process(mapping.clone(), &json), "mapped jsonl");
    // Without the mapping: the missing column is named, with the columns the file has.
    let err = processor(unlimited())
        .process_file(dir.join("mapped.parquet"))
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, DataError::MissingColumn { .. }), "{err:?}");
    assert!(
        message.contains("column `chosen` (`chosen_column`) not found")
            && message.contains("question, response_j, response_k"),
        "{message}"
    );
    // Swapping chosen and rejected changes the pairs, so the cache key.
    let swapped = DataConfig {
        chosen_column: "response_k".into(),
        rejected_column: "response_j".into(),
        ..mapping
    };
    let other = process(swapped, &dir.join("mapped.parquet"));
    assert_ne!(other.content_hash(), got.content_hash());
    // Errors name the mapped column.
    let bad = temp_dir("mapped-bad").join("bad.jsonl");
    std::fs::write(
        &bad,
        r#"{"question": "q", "response_j": "", "response_k": "k"}"#,
    )
    .unwrap();
    let config = DataConfig {
        prompt_column: "question".into(),
        chosen_column: "response_j".into(),
        rejected_column: "response_k".into(),
        ..unlimited()
    };
    let err = processor(config).process_file(&bad).unwrap_err();
    assert!(
        err.to_string().contains("field `response_j`: is empty"),
        "{err}"
    );
}

#[test]
fn content_hash_follows_the_data_not_the_container() {
    let dir = arrow_dir();
    let jsonl = process(unlimited(), &dir.join("standard.jsonl"));
    let parquet = process(unlimited(), &dir.join("standard.parquet"));
    // Same tokens from either container: same key, so a cache made from JSONL serves Parquet.
    assert_eq!(jsonl.content_hash(), parquet.content_hash());
    // The JSONL key is the one sdpo-data has always computed (v1 layout): pinned by recomputing
    // it from the ids by the documented layout.
    assert_eq!(jsonl.content_hash(), reference_hash(&jsonl));
    // Other shards or another split: other pairs, another key.
    let p = processor(unlimited());
    let train = p.process_file(dir.join("hub")).unwrap();
    let test = p.process_eval_file(dir.join("hub")).unwrap();
    let first_shard = p
        .process_file(dir.join("hub/data/train-00000-*.parquet"))
        .unwrap();
    assert_ne!(train.content_hash(), test.content_hash());
    assert_ne!(train.content_hash(), first_shard.content_hash());
}

/// FNV-1a over "sdpo-data/v1", max_length, truncation_mode, the pair count and each id list
/// (length then ids, little endian), as `TokenizedDataset::content_hash` documents.
fn reference_hash(data: &TokenizedDataset) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut write = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    write(b"sdpo-data/v1");
    write(&data.max_length.map_or(u64::MAX, |m| m as u64).to_le_bytes());
    write(data.truncation_mode.as_str().as_bytes());
    write(&(data.pairs.len() as u64).to_le_bytes());
    for pair in &data.pairs {
        for ids in [&pair.prompt_ids, &pair.chosen_ids, &pair.rejected_ids] {
            write(&(ids.len() as u64).to_le_bytes());
            for id in ids {
                write(&id.to_le_bytes());
            }
        }
    }
    h
}

#[test]
fn empty_parquet_table_gives_no_pairs_but_checks_columns() {
    let dir = temp_dir("empty-table");
    let jsonl = arrow_dir().join("standard.jsonl");
    let batch = batch_from_jsonl(&jsonl, "plain");
    let path = dir.join("empty.parquet");
    write_parquet(&path, &batch.slice(0, 0), Compression::SNAPPY);
    let data = process(unlimited(), &path);
    assert!(data.is_empty());
    assert_eq!(data.report.records_read, 0);
    let config = DataConfig {
        chosen_column: "nope".into(),
        ..unlimited()
    };
    let err = processor(config).process_file(&path).unwrap_err();
    assert!(matches!(err, DataError::MissingColumn { .. }), "{err:?}");
}

#[test]
fn config_keys_for_columns_and_splits() {
    let config: DataConfig = serde_json::from_str(
        r#"{"prompt_column": "question", "chosen_column": "response_j", "rejected_column": "response_k", "dataset_train_split": "train_prefs", "dataset_test_split": "test_prefs"}"#,
    )
    .unwrap();
    assert_eq!(config.columns().chosen, "response_j");
    assert_eq!(config.dataset_test_split, "test_prefs");
    let defaults = DataConfig::v0_28();
    assert_eq!(
        (
            defaults.prompt_column.as_str(),
            defaults.chosen_column.as_str(),
            defaults.rejected_column.as_str(),
            defaults.dataset_train_split.as_str(),
            defaults.dataset_test_split.as_str()
        ),
        ("prompt", "chosen", "rejected", "train", "test")
    );
    for bad in [
        r#"{"chosen_column": ""}"#,
        r#"{"chosen_column": "rejected"}"#,
        r#"{"dataset_train_split": "data/*"}"#,
    ] {
        let config: DataConfig = serde_json::from_str(bad).unwrap();
        assert!(
            matches!(config.validate(), Err(DataError::Config { .. })),
            "{bad}"
        );
    }
}

#[test]
fn quickstart_parquet_copy_has_the_quickstart_pairs() {
    let quickstart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    // The quickstart's data settings (examples/quickstart/sdpo.toml).
    let config = DataConfig {
        max_length: Some(96),
        max_prompt_length: Some(Some(48)),
        ..DataConfig::v0_28()
    };
    let p = processor(config);
    let parquet = quickstart.join("parquet");
    let mut checked = 0;
    for (jsonl, got) in [
        ("train.jsonl", p.process_file(&parquet)),
        ("eval.jsonl", p.process_eval_file(&parquet)),
        (
            "train.jsonl",
            p.process_file(parquet.join("data/train-00000-of-00001.parquet")),
        ),
        (
            "eval.jsonl",
            p.process_file(parquet.join("data/test-00000-of-00001.parquet")),
        ),
    ] {
        let expected = p.process_file(quickstart.join(jsonl)).unwrap();
        assert_same(&expected, &got.unwrap(), jsonl);
        checked += 1;
    }
    assert_eq!(checked, 4);
}
