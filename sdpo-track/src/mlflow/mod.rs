//! An MLflow run through the tracking server's REST API, as transformers' `MLflowCallback`
//! fills it: the run in `MLFLOW_EXPERIMENT_NAME` named `run_name`, the configuration (and the
//! model's `config.json`) as parameters, every logged metric at its global step (keys as
//! logged: `loss`, `eval_loss`, `rewards/accuracies`, ..., plus `epoch`), and at the end the
//! final model and the run report as artifacts.
//!
//! Nothing here blocks training: [`MlflowRun::log`] hands the values to a background thread
//! ([`worker`]) that delivers and retries them. [`MlflowRun::finish`] waits for that thread
//! (bounded by `SDPO_MLFLOW_FINISH_TIMEOUT`) and returns a [`DeliveryReport`] whose
//! [`DeliveryReport::warning`] is the one line to show when something did not arrive.

mod client;
mod report;
pub mod settings;
mod worker;

use std::collections::BTreeMap;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use serde_json::{Map, Value};

use crate::error::TrackError;
use crate::run::{Artifact, RunInfo, RunStatus};
use client::{MetricValue, RestClient};
pub use report::DeliveryReport;
pub use settings::MlflowSettings;
use worker::{Message, Opening, Worker};

/// MLflow's longest parameter value (`MAX_PARAM_VAL_LENGTH`); transformers drops longer ones.
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;

/// A metric key as transformers' `MLflowCallback` sanitises it: characters MLflow refuses
/// become `_`.
pub fn metric_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-. :/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A parameter value as text: strings as they are, `None` for unset, other values as JSON.
fn param_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// `map` with nested objects flattened into `a.b` keys (`MLFLOW_FLATTEN_PARAMS`).
fn flatten(map: &Map<String, Value>, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (key, value) in map {
        let key = format!("{prefix}{key}");
        match value {
            Value::Object(inner) => flatten(inner, &format!("{key}."), out),
            other => out.push((key, other.clone())),
        }
    }
}

/// The run's parameters: the model's configuration, then the run's (which wins on a shared
/// key), flattened on request, values that MLflow would refuse as too long left out (and
/// returned by name), at most `MLFLOW_MAX_LOG_PARAMS`.
fn parameters(info: &RunInfo, settings: &MlflowSettings) -> (Vec<(String, String)>, Vec<String>) {
    let mut merged: BTreeMap<String, Value> = BTreeMap::new();
    for map in info.model_config.iter().chain([&info.config]) {
        let mut entries = Vec::new();
        if settings.flatten_params {
            flatten(map, "", &mut entries);
        } else {
            entries.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        merged.extend(entries);
    }
    let mut params = Vec::new();
    let mut too_long = Vec::new();
    for (key, value) in merged {
        let text = param_text(&value);
        if text.chars().count() > MAX_PARAM_VALUE_LENGTH {
            too_long.push(key);
        } else {
            params.push((key, text));
        }
    }
    if let Some(limit) = settings.max_log_params {
        params.truncate(limit);
    }
    (params, too_long)
}

/// A run being logged to an MLflow server.
pub struct MlflowRun {
    server: String,
    log_artifacts: bool,
    tx: Option<Sender<Message>>,
    worker: Option<JoinHandle<DeliveryReport>>,
}

impl std::fmt::Debug for MlflowRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowRun")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl MlflowRun {
    /// Starts the background delivery of the run to `settings.tracking_uri`. No request is made
    /// on this thread: a server that is down shows up in the final [`DeliveryReport`].
    ///
    /// # Errors
    /// [`TrackError::Io`] when the background thread cannot be started.
    pub fn start(settings: MlflowSettings, info: &RunInfo) -> Result<Self, TrackError> {
        let (params, too_long) = parameters(info, &settings);
        let mut tags = vec![
            ("mlflow.source.name".to_string(), "sdpo".to_string()),
            ("mlflow.source.type".to_string(), "LOCAL".to_string()),
        ];
        tags.extend(settings.tags.iter().cloned());
        let opening = Opening {
            run_name: info.run_name.clone(),
            tags,
            params,
            start_time: now_ms(),
        };
        let server = settings.tracking_uri.clone();
        let log_artifacts = settings.log_artifacts;
        let client = RestClient::new(&settings);
        let mut worker = Worker::new(client, settings, opening);
        if !too_long.is_empty() {
            worker.refuse_params(
                too_long.len(),
                format!(
                    "parameters longer than MLflow's {MAX_PARAM_VALUE_LENGTH} characters left out: {}",
                    too_long.join(", ")
                ),
            );
        }
        let (tx, rx) = channel();
        let handle = std::thread::Builder::new()
            .name("sdpo-mlflow".into())
            .spawn(move || worker.run(rx))
            .map_err(|source| TrackError::Io {
                action: "start the MLflow thread for",
                path: info.output_dir.clone(),
                source,
            })?;
        Ok(Self {
            server,
            log_artifacts,
            tx: Some(tx),
            worker: Some(handle),
        })
    }

    /// The tracking server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Whether the run's files are to be uploaded (`HF_MLFLOW_LOG_ARTIFACTS`).
    pub fn logs_artifacts(&self) -> bool {
        self.log_artifacts
    }

    /// Queues one log's values (plus `epoch`) at `step`. Returns at once.
    pub fn log(&self, step: u64, epoch: f64, values: &BTreeMap<String, f64>) {
        let timestamp = now_ms();
        let metric = |key: &str, value: f64| MetricValue {
            key: metric_key(key),
            value,
            timestamp,
            step: step as i64,
        };
        let mut batch: Vec<MetricValue> = values.iter().map(|(k, v)| metric(k, *v)).collect();
        batch.push(metric("epoch", epoch));
        if let Some(tx) = &self.tx {
            // The worker only stops after `finish`, so a failed send cannot lose anything.
            let _ = tx.send(Message::Metrics(batch));
        }
    }

    /// Ends the run: uploads `artifacts` (when artifacts are logged), records `status`, and
    /// waits for the background thread to deliver or give up.
    pub fn finish(mut self, status: RunStatus, artifacts: Vec<Artifact>) -> DeliveryReport {
        let artifacts = if self.log_artifacts {
            artifacts
        } else {
            Vec::new()
        };
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Message::Finish { status, artifacts });
        }
        let mut lost = DeliveryReport::new(&self.server);
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            _ => {
                lost.end = true;
                lost.reason("the MLflow thread stopped unexpectedly");
                lost
            }
        }
    }
}

impl Drop for MlflowRun {
    /// A run dropped without [`MlflowRun::finish`] (training failed): the thread records the
    /// run as failed on its own; nothing waits for it.
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Message::Finish {
                status: RunStatus::Failed,
                artifacts: Vec::new(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_keys_are_sanitised_as_transformers_does() {
        assert_eq!(metric_key("rewards/chosen"), "rewards/chosen");
        assert_eq!(metric_key("eval_loss"), "eval_loss");
        assert_eq!(metric_key("loss(sum)"), "loss_sum_");
    }

    #[test]
    fn parameters_merge_the_model_config_under_the_run_config() {
        let mut info = RunInfo::new("out");
        info.config = serde_json::from_str(
            r#"{"beta": 0.1, "eval_file": null, "bf16": false, "loss_type": ["sdpo"], "long": "x"}"#,
        )
        .unwrap();
        info.config["long"] = Value::String("y".repeat(MAX_PARAM_VALUE_LENGTH + 1));
        info.model_config = Some(
            serde_json::from_str(r#"{"beta": 9, "rope_parameters": {"rope_theta": 10000.0}}"#)
                .unwrap(),
        );
        let env = |k: &str| (k == settings::TRACKING_URI).then(|| "http://h:1".to_string());
        let mut settings = MlflowSettings::from_env(&env).unwrap().unwrap();
        let (params, too_long) = parameters(&info, &settings);
        assert_eq!(too_long, vec!["long".to_string()]);
        let get = |params: &[(String, String)], k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get(&params, "beta").as_deref(), Some("0.1"));
        assert_eq!(get(&params, "eval_file").as_deref(), Some("None"));
        assert_eq!(get(&params, "bf16").as_deref(), Some("False"));
        assert_eq!(get(&params, "loss_type").as_deref(), Some("[\"sdpo\"]"));
        assert_eq!(
            get(&params, "rope_parameters").as_deref(),
            Some("{\"rope_theta\":10000.0}")
        );
        settings.flatten_params = true;
        settings.max_log_params = Some(2);
        let (params, _) = parameters(&info, &settings);
        assert_eq!(params.len(), 2);
        let (all, _) = {
            settings.max_log_params = None;
            parameters(&info, &settings)
        };
        assert_eq!(
            get(&all, "rope_parameters.rope_theta").as_deref(),
            Some("10000.0")
        );
    }
}
