//! The records a run writes carry the metric names TRL 1.16 logs (read from
//! `dpo_metrics_v1.json`, where TRL's own training loop wrote them), and the run-level values
//! follow transformers' definitions: the running `num_tokens`, the end-of-run record.

mod common;

use std::collections::BTreeSet;

use common::{series, tiny_config};
use sdpo_train::run_summary::non_embedding_params;
use sdpo_train::{MetricsRecord, SilentObserver, Start, Trainer};
use serde_json::Value;

/// The keys TRL logged in `log` (the step is our record's field, not a metric).
fn trl_keys(log: &Value) -> BTreeSet<String> {
    log.as_object()
        .expect("a log record")
        .keys()
        .filter(|k| *k != "step")
        .cloned()
        .collect()
}

/// A record's keys as transformers logs them: the metrics plus `epoch`.
fn keys(record: &MetricsRecord) -> BTreeSet<String> {
    record
        .values
        .keys()
        .cloned()
        .chain(["epoch".to_string()])
        .collect()
}

#[test]
fn records_carry_trls_names_and_the_run_level_values() {
    let fixture: Value =
        serde_json::from_str(&sdpo_testkit::read_fixture("dpo_metrics_v1.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    config.loss.loss_type = sdpo_core::LossTypes::One(sdpo_core::LossType::Sigmoid);
    config.eval_steps = Some(2.into());
    let device = burn::tensor::Device::flex();
    let mut trainer = Trainer::new(config, &device, Start::Fresh, &mut SilentObserver).unwrap();
    let records = trainer.train(None, &mut SilentObserver).unwrap();

    let is_eval = |r: &&MetricsRecord| r.values.keys().all(|k| k.starts_with("eval_"));
    let is_end = |r: &&MetricsRecord| r.values.contains_key("train_runtime");
    let train: Vec<&MetricsRecord> = records
        .iter()
        .filter(|r| !is_eval(r) && !is_end(r))
        .collect();
    let eval: Vec<&MetricsRecord> = records.iter().filter(is_eval).collect();
    let end: Vec<&MetricsRecord> = records.iter().filter(is_end).collect();
    assert_eq!((train.len(), eval.len(), end.len()), (3, 2, 1));
    for (kind, ours, log) in [
        ("train", &train, "train_log"),
        ("eval", &eval, "eval_log"),
        ("end of run", &end, "end_log"),
    ] {
        for record in ours.iter() {
            assert_eq!(
                keys(record),
                trl_keys(&fixture[log]),
                "{kind} record at step {}: names differ from TRL 1.16's",
                record.step
            );
        }
    }

    // num_tokens: a running total that grows every step; evaluation logs the total so far.
    let tokens = series(&records, "num_tokens");
    assert!(
        tokens.windows(2).all(|w| w[1].1 > w[0].1) && tokens[0].1 > 0.0,
        "{tokens:?}"
    );
    for (step, value) in series(&records, "eval_num_tokens") {
        assert!(tokens.contains(&(step, value)), "eval_num_tokens at {step}");
    }

    // The end-of-run record: transformers' definitions over this call's 3 steps of 4 pairs.
    let end = &end[0].values;
    let losses: Vec<f64> = series(&records, "loss")
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    let mean_loss = losses.iter().sum::<f64>() / losses.len() as f64;
    sdpo_testkit::assert_close(
        &[end["train_loss"]],
        &[mean_loss],
        sdpo_testkit::Tolerance::relative(1e-12),
        "train_loss is the mean step loss",
    );
    let runtime = end["train_runtime"];
    assert!(runtime > 0.0);
    for (key, per_run) in [
        ("train_steps_per_second", 3.0),
        ("train_samples_per_second", 12.0),
    ] {
        sdpo_testkit::assert_close(
            &[end[key]],
            &[per_run / runtime],
            sdpo_testkit::Tolerance::elementwise(1e-3, 1e-3),
            key,
        );
    }
    // 6 × (padded positions) × parameters: a whole number of 6 × parameters.
    let per_position = 6.0 * non_embedding_params(trainer.policy()) as f64;
    let positions = end["total_flos"] / per_position;
    assert!(positions >= 1.0 && positions.fract() == 0.0, "{positions}");
    println!("{} records checked against TRL 1.16's names", records.len());
}
