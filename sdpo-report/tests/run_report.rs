//! The run report on hand-written run directories: train + eval metrics, a resumed run, a
//! record being written, null/NaN values, a DPO run without `sdpo/*` metrics, configuration and
//! data sources, and hostile input.

use std::fmt::Write as _;
use std::path::Path;

use sdpo_report::{ReportError, RunReport, read_metrics_file, write_run_report};
use tempfile::TempDir;

const SDPO_TRAIN: &[&str] = &[
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "sdpo/chosen_kept_fraction",
    "sdpo/rejected_kept_fraction",
    "sdpo/chosen_threshold",
    "sdpo/rejected_threshold",
];

/// A train record as the trainer writes it (serde_json of `MetricsRecord`).
fn train_line(step: usize, names: &[&str], value: f64) -> String {
    let mut line = format!("{{\"step\":{step},\"epoch\":{}", step as f64 / 10.0);
    for name in names {
        let _ = write!(line, ",\"{name}\":{value}");
    }
    let _ = write!(
        line,
        ",\"learning_rate\":{},\"grad_norm\":{}}}",
        1e-3 / step as f64,
        2.0 + value
    );
    line
}

fn eval_line(step: usize, names: &[&str], value: f64) -> String {
    let mut line = format!("{{\"step\":{step},\"epoch\":{}", step as f64 / 10.0);
    for name in names {
        let _ = write!(line, ",\"eval_{name}\":{value}");
    }
    line.push('}');
    line
}

fn run_dir(metrics: &str) -> TempDir {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("metrics.jsonl"), metrics).unwrap();
    dir
}

fn charts(html: &str) -> usize {
    html.matches("<figure class=\"chart\"").count()
}

fn sdpo_run(steps: usize) -> String {
    let mut text = String::new();
    for step in 1..=steps {
        text += &train_line(step, SDPO_TRAIN, 0.5 + step as f64 * 0.01);
        text.push('\n');
        if step % 5 == 0 {
            text += &eval_line(step, SDPO_TRAIN, 0.4 + step as f64 * 0.01);
            text.push('\n');
        }
    }
    text
}

#[test]
fn train_and_eval_share_the_charts() {
    let dir = run_dir(&sdpo_run(20));
    let report = RunReport::load(dir.path()).unwrap();
    let m = &report.metrics;
    assert_eq!(m.records, 24);
    assert_eq!(m.superseded, 0);
    assert!(!m.partial_last_line);
    assert_eq!(m.get("loss").unwrap().len(), 20);
    assert_eq!(m.get("eval_loss").unwrap().len(), 4);
    assert_eq!(m.last_step(), Some(20));
    let html = report.to_html().unwrap();
    // loss, accuracies, margins, rewards, kept fraction, threshold, lr, grad norm, logps.
    assert_eq!(charts(&html), 9);
    assert!(html.contains("<svg"));
    // Eval joins train on the same axes (dashed), with a legend entry each.
    assert!(html.contains("loss (train)") && html.contains("loss (eval)"));
    assert!(html.contains("chosen (train)") && html.contains("rejected (eval)"));
    assert!(html.contains("SDPO kept fraction"));
    // The only note of a clean run without a saved configuration says so.
    assert!(html.contains("No configuration found"));
    for note in ["null/NaN", "superseded", "incomplete"] {
        assert!(!html.contains(note), "unexpected note: {note}");
    }
    for needle in [
        "<script",
        "<link",
        "@import",
        "<img",
        "src=\"http",
        "href=\"http",
    ] {
        assert!(!html.contains(needle), "page fetches something: {needle}");
    }
}

#[test]
fn a_dpo_run_has_no_sdpo_charts() {
    let dpo: Vec<&str> = SDPO_TRAIN
        .iter()
        .copied()
        .filter(|n| !n.starts_with("sdpo/"))
        .collect();
    let mut text = String::new();
    for step in 1..=6 {
        text += &train_line(step, &dpo, 0.3);
        text.push('\n');
    }
    let dir = run_dir(&text);
    let html = RunReport::load(dir.path()).unwrap().to_html().unwrap();
    assert_eq!(charts(&html), 7);
    assert!(!html.contains("SDPO"));
    assert!(!html.contains("(eval)"));
}

#[test]
fn a_resumed_run_replaces_the_steps_it_logged_again() {
    // Steps 1..=10 (eval at 5 and 10), then a run resumed from checkpoint-6 appends 7..=12.
    let mut text = sdpo_run(10);
    for step in 7..=12 {
        text += &train_line(step, SDPO_TRAIN, 9.0);
        text.push('\n');
    }
    let dir = run_dir(&text);
    let log = read_metrics_file(&dir.path().join("metrics.jsonl")).unwrap();
    // Dropped: train 7..=10 (4) and eval 10 (1).
    assert_eq!(log.superseded, 5);
    let steps: Vec<usize> = log.get("loss").unwrap().iter().map(|p| p.step).collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
    assert!(log.get("loss").unwrap()[6..].iter().all(|p| p.value == 9.0));
    let eval: Vec<usize> = log
        .get("eval_loss")
        .unwrap()
        .iter()
        .map(|p| p.step)
        .collect();
    assert_eq!(eval, vec![5]);
    let html = RunReport::load(dir.path()).unwrap().to_html().unwrap();
    assert!(html.contains("5 records were superseded by a resumed run"));

    // The trainer's own resume truncates the file first: nothing to supersede.
    let text = sdpo_run(6)
        + &sdpo_run(12)
            .lines()
            .skip(7)
            .map(|l| format!("{l}\n"))
            .collect::<String>();
    let dir = run_dir(&text);
    let log = read_metrics_file(&dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(log.superseded, 0);
    assert_eq!(log.get("loss").unwrap().len(), 12);
}

#[test]
fn a_record_being_written_is_left_out() {
    let mut text = sdpo_run(4);
    text += "{\"step\":5,\"epoch\":0.5,\"loss\":0.6";
    let dir = run_dir(&text);
    let report = RunReport::load(dir.path()).unwrap();
    assert!(report.metrics.partial_last_line);
    assert_eq!(report.metrics.last_step(), Some(4));
    let html = report.to_html().unwrap();
    assert!(html.contains("is incomplete (the run is writing it)"));

    // A complete last record without a newline is a record.
    let text = sdpo_run(4) + &train_line(5, SDPO_TRAIN, 0.1);
    let dir = run_dir(&text);
    let report = RunReport::load(dir.path()).unwrap();
    assert!(!report.metrics.partial_last_line);
    assert_eq!(report.metrics.last_step(), Some(5));
}

#[test]
fn null_and_nan_values_are_gaps_and_reported() {
    let mut lines: Vec<String> = sdpo_run(8).lines().map(str::to_string).collect();
    // serde_json writes non-finite numbers as null; Python's json writes NaN.
    lines[2] = lines[2].replace("\"loss\":0.53", "\"loss\":null");
    lines[3] = lines[3].replace("\"loss\":0.54", "\"loss\":NaN");
    // A metric that never has a value.
    for line in lines.iter_mut() {
        if !line.contains("eval_") {
            line.insert_str(line.len() - 1, ",\"logits/chosen\":null");
        }
    }
    let dir = run_dir(&(lines.join("\n") + "\n"));
    let report = RunReport::load(dir.path()).unwrap();
    let loss = report.metrics.get("loss").unwrap();
    assert!(loss[2].value.is_nan() && loss[3].value.is_nan());
    assert_eq!(loss.iter().filter(|p| p.value.is_finite()).count(), 6);
    let html = report.to_html().unwrap();
    assert!(
        html.contains(
            "<code>loss</code>: 2 of 8 values are null/NaN (shown as gaps), at steps 3, 4."
        ),
        "{html}"
    );
    assert!(html.contains("<code>logits/chosen</code>: 8 of 8 values are null/NaN"));
    // The loss chart is still drawn; the all-null metric has no chart.
    assert_eq!(charts(&html), 9);
    assert!(!html.contains("data-metrics=\"logits/chosen\""));
}

#[test]
fn configuration_comes_from_the_newest_checkpoint_or_run_config() {
    let dir = run_dir(&sdpo_run(10));
    let data = dir.path().join("train.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\":\"a\",\"chosen\":\"b\",\"rejected\":\"c\"}\n\
         {\"prompt\":\"a\",\"chosen\":\"b\"}\n\
         {\"prompt\":\"d\",\"chosen\":\"e\",\"rejected\":\"f\"}\n",
    )
    .unwrap();
    for (step, beta) in [(4, 0.5), (8, 0.25)] {
        let ckpt = dir.path().join(format!("checkpoint-{step}"));
        std::fs::create_dir(&ckpt).unwrap();
        let state = serde_json::json!({
            "global_step": step, "epoch": 0.8, "max_steps": 30,
            "config": {"loss_type": "sdpo", "beta": beta, "train_file": data, "sdpo_threshold": 0.6}
        });
        std::fs::write(ckpt.join("trainer_state.json"), state.to_string()).unwrap();
    }
    // A directory without trainer_state.json is not a checkpoint.
    std::fs::create_dir(dir.path().join("checkpoint-99")).unwrap();
    let report = RunReport::load(dir.path()).unwrap();
    let ckpt = report.checkpoint.as_ref().unwrap();
    assert_eq!(
        (ckpt.global_step, ckpt.max_steps, ckpt.count),
        (8, Some(30), 2)
    );
    let config = report.config.as_ref().unwrap();
    assert!(config.source.ends_with("checkpoint-8/trainer_state.json"));
    let html = report.to_html().unwrap();
    assert!(html.contains("step 10 of 30"));
    assert!(html.contains("<tr><td>beta</td><td>0.25</td></tr>"));
    // The data summary read the configured file: 3 records, 2 pairs, 1 invalid.
    let data = report.data.as_ref().unwrap();
    assert_eq!(data.splits.len(), 1);
    let train = &data.splits[0];
    assert_eq!(
        (train.records_read, train.pairs, train.skipped_invalid),
        (3, 2, 1)
    );
    assert_eq!(train.dropped_truncated, None);
    assert!(train.reasons[0].contains("line 2"), "{:?}", train.reasons);

    // run_config.json and data_summary.json win.
    std::fs::write(
        dir.path().join("run_config.json"),
        serde_json::json!({"loss_type": "sigmoid", "beta": 0.125}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("data_summary.json"),
        serde_json::json!({"source": "tokenized by the trainer", "splits": [{
            "split": "train", "file": "t.jsonl", "records_read": 100, "pairs": 97,
            "skipped_invalid": 2, "dropped_truncated": 1, "prompts_truncated": 5,
            "pairs_over_max_length": 7, "reasons": ["t.jsonl line 9: no `rejected`"]}]})
        .to_string(),
    )
    .unwrap();
    let html = RunReport::load(dir.path()).unwrap().to_html().unwrap();
    assert!(html.contains("<tr><td>beta</td><td>0.125</td></tr>"));
    assert!(html.contains("tokenized by the trainer"));
    assert!(html.contains("t.jsonl line 9: no `rejected`"));
}

#[test]
fn write_run_report_writes_one_file_and_replaces_it() {
    let dir = run_dir(&sdpo_run(5));
    let out = dir.path().join("report.html");
    write_run_report(dir.path(), &out).unwrap();
    let first = std::fs::read_to_string(&out).unwrap();
    assert!(first.starts_with("<!DOCTYPE html>"));
    assert!(first.contains("step 5"));
    std::fs::write(dir.path().join("metrics.jsonl"), sdpo_run(10)).unwrap();
    write_run_report(dir.path(), &out).unwrap();
    let second = std::fs::read_to_string(&out).unwrap();
    assert!(second.contains("step 10"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn load_err(dir: &Path) -> ReportError {
    RunReport::load(dir).unwrap_err()
}

#[test]
fn hostile_input_gets_clear_errors() {
    let missing = Path::new("/nonexistent/sdpo-run");
    let err = load_err(missing);
    assert!(matches!(err, ReportError::NoRunDir { .. }));
    assert_eq!(
        err.to_string(),
        "run directory `/nonexistent/sdpo-run` does not exist or is not a directory"
    );

    let empty_dir = TempDir::new().unwrap();
    let err = load_err(empty_dir.path());
    assert!(matches!(err, ReportError::NoMetrics { .. }), "{err}");
    assert!(err.to_string().contains("metrics.jsonl"));

    for text in ["", "\n\n  \n"] {
        let dir = run_dir(text);
        let err = load_err(dir.path());
        assert!(matches!(err, ReportError::EmptyMetrics { .. }), "{err}");
        assert!(err.to_string().contains("has no records"));
    }

    let cases: [(String, usize, &str); 5] = [
        (
            format!(
                "{}\nnot json at all\n{}\n",
                train_line(1, &["loss"], 0.1),
                train_line(2, &["loss"], 0.1)
            ),
            2,
            "not a JSON object",
        ),
        (
            format!("{}\ngarbage\n", train_line(1, &["loss"], 0.1)),
            2,
            "not a JSON object",
        ),
        (
            "{\"epoch\":0.1,\"loss\":0.5}\n".to_string(),
            1,
            "no `step` field",
        ),
        (
            "{\"step\":-3,\"loss\":0.5}\n".to_string(),
            1,
            "`step` must be a non-negative integer",
        ),
        (
            "{\"step\":1,\"loss\":\"low\"}\n".to_string(),
            1,
            "metric `loss` must be a number or null",
        ),
    ];
    for (text, line, reason) in cases {
        let dir = run_dir(&text);
        match load_err(dir.path()) {
            ReportError::BadMetricsLine {
                line: l,
                reason: r,
                path,
            } => {
                assert_eq!(l, line, "{text}");
                assert!(r.contains(reason), "{r}");
                assert!(path.ends_with("metrics.jsonl"));
            }
            other => panic!("unexpected error {other}"),
        }
    }

    // Only a partial record: nothing logged yet.
    let dir = run_dir("{\"step\":1,\"lo");
    assert!(matches!(
        load_err(dir.path()),
        ReportError::EmptyMetrics { .. }
    ));

    // A broken trainer_state.json is named.
    let dir = run_dir(&sdpo_run(2));
    let ckpt = dir.path().join("checkpoint-2");
    std::fs::create_dir(&ckpt).unwrap();
    std::fs::write(ckpt.join("trainer_state.json"), "{ not json").unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(
            err,
            ReportError::Malformed {
                what: "trainer state",
                ..
            }
        ),
        "{err}"
    );

    // A data file named in the configuration that is missing is reported, not fatal.
    let dir = run_dir(&sdpo_run(2));
    std::fs::write(
        dir.path().join("run_config.json"),
        serde_json::json!({"train_file": "/nonexistent/train.jsonl"}).to_string(),
    )
    .unwrap();
    let report = RunReport::load(dir.path()).unwrap();
    assert_eq!(report.data.as_ref().unwrap().unreadable.len(), 1);
    let html = report.to_html().unwrap();
    assert!(html.contains("/nonexistent/train.jsonl"));
}

#[test]
fn the_end_of_run_record_is_a_number_table_not_a_chart() {
    // transformers' end-of-run record follows the last train and eval records at the same
    // step; it must not replace them, and its values are shown as numbers.
    let mut text = sdpo_run(10);
    text += "{\"step\":10,\"epoch\":1.0,\"total_flos\":12345.0,\"train_loss\":0.55,\
             \"train_runtime\":3.2109,\"train_samples_per_second\":31.2,\
             \"train_steps_per_second\":3.114}\n";
    let dir = run_dir(&text);
    let log = read_metrics_file(&dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(log.superseded, 0);
    assert_eq!(log.get("loss").unwrap().len(), 10);
    assert_eq!(log.get("eval_loss").unwrap().len(), 2);
    let html = RunReport::load(dir.path()).unwrap().to_html().unwrap();
    assert_eq!(charts(&html), 9, "no chart for the end-of-run values");
    assert!(html.contains("Speed and totals"));
    assert!(html.contains("<code>train_runtime</code></td><td class=\"num\">3.2109</td>"));
}
