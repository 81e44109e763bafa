//! `report_to` in the `sdpo` command: TensorBoard and MLflow receive every record the trainer
//! logs (training, evaluation, the end-of-run record), and MLflow gets the final model and the
//! run report at the end. Decided before training starts (a bad `report_to` or MLflow variable
//! stops the command then); once training runs, tracking problems are warnings only.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sdpo_track::{Artifact, ChartGroup, RunInfo, RunStatus, Trackers, TrackingPlan};
use sdpo_train::{MetricsRecord, StepProgress, TrainConfig, TrainObserver, Trainer};

/// Reads a variable of the process environment.
fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Resolves `report_to` against the environment, before any data or model is loaded.
pub fn plan(config: &TrainConfig) -> Result<TrackingPlan> {
    TrackingPlan::resolve(&config.report_to, &env).context("cannot start experiment tracking")
}

/// The policy's `config.json`, when it can be read as a JSON object.
fn model_config(dir: &Path) -> Option<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    match serde_json::from_str(&text).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

/// What the trackers are told about the run.
fn run_info(config: &TrainConfig) -> RunInfo {
    RunInfo {
        output_dir: config.output_dir.clone(),
        run_name: config.run_name.clone(),
        logging_dir: config.logging_dir.clone(),
        config: config.to_map(),
        model_config: model_config(&config.model_name_or_path),
        chart_groups: sdpo_report::REPORT_CHARTS
            .iter()
            .map(|(title, metrics)| ChartGroup {
                title: title.to_string(),
                metrics: metrics.iter().map(|m| m.to_string()).collect(),
            })
            .collect(),
    }
}

/// Starts the planned integrations for `trainer`'s run; their messages go to `inner`.
pub fn start<'a>(
    plan: TrackingPlan,
    trainer: &Trainer,
    inner: &'a mut dyn TrainObserver,
) -> Result<TrackingObserver<'a>> {
    for note in plan.notes() {
        inner.on_message(note);
    }
    let trackers = if plan.is_empty() {
        None
    } else {
        let trackers = plan
            .start(&run_info(trainer.config()), &env)
            .context("cannot start experiment tracking")?;
        for line in trackers.describe() {
            inner.on_message(&line);
        }
        Some(trackers)
    };
    Ok(TrackingObserver {
        inner,
        trackers,
        output_dir: trainer.config().output_dir.clone(),
    })
}

/// Run files that are the run's own, not the model's.
const RUN_FILES: [&str; 4] = [
    "report.html",
    sdpo_report::METRICS_FILE,
    sdpo_report::RUN_CONFIG_FILE,
    sdpo_report::DATA_SUMMARY_FILE,
];

/// The regular files directly in `dir` (names starting with `.` are temporary and skipped).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The artifacts of a finished run: `report.html` and `metrics.jsonl` at the top, the final
/// model's files (weights or adapter, configuration, tokenizer) under `model/`, a LoRA run's
/// merged model under `model/merged/`.
pub fn final_artifacts(output_dir: &Path) -> Vec<Artifact> {
    let name = |p: &Path| {
        p.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned())
    };
    let mut out = Vec::new();
    for file in files_in(output_dir) {
        let file_name = name(&file);
        let path = match file_name.as_str() {
            "report.html" | "metrics.jsonl" => file_name.clone(),
            n if RUN_FILES.contains(&n) => continue,
            n => format!("model/{n}"),
        };
        out.push(Artifact { local: file, path });
    }
    let merged = output_dir.join(sdpo_train::MERGED_DIR);
    for file in files_in(&merged) {
        let path = format!("model/{}/{}", sdpo_train::MERGED_DIR, name(&file));
        out.push(Artifact { local: file, path });
    }
    out
}

/// Passes everything to `inner` and every logged record to the trackers.
pub struct TrackingObserver<'a> {
    inner: &'a mut dyn TrainObserver,
    trackers: Option<Trackers>,
    output_dir: PathBuf,
}

impl TrackingObserver<'_> {
    fn track(&mut self, record: &MetricsRecord) {
        let warning = self
            .trackers
            .as_mut()
            .and_then(|t| t.log(record.step as u64, record.epoch, &record.values));
        if let Some(warning) = warning {
            self.inner.on_message(&warning);
        }
    }

    /// Ends the tracked run: on success MLflow receives the final model and the report; every
    /// integration learns the status. What MLflow could not deliver is one warning.
    pub fn finish(self, status: RunStatus) {
        let Some(trackers) = self.trackers else {
            return;
        };
        let artifacts = if status == RunStatus::Finished && trackers.wants_artifacts() {
            final_artifacts(&self.output_dir)
        } else {
            Vec::new()
        };
        let (warnings, report) = trackers.finish(status, artifacts);
        for warning in warnings {
            self.inner.on_message(&warning);
        }
        if let Some(url) = report
            .as_ref()
            .filter(|r| r.complete())
            .and_then(|r| r.run_url())
        {
            self.inner
                .on_message(&format!("mlflow: run logged at {url}"));
        }
    }
}

impl TrainObserver for TrackingObserver<'_> {
    fn on_start(&mut self, start_step: usize, total_steps: usize) {
        self.inner.on_start(start_step, total_steps);
    }
    fn on_step(&mut self, progress: &StepProgress) {
        self.inner.on_step(progress);
    }
    fn on_log(&mut self, record: &MetricsRecord) {
        self.track(record);
        self.inner.on_log(record);
    }
    fn on_eval(&mut self, record: &MetricsRecord) {
        self.track(record);
        self.inner.on_eval(record);
    }
    fn on_checkpoint(&mut self, dir: &Path) {
        self.inner.on_checkpoint(dir);
    }
    fn on_message(&mut self, message: &str) {
        self.inner.on_message(message);
    }
    fn on_finish(&mut self, dir: &Path) {
        self.inner.on_finish(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_model_goes_under_model_and_the_run_files_stay_out() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "model.safetensors",
            "config.json",
            "report.html",
            "metrics.jsonl",
            "run_config.json",
            "data_summary.json",
            ".report.html.tmp",
        ] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("checkpoint-2")).unwrap();
        std::fs::write(dir.path().join("checkpoint-2/model.safetensors"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("merged")).unwrap();
        std::fs::write(dir.path().join("merged/model.safetensors"), "m").unwrap();
        let paths: Vec<String> = final_artifacts(dir.path())
            .into_iter()
            .map(|a| a.path)
            .collect();
        assert_eq!(
            paths,
            vec![
                "model/config.json",
                "metrics.jsonl",
                "model/model.safetensors",
                "report.html",
                "model/merged/model.safetensors"
            ]
        );
    }
}
