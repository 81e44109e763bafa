//! `report_to` through the `sdpo` binary: TensorBoard receives every record of metrics.jsonl,
//! integrations that cannot run stop the command before any data or model is loaded, an MLflow
//! server that is down costs one warning and nothing else, and two runs compare in one page.
//! (CI runs the same against TensorBoard's reader and a real MLflow server: ci/tracking.sh.)

use std::path::Path;

mod common;
use common::{sdpo, text, write_tiny_run};
use sdpo_track::tensorboard::proto::{event, summary};

fn write_run(root: &Path, settings: &str) -> String {
    let path = write_tiny_run(
        root,
        1,
        8,
        &format!(
            "output_dir = \"out\"\nloss_type = \"sdpo\"\nper_device_train_batch_size = 4\n\
             per_device_eval_batch_size = 4\nmax_steps = 3\nlogging_steps = 1\neval_steps = 2\n\
             save_strategy = \"no\"\nmax_length = 64\n{settings}"
        ),
    );
    path.to_str().unwrap().to_string()
}

#[test]
fn tensorboard_gets_every_record_under_transformers_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_run(
        tmp.path(),
        "report_to = \"tensorboard\"\nlogging_dir = \"tb\"\n",
    );
    let out = sdpo(
        &["train", "--config", &config, "--device", "flex"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tensorboard: writing tb/events.out.tfevents."),
        "{stderr}"
    );
    // Logged lines end with their tokens per second.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("step 1 ") && l.ends_with(" tok/s")),
        "{stderr}"
    );

    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(tmp.path().join("out/metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let mut expected = Vec::new();
    for r in &records {
        for (key, value) in r.as_object().unwrap() {
            if key == "step" {
                continue;
            }
            let tag = sdpo_track::tensorboard::tag_for(key);
            expected.push((
                tag,
                r["step"].as_i64().unwrap(),
                value.as_f64().unwrap() as f32,
            ));
        }
    }
    let files: Vec<_> = std::fs::read_dir(tmp.path().join("tb"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut scalars = Vec::new();
    for e in sdpo_track::read_event_file(&files[0]).unwrap() {
        if let Some(event::What::Summary(s)) = e.what {
            for v in s.value {
                if let Some(summary::value::Value::SimpleValue(x)) = v.value {
                    scalars.push((v.tag, e.step, x));
                }
            }
        }
    }
    expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    scalars.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(scalars, expected);
    for tag in [
        "train/loss",
        "eval/loss",
        "train/entropy",
        "train/train_runtime",
        "train/epoch",
    ] {
        assert!(scalars.iter().any(|s| s.0 == tag), "no {tag}");
    }
    println!("{} scalars equal metrics.jsonl", scalars.len());
}

#[test]
fn integrations_that_cannot_run_stop_before_anything_is_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_run(tmp.path(), "report_to = [\"tensorboard\", \"wandb\"]\n");
    let out = sdpo(&["train", "--config", &config], tmp.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`wandb` is a transformers integration that sdpo-rs does not provide")
            && stderr.contains("supported: \"tensorboard\", \"mlflow\""),
        "{stderr}"
    );
    let config = write_run(tmp.path(), "report_to = \"mlflow\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sdpo"))
        .args(["train", "--config", &config])
        .current_dir(tmp.path())
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("BURN_DEVICE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "error: cannot start experiment tracking: report_to: mlflow is requested but \
             MLFLOW_TRACKING_URI is not set"
        ),
        "{stderr}"
    );
    assert!(!tmp.path().join("out").exists(), "nothing was started");
}

#[test]
fn a_stopped_mlflow_server_costs_one_warning_and_two_runs_compare() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_run(tmp.path(), "report_to = \"mlflow\"\n");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sdpo"))
        .args(["train", "--config", &config, "--device", "flex"])
        .current_dir(tmp.path())
        .env("MLFLOW_TRACKING_URI", &closed)
        .env_remove("BURN_DEVICE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: MLflow"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].starts_with(&format!(
            "warning: MLflow at {closed}: the run was never created, so nothing reached it"
        )),
        "{}",
        warnings[0]
    );
    assert!(tmp.path().join("out/model.safetensors").is_file());

    // A second run, then both in one page.
    let out = sdpo(
        &[
            "train",
            "--config",
            &config,
            "--set",
            "output_dir=\"out2\"",
            "--set",
            "report_to=\"none\"",
            "--set",
            "beta=0.2",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = sdpo(&["report", "out", "out2"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("comparison of 2 runs written to compare.html")
    );
    let html = std::fs::read_to_string(tmp.path().join("compare.html")).unwrap();
    assert!(html.contains("out (train)") && html.contains("out2 (train)"));
    assert!(
        html.contains("<code>beta</code></td><td>0.1</td><td>0.2</td>"),
        "beta differs"
    );
    let out = sdpo(&["report", "out", "out2", "--config", &config], tmp.path());
    assert!(!out.status.success());
}
