//! Learning-rate schedules against transformers 5.24's `get_scheduler`, step by step
//! (`fixtures/trl/schedules.json`, written by `tools/make_trl_fixtures.py`): every case's
//! warm-up (steps or a ratio of the run) and learning rate at every optimizer step, the
//! `lr_scheduler_kwargs` transformers refuses, and logging/eval/save steps given as ratios.

use sdpo_testkit::{Tolerance, assert_close, read_fixture};
use sdpo_train::LrSchedulerType;
use sdpo_train::schedule::{LrSchedule, ScheduleParams};
use sdpo_train::steps::{Every, IntervalStrategy, RunIntervals, SaveStrategy, StepSettings, Steps};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(&read_fixture("trl/schedules.json")).expect("schedules.json is JSON")
}

fn kind(case: &Value) -> LrSchedulerType {
    serde_json::from_value(case["lr_scheduler_type"].clone()).expect("a schedule name")
}

fn steps(value: &Value) -> Steps {
    serde_json::from_value(value.clone()).expect("steps or a ratio")
}

#[test]
fn every_schedule_matches_transformers_step_by_step() {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    let mut checked_steps = 0;
    for case in cases {
        let total = case["total_steps"].as_u64().unwrap() as usize;
        let lr = case["learning_rate"].as_f64().unwrap();
        let what = format!(
            "{} {} warmup {} total {total}",
            case["lr_scheduler_type"], case["lr_scheduler_kwargs"], case["warmup_steps"]
        );
        let warmup = steps(&case["warmup_steps"]).resolve(total);
        assert_eq!(
            warmup as u64,
            case["resolved_warmup_steps"].as_u64().unwrap(),
            "{what}: warm-up steps"
        );
        let params =
            ScheduleParams::from_kwargs(kind(case), lr, case["lr_scheduler_kwargs"].as_object())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        let schedule = LrSchedule::with_params(kind(case), lr, warmup, total, params);
        let ours: Vec<f64> = (0..total).map(|step| schedule.lr(step)).collect();
        let expected: Vec<f64> = case["lrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_close(
            &ours,
            &expected,
            Tolerance::elementwise(1e-18, 1e-12),
            &what,
        );
        checked_steps += total;
    }
    println!(
        "{} schedule cases, {checked_steps} optimizer steps match transformers",
        cases.len()
    );
}

#[test]
fn schedule_options_transformers_refuses_are_refused() {
    let fixture = fixture();
    let refused = fixture["refused"].as_array().expect("refused");
    assert!(!refused.is_empty());
    for case in refused {
        let result = ScheduleParams::from_kwargs(
            kind(case),
            case["learning_rate"].as_f64().unwrap(),
            case["lr_scheduler_kwargs"].as_object(),
        );
        assert!(
            result.is_err(),
            "{} {} is accepted; transformers says: {}",
            case["lr_scheduler_type"],
            case["lr_scheduler_kwargs"],
            case["python_error"]
        );
    }
    println!("{} refused schedule options checked", refused.len());
}

#[test]
fn logging_eval_and_save_ratios_resolve_as_transformers() {
    let fixture = fixture();
    let cases = fixture["intervals"].as_array().expect("intervals");
    assert!(!cases.is_empty());
    for case in cases {
        let total = case["max_steps"].as_u64().unwrap() as usize;
        let eval = (!case["eval_steps"].is_null()).then(|| steps(&case["eval_steps"]));
        let settings = StepSettings {
            logging_strategy: IntervalStrategy::Steps,
            logging_steps: steps(&case["logging_steps"]),
            logging_first_step: false,
            eval_strategy: Some(IntervalStrategy::Steps),
            eval_steps: eval,
            eval_delay: 0.0,
            save_strategy: SaveStrategy::Steps,
            save_steps: steps(&case["save_steps"]),
        };
        let resolved = RunIntervals::resolve(&settings, total);
        let expected = &case["resolved"];
        let expect = |key: &str| Every::Steps(expected[key].as_u64().unwrap() as usize);
        assert_eq!(resolved.logging, expect("logging_steps"), "{case}");
        assert_eq!(resolved.eval, expect("eval_steps"), "{case}");
        assert_eq!(resolved.save, expect("save_steps"), "{case}");
    }
    println!("{} interval cases checked", cases.len());
}
