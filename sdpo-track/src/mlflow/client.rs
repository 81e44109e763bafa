//! The calls of MLflow's REST API (`/api/2.0/mlflow/...`) the sink makes, over `ureq`, each
//! answering `Ok` or an error that says whether trying again may help.

use std::time::Duration;

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::mlflow::settings::{Auth, MlflowSettings};
use crate::run::Artifact;

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The server could not be reached, timed out, or answered 5xx / 408 / 429: retry later.
    Transient(String),
    /// The server refused the request (another 4xx) or did not answer as MLflow does.
    Permanent(String),
}

/// A run on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunRef {
    /// MLflow's run id.
    pub run_id: String,
    /// Its experiment.
    pub experiment_id: String,
    /// Where its artifacts live (`mlflow-artifacts:/...` when the server proxies them).
    pub artifact_uri: String,
}

/// One metric value as MLflow stores it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricValue {
    /// The key.
    pub key: String,
    /// The value (non-finite values travel as `"NaN"`, `"Infinity"`, `"-Infinity"`).
    pub value: f64,
    /// Milliseconds since the Unix epoch, when it was logged.
    pub timestamp: i64,
    /// The global step.
    pub step: i64,
}

fn metric_json(m: &MetricValue) -> Value {
    let value = if m.value.is_finite() {
        json!(m.value)
    } else if m.value.is_nan() {
        json!("NaN")
    } else if m.value > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    };
    json!({"key": m.key, "value": value, "timestamp": m.timestamp, "step": m.step})
}

fn pairs_json(pairs: &[(String, String)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

/// Characters escaped in one segment of an artifact path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// The REST client of one tracking server.
pub(crate) struct RestClient {
    base: String,
    agent: ureq::Agent,
    authorization: Option<String>,
    request_timeout: Duration,
}

impl RestClient {
    /// A client of `settings.tracking_uri`.
    pub fn new(settings: &MlflowSettings) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5).min(settings.request_timeout)))
            .timeout_global(Some(settings.request_timeout))
            .build()
            .into();
        let authorization = match &settings.auth {
            Auth::None => None,
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
            Auth::Basic(user, password) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
        };
        Self {
            base: settings.tracking_uri.clone(),
            agent,
            authorization,
            request_timeout: settings.request_timeout,
        }
    }

    /// The answer's JSON, or the error an MLflow server's status and body mean.
    fn answer(
        what: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, CallError> {
        let mut response = result.map_err(|e| CallError::Transient(format!("{what}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| CallError::Transient(format!("{what}: reading the answer: {e}")))?;
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(Value::Object(Default::default()));
            }
            return serde_json::from_str(&text).map_err(|_| {
                CallError::Permanent(format!(
                    "{what}: the server's answer is not MLflow's JSON: {}",
                    snippet(&text)
                ))
            });
        }
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let code = v.get("error_code")?.as_str()?.to_string();
                let message = v.get("message").and_then(Value::as_str).unwrap_or("");
                Some(format!("{code}: {message}"))
            })
            .unwrap_or_else(|| snippet(&text));
        let reason = format!("{what}: HTTP {status} {detail}");
        if status >= 500 || status == 408 || status == 429 {
            Err(CallError::Transient(reason))
        } else {
            Err(CallError::Permanent(reason))
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/2.0/{path}", self.base)
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let mut request = self
            .agent
            .post(self.url(path))
            .header("Content-Type", "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        Self::answer(path, request.send(body.to_string()))
    }

    fn get(&self, path: &str, query: (&str, &str)) -> Result<Value, CallError> {
        let mut request = self.agent.get(self.url(path)).query(query.0, query.1);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        Self::answer(path, request.call())
    }

    /// The id of experiment `name` (created when missing); `Default` (id 0) without a name.
    pub fn experiment_id(&self, name: Option<&str>) -> Result<String, CallError> {
        let Some(name) = name else {
            return Ok("0".into());
        };
        let lookup =
            |client: &Self| client.get("mlflow/experiments/get-by-name", ("experiment_name", name));
        match lookup(self) {
            Ok(v) => string_at(
                &v,
                &["experiment", "experiment_id"],
                "experiments/get-by-name",
            ),
            Err(CallError::Permanent(reason)) if reason.contains("RESOURCE_DOES_NOT_EXIST") => {
                match self.post("mlflow/experiments/create", &json!({"name": name})) {
                    Ok(v) => string_at(&v, &["experiment_id"], "experiments/create"),
                    // Created meanwhile by another run.
                    Err(CallError::Permanent(r)) if r.contains("RESOURCE_ALREADY_EXISTS") => {
                        lookup(self).and_then(|v| {
                            string_at(&v, &["experiment", "experiment_id"], "get-by-name")
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a run.
    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: Option<&str>,
        tags: &[(String, String)],
        start_time: i64,
    ) -> Result<RunRef, CallError> {
        let mut body = json!({
            "experiment_id": experiment_id,
            "start_time": start_time,
            "tags": pairs_json(tags),
        });
        if let Some(name) = run_name {
            body["run_name"] = json!(name);
        }
        let answer = self.post("mlflow/runs/create", &body)?;
        run_ref(&answer, "runs/create")
    }

    /// An existing run (to continue it), set back to `RUNNING`.
    pub fn reopen_run(&self, run_id: &str) -> Result<RunRef, CallError> {
        let answer = self.get("mlflow/runs/get", ("run_id", run_id))?;
        let run = run_ref(&answer, "runs/get")?;
        self.post(
            "mlflow/runs/update",
            &json!({"run_id": run_id, "status": "RUNNING"}),
        )?;
        Ok(run)
    }

    /// One `log-batch` call (at most 1000 metrics, 100 params, 100 tags).
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[MetricValue],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<(), CallError> {
        let body = json!({
            "run_id": run_id,
            "metrics": metrics.iter().map(metric_json).collect::<Vec<_>>(),
            "params": pairs_json(params),
            "tags": pairs_json(tags),
        });
        self.post("mlflow/runs/log-batch", &body).map(|_| ())
    }

    /// Ends the run.
    pub fn end_run(&self, run_id: &str, status: &str, end_time: i64) -> Result<(), CallError> {
        self.post(
            "mlflow/runs/update",
            &json!({"run_id": run_id, "status": status, "end_time": end_time}),
        )
        .map(|_| ())
    }

    /// Uploads `artifact` through the server's artifact proxy under `root` (the run's
    /// `mlflow-artifacts:` path). The time limit grows with the file (1 MiB/s at least).
    pub fn upload(&self, root: &str, artifact: &Artifact) -> Result<(), CallError> {
        let file = std::fs::File::open(&artifact.local).map_err(|e| {
            CallError::Permanent(format!("cannot read `{}`: {e}", artifact.local.display()))
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let path: Vec<String> = root
            .split('/')
            .chain(artifact.path.split('/'))
            .filter(|s| !s.is_empty())
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}",
            self.base,
            path.join("/")
        );
        let limit = self.request_timeout + Duration::from_secs(size >> 20);
        let mut request = self
            .agent
            .put(url)
            .header("Content-Type", "application/octet-stream")
            .config()
            .timeout_global(Some(limit))
            .build();
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        Self::answer(&format!("artifact {}", artifact.path), request.send(&file)).map(|_| ())
    }
}

/// The path under the server's artifact proxy of a run's `artifact_uri`, or `None` when the
/// server stores artifacts where only MLflow's own clients write (`s3://`, a local path, ...).
pub(crate) fn proxied_artifact_root(artifact_uri: &str) -> Option<String> {
    let rest = artifact_uri.strip_prefix("mlflow-artifacts:")?;
    // `mlflow-artifacts://host:port/path` names the server; `mlflow-artifacts:/path` does not.
    let path = match rest.strip_prefix("//") {
        Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    };
    Some(path.trim_matches('/').to_string())
}

fn snippet(text: &str) -> String {
    let t: String = text.trim().chars().take(200).collect();
    if t.is_empty() {
        "(empty answer)".into()
    } else {
        t
    }
}

fn string_at(v: &Value, path: &[&str], what: &str) -> Result<String, CallError> {
    let mut at = v;
    for key in path {
        at = at.get(key).unwrap_or(&Value::Null);
    }
    match at {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(CallError::Permanent(format!(
            "{what}: the answer has no `{}`: {}",
            path.join("."),
            snippet(&v.to_string())
        ))),
    }
}

fn run_ref(answer: &Value, what: &str) -> Result<RunRef, CallError> {
    Ok(RunRef {
        run_id: string_at(answer, &["run", "info", "run_id"], what)?,
        experiment_id: string_at(answer, &["run", "info", "experiment_id"], what)?,
        artifact_uri: string_at(answer, &["run", "info", "artifact_uri"], what).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxied_artifact_roots() {
        assert_eq!(
            proxied_artifact_root("mlflow-artifacts:/1/abc/artifacts").as_deref(),
            Some("1/abc/artifacts")
        );
        assert_eq!(
            proxied_artifact_root("mlflow-artifacts://h:5000/1/abc/artifacts").as_deref(),
            Some("1/abc/artifacts")
        );
        assert_eq!(proxied_artifact_root("s3://bucket/1/abc/artifacts"), None);
        assert_eq!(proxied_artifact_root("/srv/mlruns/1/abc/artifacts"), None);
    }

    #[test]
    fn non_finite_metrics_use_protobuf_json_names() {
        let m = |value| MetricValue {
            key: "loss".into(),
            value,
            timestamp: 1,
            step: 2,
        };
        assert_eq!(metric_json(&m(f64::NAN))["value"], "NaN");
        assert_eq!(metric_json(&m(f64::INFINITY))["value"], "Infinity");
        assert_eq!(metric_json(&m(f64::NEG_INFINITY))["value"], "-Infinity");
        assert_eq!(metric_json(&m(0.5))["value"], 0.5);
    }
}
