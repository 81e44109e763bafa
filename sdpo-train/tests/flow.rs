//! When a run logs, evaluates and saves, which checkpoints `save_total_limit` leaves, the best
//! checkpoint and `load_best_model_at_end`, against transformers 5.24's real training loop
//! (`fixtures/trl/flow.json`, written by `tools/make_trl_flow_fixture.py`: the `Trainer` of
//! transformers run on a one-layer model with scripted evaluation metrics). Each case is replayed
//! through the same decisions the trainer makes ([`RunIntervals`], [`BestState`],
//! [`best::rotate`], [`best::keep_only`]) on a directory of real `checkpoint-N` folders, and the
//! combinations transformers refuses are refused by the configuration's check.

use std::collections::BTreeMap;
use std::path::Path;

use sdpo_testkit::read_fixture;
use sdpo_train::best::{self, BestMetric, BestState};
use sdpo_train::checkpoint::{TRAINER_STATE_FILE, list_checkpoints};
use sdpo_train::steps::RunIntervals;
use sdpo_train::{MetricsRecord, SaveStrategy, TrainConfig};
use serde_json::{Map, Value};

fn fixture() -> Value {
    serde_json::from_str(&read_fixture("trl/flow.json")).expect("flow.json is JSON")
}

/// A number of the fixture, where NaN and the infinities are written as the strings "NaN",
/// "Infinity" and "-Infinity".
fn number(value: &Value) -> f64 {
    match value {
        Value::String(s) if s == "NaN" => f64::NAN,
        Value::String(s) if s == "Infinity" => f64::INFINITY,
        Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
        other => other
            .as_f64()
            .unwrap_or_else(|| panic!("a number: {other}")),
    }
}

fn steps(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("a list of steps: {value}"))
        .iter()
        .map(|s| s.as_u64().expect("a step") as usize)
        .collect()
}

/// The case's TrainingArguments as a configuration (the keys are the same names), with the
/// paths a configuration needs to validate.
fn config(args: &Map<String, Value>, max_steps: usize) -> Result<TrainConfig, String> {
    let mut map = args.clone();
    map.insert("max_steps".into(), max_steps.into());
    map.insert("model_name_or_path".into(), "model".into());
    map.insert("train_file".into(), "train.jsonl".into());
    // transformers' `eval_strategy` defaults to "no"; sdpo-rs' unset means "when there is
    // eval data", so the case's value (or transformers' default) is given explicitly.
    map.entry("eval_strategy").or_insert("no".into());
    // Keys of the harness, not of the loop.
    for key in [
        "output_dir",
        "report_to",
        "use_cpu",
        "per_device_train_batch_size",
    ] {
        map.remove(key);
    }
    let config: TrainConfig =
        serde_json::from_value(Value::Object(map)).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// What the loop did in one case.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    logged: Vec<usize>,
    evaluated: Vec<usize>,
    saved: Vec<usize>,
    remaining: Vec<usize>,
    best: BestState,
    loaded: Option<String>,
}

fn replay(config: &TrainConfig, spe: usize, metrics: &[Value], out: &Path) -> Outcome {
    let total = config.max_steps as usize;
    let intervals = RunIntervals::resolve(&config.step_settings(), total);
    let metric = BestMetric::for_run(config);
    let mut scripted = metrics.iter();
    let mut next_record = |step: usize| -> MetricsRecord {
        let values: BTreeMap<String, f64> = scripted
            .next()
            .unwrap_or_else(|| panic!("no scripted evaluation left at step {step}"))
            .as_object()
            .expect("a metrics dict")
            .iter()
            .map(|(k, v)| (k.clone(), number(v)))
            .collect();
        MetricsRecord {
            step,
            epoch: step as f64 / spe as f64,
            values,
        }
    };
    let mut outcome = Outcome::default();
    if config.eval_on_start {
        next_record(0);
        outcome.evaluated.push(0);
    }
    for step in 1..=total {
        let epoch = step as f64 / spe as f64;
        let mut passes = vec![intervals.at_step_end(step, total)];
        if step.is_multiple_of(spe) || step == total {
            passes.push(intervals.at_epoch_end(epoch));
        }
        for actions in passes {
            if actions.log && outcome.logged.last() != Some(&step) {
                outcome.logged.push(step);
            }
            let mut save = actions.save;
            if actions.evaluate {
                let record = next_record(step);
                outcome.evaluated.push(step);
                if let Some(metric) = &metric {
                    let saves = config.save_strategy != SaveStrategy::No;
                    let new_best = outcome
                        .best
                        .observe(metric, &record, saves)
                        .expect("the metric is reported");
                    if intervals.save_best {
                        save = new_best;
                    }
                }
            }
            if save {
                outcome.best.after_save(out, step);
                let dir = out.join(format!("checkpoint-{step}"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(TRAINER_STATE_FILE), "{}").unwrap();
                let best_dir = outcome.best.best_model_checkpoint.clone();
                best::rotate(out, config.save_total_limit, best_dir.as_deref()).unwrap();
                outcome.saved.push(step);
            }
        }
    }
    if let Some(dir) = outcome.best.best_model_checkpoint.clone() {
        if config.load_best_model_at_end {
            outcome.loaded = Some(name(&dir));
        }
        if config.save_total_limit == Some(1) {
            best::keep_only(out, &dir).unwrap();
        }
    }
    outcome.remaining = list_checkpoints(out)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    outcome
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// The same number (infinities included: transformers' best metric starts at the worst
/// infinity, and stays there when no evaluation was better, e.g. all NaN).
fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x == y || (x.is_nan() && y.is_nan()),
        (None, None) => true,
        _ => false,
    }
}

#[test]
fn every_case_logs_evaluates_saves_and_keeps_as_transformers() {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    for case in cases {
        let name_ = case["name"].as_str().expect("a case name");
        let total = case["max_steps"].as_u64().unwrap() as usize;
        let spe = case["steps_per_epoch"].as_u64().unwrap() as usize;
        let args = case["args"].as_object().expect("args");
        let config = config(args, total).unwrap_or_else(|e| panic!("{name_}: refused: {e}"));
        let tmp = tempfile::tempdir().unwrap();
        let metrics = case["eval_metrics"].as_array().expect("eval_metrics");
        let ours = replay(&config, spe, metrics, tmp.path());
        assert_eq!(ours.logged, steps(&case["logged_steps"]), "{name_}: logged");
        assert_eq!(
            ours.evaluated,
            steps(&case["eval_steps_run"]),
            "{name_}: evaluated"
        );
        assert_eq!(ours.saved, steps(&case["saved_steps"]), "{name_}: saved");
        assert_eq!(
            ours.remaining,
            steps(&case["remaining_checkpoints"]),
            "{name_}: checkpoints left"
        );
        let expected_best = (!case["best_metric"].is_null()).then(|| number(&case["best_metric"]));
        assert!(
            same(ours.best.best_metric, expected_best),
            "{name_}: best_metric {:?} vs {expected_best:?}",
            ours.best.best_metric
        );
        let expected_step = case["best_global_step"].as_u64().map(|s| s as usize);
        assert_eq!(
            ours.best.best_global_step.filter(|&s| s > 0),
            expected_step.filter(|&s| s > 0),
            "{name_}: best_global_step"
        );
        assert_eq!(
            ours.best.best_model_checkpoint.as_deref().map(name),
            case["best_model_checkpoint"].as_str().map(str::to_string),
            "{name_}: best_model_checkpoint"
        );
        assert_eq!(
            ours.loaded,
            case["loaded_best"].as_str().map(str::to_string),
            "{name_}: loaded at the end"
        );
    }
    println!("{} flow cases match transformers", cases.len());
}

#[test]
fn combinations_transformers_refuses_are_refused() {
    let fixture = fixture();
    let refused = fixture["refused"].as_array().expect("refused");
    assert!(!refused.is_empty());
    for case in refused {
        let args = case["args"].as_object().expect("args");
        let max_steps = args.get("max_steps").and_then(Value::as_u64).unwrap_or(10) as usize;
        assert!(
            config(args, max_steps).is_err(),
            "{args:?} is accepted; transformers says: {}",
            case["python_error"]
        );
    }
    println!("{} refused combinations checked", refused.len());
}
