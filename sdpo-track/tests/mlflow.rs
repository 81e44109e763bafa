//! The MLflow sink against a local fake tracking server (tests/fake_mlflow): what a healthy
//! server receives, and each failure mode: a server that fails for a while, one that is down,
//! one that refuses some requests, one that never answers, and a run to continue that does
//! not exist. Every request goes to 127.0.0.1.

mod fake_mlflow;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use fake_mlflow::{FakeServer, Reply, Request, mlflow_answer};
use sdpo_track::{Artifact, MlflowRun, MlflowSettings, RunInfo, RunStatus};
use serde_json::{Value, json};

const PROXIED: &str = "mlflow-artifacts:/7/r1/artifacts";

fn settings(url: &str, extra: &[(&'static str, &str)]) -> MlflowSettings {
    let mut vars: Vec<(String, String)> = vec![("MLFLOW_TRACKING_URI".into(), url.into())];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env = move |key: &str| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    MlflowSettings::from_env(&env).unwrap().unwrap()
}

/// A run whose configuration has `keys` keys plus a model configuration of two.
fn run_info(keys: usize) -> RunInfo {
    let mut info = RunInfo::new("out");
    info.run_name = Some("sdpo-test".into());
    for i in 0..keys {
        info.config.insert(format!("key_{i:03}"), json!(i));
    }
    info.model_config =
        Some(serde_json::from_str(r#"{"hidden_size": 64, "model_type": "llama"}"#).unwrap());
    info
}

fn record(step: u64) -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("loss".to_string(), 0.5 / step as f64),
        ("rewards/accuracies".to_string(), 0.25 * step as f64),
    ])
}

fn batches(requests: &[Request]) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r.path == "/api/2.0/mlflow/runs/log-batch")
        .map(Request::json)
        .collect()
}

/// `(key, value, step)` of every metric the server received.
fn metrics(requests: &[Request]) -> Vec<(String, f64, i64)> {
    batches(requests)
        .iter()
        .flat_map(|b| b["metrics"].as_array().cloned().unwrap_or_default())
        .map(|m| {
            (
                m["key"].as_str().unwrap().to_string(),
                m["value"].as_f64().unwrap(),
                m["step"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn count(requests: &[Request], field: &str) -> usize {
    batches(requests)
        .iter()
        .map(|b| b[field].as_array().map_or(0, Vec::len))
        .sum()
}

#[test]
fn a_healthy_server_receives_the_run_its_parameters_metrics_artifacts_and_end() {
    let server = FakeServer::start(Box::new(|r, _| mlflow_answer(r, PROXIED)));
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("config.json");
    std::fs::write(&model, b"{\"model_type\": \"llama\"}").unwrap();
    let report = dir.path().join("report.html");
    std::fs::write(&report, "<html>report</html>").unwrap();
    let run = MlflowRun::start(
        settings(
            &server.url,
            &[
                ("MLFLOW_EXPERIMENT_NAME", "sdpo runs"),
                ("MLFLOW_TRACKING_TOKEN", "secret"),
            ],
        ),
        &run_info(150),
    )
    .unwrap();
    for step in 1..=3 {
        run.log(step, step as f64 / 3.0, &record(step));
    }
    let delivery = run.finish(
        RunStatus::Finished,
        vec![
            Artifact {
                local: model.clone(),
                path: "model/config.json".into(),
            },
            Artifact {
                local: report.clone(),
                path: "report.html".into(),
            },
        ],
    );
    assert_eq!(delivery.warning(), None, "{delivery:?}");
    assert_eq!(
        delivery.run_url().unwrap(),
        format!("{}/#/experiments/7/runs/r1", server.url)
    );
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.header("Authorization") == Some("Bearer secret"))
    );
    // The experiment is looked up by name, then created.
    assert_eq!(requests[0].query, "experiment_name=sdpo%20runs");
    assert_eq!(requests[1].json()["name"], "sdpo runs");
    let create = &requests[2].json();
    assert_eq!(
        (
            create["experiment_id"].as_str(),
            create["run_name"].as_str()
        ),
        (Some("7"), Some("sdpo-test"))
    );
    // 152 parameters (150 keys + 2 of the model) in batches of at most 100.
    assert_eq!(count(&requests, "params"), 152);
    assert!(
        batches(&requests)
            .iter()
            .all(|b| b["params"].as_array().unwrap().len() <= 100)
    );
    // Every value of every log, with `epoch`, at its step.
    let got = metrics(&requests);
    assert_eq!(got.len(), 9);
    for step in 1..=3u64 {
        for (key, value) in record(step)
            .into_iter()
            .chain([("epoch".to_string(), step as f64 / 3.0)])
        {
            assert!(
                got.contains(&(key.clone(), value, step as i64)),
                "{key} at {step} missing from {got:?}"
            );
        }
    }
    // Artifacts through the proxy, byte for byte; then the end.
    let puts: Vec<&Request> = requests.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 2);
    assert_eq!(
        puts[0].path,
        "/api/2.0/mlflow-artifacts/artifacts/7/r1/artifacts/model/config.json"
    );
    assert_eq!(puts[0].body, std::fs::read(&model).unwrap());
    assert_eq!(
        puts[1].path,
        "/api/2.0/mlflow-artifacts/artifacts/7/r1/artifacts/report.html"
    );
    let last = requests.last().unwrap();
    assert_eq!(last.path, "/api/2.0/mlflow/runs/update");
    assert_eq!(last.json()["status"], "FINISHED");
    println!("healthy server: {} requests checked", requests.len());
}

#[test]
fn a_server_that_fails_for_a_while_gets_everything_once_it_recovers() {
    // The first three requests fail as an overloaded or restarting server fails.
    let server = FakeServer::start(Box::new(|r, n| match n {
        0 => Reply::Json(503, json!({"error_code": "TEMPORARILY_UNAVAILABLE"})),
        1 => Reply::Close,
        2 => Reply::Json(429, json!({"error_code": "REQUEST_LIMIT_EXCEEDED"})),
        _ => mlflow_answer(r, PROXIED),
    }));
    let run = MlflowRun::start(settings(&server.url, &[]), &run_info(3)).unwrap();
    for step in 1..=4 {
        run.log(step, 0.0, &record(step));
    }
    // Let the background thread meet the failures while "training" goes on.
    std::thread::sleep(Duration::from_millis(1500));
    let delivery = run.finish(RunStatus::Finished, Vec::new());
    assert_eq!(delivery.warning(), None, "{delivery:?}");
    let requests = server.requests();
    assert_eq!(metrics(&requests).len(), 12);
    assert_eq!(count(&requests, "params"), 5);
    assert_eq!(
        requests.last().unwrap().json()["status"],
        "FINISHED",
        "the run's end comes last"
    );
}

#[test]
fn a_stopped_server_costs_training_nothing_and_ends_with_one_warning() {
    // A port that nothing listens on.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let run = MlflowRun::start(settings(&url, &[]), &run_info(3)).unwrap();
    for step in 1..=5 {
        run.log(step, 0.0, &record(step));
    }
    let delivery = run.finish(
        RunStatus::Finished,
        vec![Artifact {
            local: "missing".into(),
            path: "report.html".into(),
        }],
    );
    assert_eq!(delivery.run, None);
    assert_eq!(
        (
            delivery.metrics,
            delivery.params,
            delivery.artifacts,
            delivery.end
        ),
        (15, 5, 1, true)
    );
    let warning = delivery.warning().expect("a warning");
    assert!(
        warning.starts_with(&format!(
            "warning: MLflow at {url}: the run was never created, so nothing reached it \
             (15 metric values (steps 1-5), 5 parameters, 2 tags, 1 artifact, the run's end)"
        )),
        "{warning}"
    );
    assert!(warning.to_lowercase().contains("refused"), "{warning}");
    assert_eq!(warning.lines().count(), 1);
}

#[test]
fn refused_requests_are_dropped_and_named_while_the_rest_arrives() {
    let server = FakeServer::start(Box::new(|r, _| {
        let body = r.json();
        if r.path.ends_with("log-batch") && !body["params"].as_array().unwrap().is_empty() {
            return Reply::Json(
                400,
                json!({"error_code": "INVALID_PARAMETER_VALUE",
                       "message": "Changing param values is not allowed"}),
            );
        }
        // A server that stores artifacts in a bucket it does not serve.
        mlflow_answer(r, "s3://bucket/7/r1/artifacts")
    }));
    let run = MlflowRun::start(settings(&server.url, &[]), &run_info(120)).unwrap();
    run.log(1, 1.0, &record(1));
    let delivery = run.finish(
        RunStatus::Failed,
        vec![Artifact {
            local: "x".into(),
            path: "report.html".into(),
        }],
    );
    assert_eq!(
        (
            delivery.metrics,
            delivery.params,
            delivery.artifacts,
            delivery.end
        ),
        (0, 122, 1, false)
    );
    let warning = delivery.warning().unwrap();
    assert!(
        warning.contains("not delivered: 122 parameters, 1 artifact")
            && warning.contains("INVALID_PARAMETER_VALUE: Changing param values is not allowed")
            && warning.contains("s3://bucket/7/r1/artifacts")
            && warning.contains("--serve-artifacts"),
        "{warning}"
    );
    let requests = server.requests();
    assert_eq!(metrics(&requests).len(), 3);
    assert_eq!(requests.last().unwrap().json()["status"], "FAILED");
}

#[test]
fn logging_never_waits_for_a_server_that_does_not_answer() {
    let server = FakeServer::start(Box::new(|_, _| Reply::Hang));
    let run = MlflowRun::start(
        settings(
            &server.url,
            &[
                ("MLFLOW_HTTP_REQUEST_TIMEOUT", "0.5"),
                ("SDPO_MLFLOW_FINISH_TIMEOUT", "1"),
            ],
        ),
        &run_info(3),
    )
    .unwrap();
    // 200 logs from a "training" thread while the server holds its first request open.
    let (done_tx, done_rx) = mpsc::channel();
    let logger = std::thread::spawn(move || {
        for step in 1..=200 {
            run.log(step, 0.0, &record(step));
        }
        done_tx.send(()).unwrap();
        run
    });
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("log() returned while the server was silent");
    let run = logger.join().unwrap();
    let delivery = run.finish(RunStatus::Finished, Vec::new());
    server.release();
    assert_eq!(delivery.metrics, 600);
    assert!(delivery.end);
    let warning = delivery.warning().unwrap();
    assert!(
        warning.contains("600 metric values (steps 1-200)"),
        "{warning}"
    );
}

#[test]
fn continuing_a_run_that_does_not_exist_is_named() {
    let server = FakeServer::start(Box::new(|r, _| {
        if r.path.ends_with("runs/get") {
            return Reply::Json(
                404,
                json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'nope' not found"}),
            );
        }
        mlflow_answer(r, PROXIED)
    }));
    let run = MlflowRun::start(
        settings(&server.url, &[("MLFLOW_RUN_ID", "nope")]),
        &run_info(1),
    )
    .unwrap();
    run.log(1, 0.0, &record(1));
    std::thread::sleep(Duration::from_millis(200));
    run.log(2, 0.0, &record(2));
    let delivery = run.finish(RunStatus::Finished, Vec::new());
    assert_eq!(delivery.metrics, 6);
    let warning = delivery.warning().unwrap();
    assert!(
        warning.contains("the run could not be created: mlflow/runs/get: HTTP 404 RESOURCE_DOES_NOT_EXIST: Run 'nope' not found"),
        "{warning}"
    );
    // Nothing is sent after the refusal.
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn continuing_an_existing_run_reopens_it() {
    let server = FakeServer::start(Box::new(|r, _| mlflow_answer(r, PROXIED)));
    let run = MlflowRun::start(
        settings(
            &server.url,
            &[
                ("MLFLOW_RUN_ID", "r1"),
                ("MLFLOW_TRACKING_USERNAME", "u"),
                ("MLFLOW_TRACKING_PASSWORD", "p"),
            ],
        ),
        &run_info(1),
    )
    .unwrap();
    run.log(5, 1.0, &record(5));
    let delivery = run.finish(RunStatus::Finished, Vec::new());
    assert_eq!(delivery.warning(), None);
    let requests = server.requests();
    assert_eq!(requests[0].path, "/api/2.0/mlflow/runs/get");
    assert_eq!(requests[0].query, "run_id=r1");
    assert_eq!(requests[1].json()["status"], "RUNNING");
    // "u:p" in base64.
    assert_eq!(requests[0].header("Authorization"), Some("Basic dTpw"));
    assert!(metrics(&requests).contains(&("loss".to_string(), 0.1, 5)));
}
