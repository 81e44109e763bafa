//! The MLflow settings a run reads from the environment, with the variables transformers'
//! `MLflowCallback` and MLflow's own client read.

use std::time::Duration;

use serde_json::Value;

use crate::error::TrackError;

/// The tracking server's URL.
pub const TRACKING_URI: &str = "MLFLOW_TRACKING_URI";
/// The experiment's name (unset: MLflow's `Default` experiment, id 0).
pub const EXPERIMENT_NAME: &str = "MLFLOW_EXPERIMENT_NAME";
/// A run to continue instead of creating one (transformers: resuming).
pub const RUN_ID: &str = "MLFLOW_RUN_ID";
/// A JSON object of tags for the run.
pub const TAGS: &str = "MLFLOW_TAGS";
/// Flatten nested parameter values into `a.b` keys.
pub const FLATTEN_PARAMS: &str = "MLFLOW_FLATTEN_PARAMS";
/// Log at most this many parameters.
pub const MAX_LOG_PARAMS: &str = "MLFLOW_MAX_LOG_PARAMS";
/// Whether to upload the final model and the run report (sdpo-rs default: yes).
pub const LOG_ARTIFACTS: &str = "HF_MLFLOW_LOG_ARTIFACTS";
/// transformers' switch that turns the integration off.
pub const DISABLE: &str = "DISABLE_MLFLOW_INTEGRATION";
/// Bearer token (MLflow client's variable).
pub const TOKEN: &str = "MLFLOW_TRACKING_TOKEN";
/// Basic-auth user (MLflow client's variable).
pub const USERNAME: &str = "MLFLOW_TRACKING_USERNAME";
/// Basic-auth password (MLflow client's variable).
pub const PASSWORD: &str = "MLFLOW_TRACKING_PASSWORD";
/// Seconds one request may take (MLflow client's variable; default here 30).
pub const REQUEST_TIMEOUT: &str = "MLFLOW_HTTP_REQUEST_TIMEOUT";
/// Seconds the end of a run may wait for undelivered data before giving up (sdpo-rs).
pub const FINISH_TIMEOUT: &str = "SDPO_MLFLOW_FINISH_TIMEOUT";

/// transformers' `ENV_VARS_TRUE_VALUES`.
fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

/// A false value of a yes/no variable.
fn is_false(value: &str) -> bool {
    matches!(
        value.to_ascii_uppercase().as_str(),
        "0" | "OFF" | "NO" | "FALSE"
    )
}

/// How the client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// `Authorization: Basic base64(user:password)`.
    Basic(String, String),
}

/// Everything the MLflow sink needs from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct MlflowSettings {
    /// The server's base URL, without a trailing slash.
    pub tracking_uri: String,
    /// The experiment (unset: id 0, `Default`).
    pub experiment_name: Option<String>,
    /// Continue this run instead of creating one.
    pub run_id: Option<String>,
    /// Extra run tags.
    pub tags: Vec<(String, String)>,
    /// Flatten nested parameter values.
    pub flatten_params: bool,
    /// Log at most this many parameters.
    pub max_log_params: Option<usize>,
    /// Upload the final model and the report.
    pub log_artifacts: bool,
    /// Authentication.
    pub auth: Auth,
    /// One request's limit.
    pub request_timeout: Duration,
    /// How long the end of the run may wait for the server.
    pub finish_timeout: Duration,
}

fn seconds(
    env: &dyn Fn(&str) -> Option<String>,
    variable: &'static str,
    default: f64,
) -> Result<Duration, TrackError> {
    match env(variable) {
        None => Ok(Duration::from_secs_f64(default)),
        Some(raw) => raw
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| TrackError::Env {
                variable,
                reason: format!("expected a number of seconds > 0, got `{raw}`"),
            }),
    }
}

impl MlflowSettings {
    /// Whether `DISABLE_MLFLOW_INTEGRATION` turns MLflow off.
    pub fn disabled(env: &dyn Fn(&str) -> Option<String>) -> bool {
        env(DISABLE).is_some_and(|v| is_true(&v))
    }

    /// Reads the settings. `Ok(None)` when `MLFLOW_TRACKING_URI` is unset or empty.
    ///
    /// # Errors
    /// [`TrackError::Env`] for a tracking URI that is not an `http(s)://` server (sdpo-rs talks
    /// to MLflow through its REST API: a local `./mlruns` or `sqlite:` store needs `mlflow
    /// server` in front of it), tags that are not a JSON object, or a bad number.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, TrackError> {
        let Some(uri) = env(TRACKING_URI).filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let uri = uri.trim().trim_end_matches('/').to_string();
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(TrackError::Env {
                variable: TRACKING_URI,
                reason: format!(
                    "`{uri}` is not an http(s) tracking server; sdpo-rs logs through MLflow's REST \
                     API, so start one (`mlflow server --backend-store-uri sqlite:///mlflow.db`) \
                     and set MLFLOW_TRACKING_URI=http://127.0.0.1:5000"
                ),
            });
        }
        let tags = match env(TAGS).filter(|t| !t.trim().is_empty()) {
            None => Vec::new(),
            Some(raw) => match serde_json::from_str::<Value>(&raw) {
                Ok(Value::Object(map)) => map
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (k, v)
                    })
                    .collect(),
                _ => {
                    return Err(TrackError::Env {
                        variable: TAGS,
                        reason: format!("expected a JSON object of tags, got `{raw}`"),
                    });
                }
            },
        };
        let max_log_params = match env(MAX_LOG_PARAMS) {
            None => None,
            Some(raw) => Some(raw.trim().parse::<usize>().map_err(|_| TrackError::Env {
                variable: MAX_LOG_PARAMS,
                reason: format!("expected a whole number, got `{raw}`"),
            })?),
        };
        let auth = match (env(TOKEN), env(USERNAME), env(PASSWORD)) {
            (Some(token), _, _) if !token.is_empty() => Auth::Bearer(token),
            (_, Some(user), Some(password)) => Auth::Basic(user, password),
            _ => Auth::None,
        };
        Ok(Some(Self {
            tracking_uri: uri,
            experiment_name: env(EXPERIMENT_NAME).filter(|n| !n.is_empty()),
            run_id: env(RUN_ID).filter(|r| !r.is_empty()),
            tags,
            flatten_params: env(FLATTEN_PARAMS).is_some_and(|v| is_true(&v)),
            max_log_params,
            log_artifacts: !env(LOG_ARTIFACTS).is_some_and(|v| is_false(&v)),
            auth,
            request_timeout: seconds(env, REQUEST_TIMEOUT, 30.0)?,
            finish_timeout: seconds(env, FINISH_TIMEOUT, 120.0)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_variables_transformers_and_mlflow_read() {
        assert_eq!(MlflowSettings::from_env(&env(&[])).unwrap(), None);
        let s = MlflowSettings::from_env(&env(&[
            (TRACKING_URI, "http://127.0.0.1:5000/"),
            (EXPERIMENT_NAME, "sdpo"),
            (TAGS, r#"{"release": "rc1", "n": 2}"#),
            (LOG_ARTIFACTS, "false"),
            (USERNAME, "u"),
            (PASSWORD, "p"),
            (FINISH_TIMEOUT, "2.5"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.tracking_uri, "http://127.0.0.1:5000");
        assert_eq!(s.experiment_name.as_deref(), Some("sdpo"));
        assert_eq!(
            s.tags,
            vec![("n".into(), "2".into()), ("release".into(), "rc1".into())]
        );
        assert!(!s.log_artifacts);
        assert_eq!(s.auth, Auth::Basic("u".into(), "p".into()));
        assert_eq!(s.finish_timeout, Duration::from_millis(2500));
        assert!(MlflowSettings::disabled(&env(&[(DISABLE, "true")])));
    }

    #[test]
    fn a_local_store_or_bad_values_are_named() {
        for (vars, needle) in [
            (
                &[(TRACKING_URI, "./mlruns")][..],
                "MLFLOW_TRACKING_URI: `./mlruns` is not an http(s) tracking server",
            ),
            (
                &[(TRACKING_URI, "http://h:1"), (TAGS, "[1]")][..],
                "MLFLOW_TAGS: expected a JSON object",
            ),
            (
                &[(TRACKING_URI, "http://h:1"), (FINISH_TIMEOUT, "-1")][..],
                "SDPO_MLFLOW_FINISH_TIMEOUT: expected a number of seconds > 0",
            ),
        ] {
            let vars: &'static [(&str, &str)] = Box::leak(vars.to_vec().into_boxed_slice());
            let err = MlflowSettings::from_env(&env(vars))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
