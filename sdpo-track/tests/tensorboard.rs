//! TensorBoard event files read back (checksums verified): the version record, the
//! configuration as text, the chart layout, and every scalar of every log under transformers'
//! tag at its step. (CI reads the same files with TensorBoard's own reader: ci/tracking.sh.)

use std::collections::BTreeMap;

use prost::Message;
use sdpo_track::tensorboard::proto::{Layout, event, summary};
use sdpo_track::{ChartGroup, RunInfo, TensorBoardWriter, read_event_file};

fn info(dir: &std::path::Path) -> RunInfo {
    let mut info = RunInfo::new(dir);
    info.config = serde_json::from_str(r#"{"beta": 0.1, "loss_type": ["sdpo"]}"#).unwrap();
    info.model_config = Some(serde_json::from_str(r#"{"model_type": "llama"}"#).unwrap());
    info.chart_groups = vec![ChartGroup {
        title: "Loss".into(),
        metrics: vec!["loss".into()],
    }];
    info
}

#[test]
fn every_scalar_lands_under_transformers_tag_at_its_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runs/x");
    let mut writer = TensorBoardWriter::start(&dir, &info(tmp.path())).unwrap();
    let logs = [
        (
            2u64,
            0.5,
            vec![("loss", 0.75), ("rewards/accuracies", 0.625)],
        ),
        (
            2,
            0.5,
            vec![("eval_loss", 0.7), ("eval_rewards/chosen", f64::NAN)],
        ),
        (
            4,
            1.0,
            vec![("loss", 0.1 + 0.2), ("train_runtime", 12.3456)],
        ),
    ];
    let mut expected: Vec<(String, i64, f32)> = Vec::new();
    for (step, epoch, values) in &logs {
        let map: BTreeMap<String, f64> = values.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        writer.log(*step, *epoch, &map).unwrap();
        for (k, v) in map
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .chain([("epoch".into(), *epoch)])
        {
            expected.push((sdpo_track::tensorboard::tag_for(&k), *step as i64, v as f32));
        }
    }
    let file = writer.file().to_path_buf();
    drop(writer);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let events = read_event_file(&file).unwrap();
    assert_eq!(
        events[0].what,
        Some(event::What::FileVersion("brain.Event:2".into()))
    );
    let mut scalars = Vec::new();
    let mut texts = BTreeMap::new();
    let mut layout = None;
    for e in &events[1..] {
        let Some(event::What::Summary(s)) = &e.what else {
            panic!("not a summary: {e:?}");
        };
        for v in &s.value {
            match &v.value {
                Some(summary::value::Value::SimpleValue(x)) => {
                    scalars.push((v.tag.clone(), e.step, *x))
                }
                Some(summary::value::Value::Tensor(t)) => {
                    let plugin = &v.metadata.as_ref().unwrap().plugin_data.as_ref().unwrap();
                    if plugin.plugin_name == "custom_scalars" {
                        layout = Some(Layout::decode(t.string_val[0].as_slice()).unwrap());
                    } else {
                        assert_eq!(plugin.plugin_name, "text");
                        texts.insert(
                            v.tag.clone(),
                            String::from_utf8(t.string_val[0].clone()).unwrap(),
                        );
                    }
                }
                None => panic!("empty value {}", v.tag),
            }
        }
    }
    assert_eq!(scalars.len(), expected.len());
    for ((tag, step, value), (etag, estep, evalue)) in scalars.iter().zip(&expected) {
        assert_eq!((tag, step), (etag, estep));
        assert!(
            value == evalue || (value.is_nan() && evalue.is_nan()),
            "{tag} at {step}: {value} vs {evalue}"
        );
    }
    let args: serde_json::Value = serde_json::from_str(&texts["args/text_summary"]).unwrap();
    assert_eq!(args["beta"], 0.1);
    assert!(texts["model_config/text_summary"].contains("llama"));
    let layout = layout.expect("custom scalars layout");
    assert_eq!(layout.category[0].chart[0].title, "Loss");
    println!("{} scalars read back", scalars.len());
}

#[test]
fn a_directory_that_cannot_be_created_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("runs");
    std::fs::write(&blocker, "a file where the directory should be").unwrap();
    let err = TensorBoardWriter::start(&blocker.join("x"), &info(tmp.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot create the TensorBoard directory") && err.contains("runs/x"),
        "{err}"
    );
}
