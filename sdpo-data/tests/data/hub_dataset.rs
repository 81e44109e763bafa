//! Dataset repositories as `datasets` reads them: the README `configs:` block, `data_dir`,
//! gzipped JSONL, and TRL's `datasets:` mixtures, against `hub_dataset/expected.json`
//! (fixtures README §9), made by `datasets` and TRL's `get_dataset` themselves.

use std::path::Path;

use serde_json::Value;

use crate::common::{fixtures_dir, processor, read_json};
use sdpo_data::{
    ColumnNames, DataConfig, DataError, DatasetMixture, MixtureEntry, PairBody, PreferenceRecord,
    TokenizedDataset, read_file, resolve_dataset,
};

fn dataset_dir() -> std::path::PathBuf {
    fixtures_dir().join("hub_dataset")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

fn chosen_text(record: &PreferenceRecord) -> String {
    match &record.body {
        PairBody::Standard { chosen, .. } => chosen.clone(),
        PairBody::Conversational { chosen, .. } => chosen[0].content.clone(),
    }
}

fn read_chosen(files: &[sdpo_data::DataFile], columns: &ColumnNames) -> Vec<String> {
    let mut out = Vec::new();
    for file in files {
        read_file(file, columns, &mut |record: Result<
            PreferenceRecord,
            DataError,
        >| {
            out.push(chosen_text(&record.expect("valid record")));
            Ok(())
        })
        .expect("read");
    }
    out
}

#[test]
fn configs_choose_files_per_split_as_datasets_does() {
    let expected = read_json(&dataset_dir().join("expected.json"));
    let configs = expected["configs"].as_object().expect("configs");
    let mut checked = 0;
    for (config, splits) in configs {
        let name = (config != "<default>").then_some(config.as_str());
        for (split, chosen) in splits.as_object().expect("splits") {
            let files = resolve_dataset(&dataset_dir(), name, split)
                .unwrap_or_else(|e| panic!("{config}/{split}: {e}"));
            assert_eq!(
                read_chosen(&files, &ColumnNames::default()),
                strings(chosen),
                "{config}/{split}"
            );
            checked += 1;
        }
    }
    eprintln!("hub_dataset: {checked} config splits checked against datasets");
    assert!(checked > 0);
}

#[test]
fn mixtures_match_trls_get_dataset() {
    let expected = read_json(&dataset_dir().join("expected.json"));
    let mixtures = expected["mixtures"].as_array().expect("mixtures");
    for mixture in mixtures {
        let label = mixture["name"].as_str().unwrap_or("mixture");
        let entries: Vec<MixtureEntry> = mixture["datasets"]
            .as_array()
            .expect("datasets")
            .iter()
            .map(|entry| {
                let mut entry: MixtureEntry = serde_json::from_value(entry.clone()).expect("entry");
                entry.path = resolve(&entry.path);
                entry
            })
            .collect();
        let mixture_config = DatasetMixture::new(entries, None).expect(label);
        let keeps_tools = strings(&mixture["columns"]).iter().any(|c| c == "tools");
        let mut got = Vec::new();
        mixture_config
            .read("train", &ColumnNames::default(), &mut |record: Result<
                PreferenceRecord,
                DataError,
            >| {
                let record = record.expect("valid record");
                if !keeps_tools {
                    assert!(
                        record.tools.is_none(),
                        "{label}: `tools` is not a kept column"
                    );
                }
                got.push(chosen_text(&record));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(got, strings(&mixture["chosen"]), "{label}");
    }
    eprintln!(
        "hub_dataset: {} mixtures checked against TRL's get_dataset",
        mixtures.len()
    );
    assert!(!mixtures.is_empty());
}

/// Mixture paths in the fixture are relative to the dataset directory.
fn resolve(path: &str) -> String {
    dataset_dir()
        .join(Path::new(path))
        .to_string_lossy()
        .into_owned()
}

fn tokenized(config: DataConfig, split: &str) -> Result<TokenizedDataset, DataError> {
    processor(config).process_dataset(dataset_dir(), split)
}

#[test]
fn dataset_name_reads_both_splits_and_names_missing_ones() {
    let train = tokenized(DataConfig::default(), "train").unwrap();
    assert_eq!(train.len(), 7);
    assert!(
        train
            .report
            .files
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".jsonl.gz"))
    );
    assert!(
        !train
            .report
            .files
            .iter()
            .any(|f| f.to_string_lossy().contains(".part-9"))
    );
    let err = tokenized(DataConfig::default(), "validation")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no split `validation`") && err.contains("train, test"),
        "{err}"
    );
    let small = DataConfig {
        dataset_config: Some("small".into()),
        ..DataConfig::default()
    };
    assert_eq!(tokenized(small.clone(), "validation").unwrap().len(), 2);
    let err = tokenized(
        DataConfig {
            dataset_config: Some("tiny".into()),
            ..DataConfig::default()
        },
        "train",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no config `tiny`") && err.contains("small"),
        "{err}"
    );
}

#[test]
fn a_test_split_is_held_out_of_a_mixture_the_same_way_every_time() {
    let entries = vec![MixtureEntry {
        path: dataset_dir().to_string_lossy().into_owned(),
        name: None,
        data_dir: None,
        data_files: None,
        split: "train+test".into(),
        columns: None,
        fraction: None,
    }];
    let mixture = DatasetMixture::new(entries, Some(0.25)).unwrap();
    let read = |split: &str| {
        let mut got = Vec::new();
        mixture
            .read(split, &ColumnNames::default(), &mut |r: Result<
                PreferenceRecord,
                DataError,
            >| {
                got.push(chosen_text(&r.unwrap()));
                Ok(())
            })
            .unwrap();
        got
    };
    let (train, test) = (read("train"), read("test"));
    // 11 records: ceil(0.25 * 11) = 3 held out, as `train_test_split` sizes it.
    assert_eq!((train.len(), test.len()), (8, 3));
    assert!(test.iter().all(|t| !train.contains(t)));
    assert_eq!(
        read("test"),
        test,
        "the held-out records do not change between reads"
    );
    let err = DatasetMixture::new(vec![], None).unwrap_err().to_string();
    assert!(err.contains("lists no dataset"), "{err}");
}
