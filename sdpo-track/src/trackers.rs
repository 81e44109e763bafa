//! The integrations of one run together: decided from `report_to` and the environment before
//! training starts ([`TrackingPlan`]), fed every log ([`Trackers::log`]), closed at the end
//! ([`Trackers::finish`]). Failures after the start never stop training: they come back as
//! warnings to show.

use std::collections::BTreeMap;

use crate::error::TrackError;
use crate::mlflow::{DeliveryReport, MlflowRun, MlflowSettings};
use crate::report_to::{Integration, ReportTo};
use crate::run::{Artifact, RunInfo, RunStatus};
use crate::tensorboard::{TensorBoardWriter, logging_dir};

/// What will be started, decided before training.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrackingPlan {
    tensorboard: bool,
    mlflow: Option<MlflowSettings>,
    notes: Vec<String>,
}

impl TrackingPlan {
    /// Resolves `report_to` against the environment (`env` reads a variable).
    ///
    /// # Errors
    /// An explicitly requested integration that cannot run: MLflow without an http(s)
    /// `MLFLOW_TRACKING_URI`, or with `DISABLE_MLFLOW_INTEGRATION` set; a malformed MLflow
    /// variable. With `report_to = "all"` such an integration is skipped with a note instead.
    pub fn resolve(
        report_to: &ReportTo,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, TrackError> {
        let (wanted, all) = match report_to {
            ReportTo::None => (Vec::new(), false),
            ReportTo::All => (Integration::ALL.to_vec(), true),
            ReportTo::Some(list) => (list.clone(), false),
        };
        let mut plan = Self::default();
        for integration in wanted {
            match integration {
                Integration::TensorBoard => plan.tensorboard = true,
                Integration::Mlflow => {
                    let skip = |plan: &mut Self, why: &str| -> Result<(), TrackError> {
                        if all {
                            plan.notes
                                .push(format!("report_to = \"all\": mlflow skipped ({why})"));
                            Ok(())
                        } else {
                            Err(TrackError::ReportTo {
                                reason: format!("mlflow is requested but {why}"),
                            })
                        }
                    };
                    if MlflowSettings::disabled(env) {
                        skip(&mut plan, "DISABLE_MLFLOW_INTEGRATION is set")?;
                        continue;
                    }
                    match MlflowSettings::from_env(env) {
                        Ok(Some(settings)) => plan.mlflow = Some(settings),
                        Ok(None) => skip(
                            &mut plan,
                            "MLFLOW_TRACKING_URI is not set: set it to the tracking server's \
                             URL, e.g. http://127.0.0.1:5000 (sdpo-rs logs through MLflow's \
                             REST API)",
                        )?,
                        Err(e) if all => plan
                            .notes
                            .push(format!("report_to = \"all\": mlflow skipped ({e})")),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(plan)
    }

    /// Whether nothing will be started.
    pub fn is_empty(&self) -> bool {
        !self.tensorboard && self.mlflow.is_none()
    }

    /// Notes about integrations that `"all"` skipped.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Starts the integrations for the run `info`: creates TensorBoard's directory and event
    /// file (writing the configuration) and MLflow's background delivery.
    ///
    /// # Errors
    /// TensorBoard's directory or file cannot be created or written; the MLflow thread cannot
    /// start. (An MLflow server that is down is not an error: see [`Trackers::finish`].)
    pub fn start(
        self,
        info: &RunInfo,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Trackers, TrackError> {
        let tensorboard = if self.tensorboard {
            Some(TensorBoardWriter::start(&logging_dir(info, env), info)?)
        } else {
            None
        };
        let mlflow = match self.mlflow {
            Some(settings) => Some(MlflowRun::start(settings, info)?),
            None => None,
        };
        Ok(Trackers {
            tensorboard,
            mlflow,
        })
    }
}

/// The running integrations of one run.
#[derive(Debug, Default)]
pub struct Trackers {
    tensorboard: Option<TensorBoardWriter>,
    mlflow: Option<MlflowRun>,
}

impl Trackers {
    /// One line per running integration, saying where its output goes.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(tb) = &self.tensorboard {
            out.push(format!(
                "tensorboard: writing {} (tensorboard --logdir {})",
                tb.file().display(),
                tb.dir().display()
            ));
        }
        if let Some(mlflow) = &self.mlflow {
            out.push(format!("mlflow: logging to {}", mlflow.server()));
        }
        out
    }

    /// Whether MLflow wants the run's files at the end.
    pub fn wants_artifacts(&self) -> bool {
        self.mlflow.as_ref().is_some_and(MlflowRun::logs_artifacts)
    }

    /// Sends one log (a `metrics.jsonl` record) to every integration. A TensorBoard file that
    /// can no longer be written is closed and reported once; training goes on.
    pub fn log(&mut self, step: u64, epoch: f64, values: &BTreeMap<String, f64>) -> Option<String> {
        if let Some(mlflow) = &self.mlflow {
            mlflow.log(step, epoch, values);
        }
        let tb = self.tensorboard.as_mut()?;
        match tb.log(step, epoch, values) {
            Ok(()) => None,
            Err(e) => {
                self.tensorboard = None;
                Some(format!(
                    "warning: TensorBoard logging stopped at step {step}: {e}; training goes on \
                     (metrics.jsonl has every metric)"
                ))
            }
        }
    }

    /// Ends the run: MLflow uploads `artifacts` and records `status`, waiting for its
    /// background delivery (bounded). Returns the warnings to show (what MLflow could not
    /// deliver) and the MLflow report, if MLflow ran.
    pub fn finish(
        mut self,
        status: RunStatus,
        artifacts: Vec<Artifact>,
    ) -> (Vec<String>, Option<DeliveryReport>) {
        self.tensorboard = None;
        let Some(mlflow) = self.mlflow.take() else {
            return (Vec::new(), None);
        };
        let report = mlflow.finish(status, artifacts);
        (report.warning().into_iter().collect(), Some(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(uri: Option<&'static str>) -> impl Fn(&str) -> Option<String> {
        move |key| match key {
            "MLFLOW_TRACKING_URI" => uri.map(str::to_string),
            _ => None,
        }
    }

    #[test]
    fn all_skips_what_cannot_run_and_a_named_integration_must_run() {
        let plan = TrackingPlan::resolve(&ReportTo::All, &env(None)).unwrap();
        assert!(plan.tensorboard && plan.mlflow.is_none());
        assert!(plan.notes()[0].contains("mlflow skipped (MLFLOW_TRACKING_URI is not set"));
        let plan = TrackingPlan::resolve(&ReportTo::All, &env(Some("http://h:1"))).unwrap();
        assert!(plan.tensorboard && plan.mlflow.is_some() && plan.notes().is_empty());
        let mlflow = ReportTo::Some(vec![Integration::Mlflow]);
        let err = TrackingPlan::resolve(&mlflow, &env(None))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("report_to: mlflow is requested but MLFLOW_TRACKING_URI is not set"),
            "{err}"
        );
        let err = TrackingPlan::resolve(&mlflow, &env(Some("file:///tmp/mlruns")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an http(s) tracking server"), "{err}");
        assert!(
            TrackingPlan::resolve(&ReportTo::None, &env(Some("http://h:1")))
                .unwrap()
                .is_empty()
        );
    }
}
