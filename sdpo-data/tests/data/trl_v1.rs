//! TRL 1.16's data pipeline id for id: every group of `data_v1.json` (fixtures README §7), made
//! by TRL's `DPOTrainer` and `DataCollatorForPreference` themselves. Every expectation is read
//! from the file, so another file of the same layout (other templates, other records) passes
//! through the same code.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::{fixtures_dir, read_json, temp_dir};
use sdpo_data::{
    DataConfig, PreferenceProcessor, PreferenceTokenizer, RecordLocation, TrlPipeline,
    TruncationMode,
};

fn ids(value: &Value, what: &str) -> Vec<i64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list"))
        .iter()
        .map(|v| {
            v.as_i64()
                .unwrap_or_else(|| panic!("{what}: expected integers"))
        })
        .collect()
}

fn matrix(value: &Value, what: &str) -> Vec<Vec<i64>> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list of rows"))
        .iter()
        .map(|row| ids(row, what))
        .collect()
}

fn rows(flat: &[i64], seq_len: usize) -> Vec<Vec<i64>> {
    flat.chunks(seq_len.max(1)).map(<[i64]>::to_vec).collect()
}

#[test]
fn data_v1_every_group_matches_trl() {
    let doc = read_json(&fixtures_dir().join("data_v1.json"));
    assert_eq!(doc["format"], "data_v1/v1");
    let tokenizer_dir = fixtures_dir().join(doc["tokenizer_dir"].as_str().expect("tokenizer_dir"));
    let pad_token_id = doc["pad_token_id"].as_i64().expect("pad_token_id");
    let groups = doc["groups"].as_array().expect("groups");
    assert!(!groups.is_empty());
    let dir = temp_dir("data-v1");
    let base = PreferenceTokenizer::from_dir(&tokenizer_dir).expect("tokenizer");
    assert_eq!(
        base.info().eos.as_ref().map(|t| t.content.as_str()),
        doc["eos_token"].as_str(),
        "eos_token"
    );
    let (mut records_checked, mut kept_checked) = (0, 0);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (g, group) in groups.iter().enumerate() {
        let label = format!(
            "group {g} ({}, max_length {}, {})",
            group["template"], group["max_length"], group["truncation_mode"]
        );
        let mut tokenizer = base.clone();
        if let Some(template) = group["chat_template"].as_str() {
            tokenizer = tokenizer.with_chat_template(template).expect(&label);
        }
        let truncation_mode = match group["truncation_mode"].as_str() {
            Some("keep_start") => TruncationMode::KeepStart,
            Some("keep_end") => TruncationMode::KeepEnd,
            other => panic!("{label}: truncation_mode {other:?}"),
        };
        let config = DataConfig {
            trl_semantics: TrlPipeline::V1,
            max_length: group["max_length"].as_u64().map(|m| m as usize),
            truncation_mode: Some(truncation_mode),
            ..DataConfig::default()
        };
        let processor = PreferenceProcessor::new(tokenizer, config).expect(&label);
        // The records as TRL got them: `kind` is the fixture's label, not a column.
        let records = group["records"].as_array().expect("records");
        let mut lines = String::new();
        let mut record_kinds = Vec::new();
        for record in records {
            let mut record = record.as_object().expect("record object").clone();
            let kind = record
                .remove("kind")
                .and_then(|k| k.as_str().map(String::from));
            record_kinds.push(kind.unwrap_or_else(|| "record".into()));
            lines.push_str(&serde_json::to_string(&record).unwrap());
            lines.push('\n');
        }
        let path = dir.join(format!("group-{g}.jsonl"));
        std::fs::write(&path, lines).unwrap();
        let dataset = processor
            .process_file(&path)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let num_kept = group["num_kept"].as_u64().expect("num_kept") as usize;
        assert_eq!(dataset.len(), num_kept, "{label}: kept records");
        assert_eq!(dataset.report.records_read, records.len(), "{label}");
        assert_eq!(
            dataset.report.dropped_truncated,
            records.len() - num_kept,
            "{label}: every record TRL leaves out is counted as dropped"
        );
        let prepared = group["prepared"].as_array().expect("prepared");
        assert_eq!(prepared.len(), num_kept, "{label}: prepared");
        for (k, (expected, pair)) in prepared.iter().zip(&dataset.pairs).enumerate() {
            let widen = |v: &[u32]| v.iter().map(|&i| i64::from(i)).collect::<Vec<_>>();
            for (name, ours) in [
                ("prompt_ids", widen(&pair.prompt_ids)),
                ("chosen_ids", widen(&pair.chosen_ids)),
                ("rejected_ids", widen(&pair.rejected_ids)),
            ] {
                assert_eq!(
                    ours,
                    ids(&expected[name], name),
                    "{label}: kept record {k}: {name}"
                );
            }
            let RecordLocation::Line(line) = dataset.origins[k].location else {
                panic!("{label}: a JSONL origin");
            };
            *kinds.entry(record_kinds[line - 1].clone()).or_default() += 1;
        }
        kept_checked += num_kept;
        records_checked += records.len();
        let collator = processor.collator().expect("collator");
        assert_eq!(
            i64::from(collator.pad_token_id),
            pad_token_id,
            "pad_token_id"
        );
        let batch = &group["batch"];
        if batch.is_null() {
            assert_eq!(num_kept, 0, "{label}: a null batch means nothing was kept");
            continue;
        }
        let all: Vec<usize> = (0..dataset.len()).collect();
        let ours = collator.collate_indices(&dataset, &all).expect("collate");
        for (name, flat) in [
            ("input_ids", &ours.input_ids),
            ("attention_mask", &ours.attention_mask),
            ("completion_mask", &ours.completion_mask),
        ] {
            assert_eq!(
                rows(flat, ours.seq_len),
                matrix(&batch[name], name),
                "{label}: batch {name}"
            );
        }
    }
    eprintln!(
        "data_v1: {} groups, {records_checked} records, {kept_checked} kept pairs checked id for id (by kind: {kinds:?})",
        groups.len()
    );
    assert!(kept_checked > 0);
}
