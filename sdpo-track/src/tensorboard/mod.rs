//! TensorBoard event files as transformers' `TensorBoardCallback` writes them through
//! PyTorch's `SummaryWriter`:
//!
//! - **where**: `logging_dir` if the configuration sets it, else `TENSORBOARD_LOGGING_DIR`,
//!   else `output_dir/runs/<%b%d_%H-%M-%S>_<hostname>` (local time, as transformers'
//!   `default_logdir`);
//! - **file**: `events.out.tfevents.<unix seconds, 10 digits>.<hostname>.<pid>.<n>`, starting
//!   with the `brain.Event:2` version record;
//! - **at the start**: the run's configuration as the text summary `args` and the model's
//!   `config.json` as `model_config` (tags `args/text_summary`, `model_config/text_summary`),
//!   plus a custom-scalars layout that groups the charts as the run report does;
//! - **every log**: one float32 scalar per metric at the global step, tagged as
//!   transformers' `rewrite_logs` does: `eval_x` → `eval/x`, `test_x` → `test/x`, anything else
//!   → `train/x` (so `loss` → `train/loss`, `epoch` → `train/epoch`), flushed after each log.

mod layout;
pub mod proto;
pub mod record;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::error::{TrackError, io};
use crate::run::RunInfo;
pub use layout::custom_scalars_layout;
use proto::{Dim, Event, PluginData, Summary, SummaryMetadata, TensorProto, TensorShapeProto};
pub use record::read_event_file;

/// The environment variable transformers 5 reads for the TensorBoard directory.
pub const LOGGING_DIR_ENV: &str = "TENSORBOARD_LOGGING_DIR";

/// The tag of a metric as transformers' `rewrite_logs` names it.
pub fn tag_for(metric: &str) -> String {
    if let Some(rest) = metric.strip_prefix("eval_") {
        format!("eval/{rest}")
    } else if let Some(rest) = metric.strip_prefix("test_") {
        format!("test/{rest}")
    } else {
        format!("train/{metric}")
    }
}

/// transformers' `default_logdir()` under `output_dir`: `runs/<%b%d_%H-%M-%S>_<hostname>`.
pub fn default_logging_dir(output_dir: &Path) -> PathBuf {
    let time = chrono::Local::now().format("%b%d_%H-%M-%S");
    output_dir
        .join("runs")
        .join(format!("{time}_{}", hostname()))
}

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Expands a leading `~` as Python's `os.path.expanduser` does (transformers expands
/// `TENSORBOARD_LOGGING_DIR`).
fn expand_user(path: &str, home: Option<String>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(format!("{home}{rest}"))
        }
        _ => PathBuf::from(path),
    }
}

/// The directory a run's event files go to: the `logging_dir` key, else
/// [`LOGGING_DIR_ENV`], else [`default_logging_dir`].
pub fn logging_dir(info: &RunInfo, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = &info.logging_dir {
        return dir.clone();
    }
    match env(LOGGING_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => expand_user(&dir, env("HOME")),
        None => default_logging_dir(&info.output_dir),
    }
}

/// Distinguishes the event files one process opens (PyTorch's `_global_uid`).
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Appends events to one event file.
#[derive(Debug)]
pub struct EventFileWriter {
    path: PathBuf,
    file: File,
}

impl EventFileWriter {
    /// Creates `dir` and a new event file in it, and writes the version record.
    ///
    /// # Errors
    /// [`TrackError::Io`] naming the directory or the file.
    pub fn create(dir: &Path) -> Result<Self, TrackError> {
        std::fs::create_dir_all(dir).map_err(io("create the TensorBoard directory", dir))?;
        let now = now_seconds();
        let name = format!(
            "events.out.tfevents.{:010}.{}.{}.{}",
            now as u64,
            hostname(),
            std::process::id(),
            FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io("create the event file", &path))?;
        let mut writer = Self { path, file };
        writer.write(&Event {
            wall_time: now,
            step: 0,
            what: Some(proto::event::What::FileVersion("brain.Event:2".into())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event (buffered by the OS until [`Self::flush`]).
    ///
    /// # Errors
    /// [`TrackError::Io`] naming the file.
    pub fn write(&mut self, event: &Event) -> Result<(), TrackError> {
        let bytes = record::frame(&event.encode_to_vec());
        self.file
            .write_all(&bytes)
            .map_err(io("write the event file", &self.path))
    }

    /// Flushes what was written to the file.
    ///
    /// # Errors
    /// [`TrackError::Io`] naming the file.
    pub fn flush(&mut self) -> Result<(), TrackError> {
        self.file
            .flush()
            .map_err(io("flush the event file", &self.path))
    }
}

/// A summary event at `step` holding one value.
fn summary_event(step: u64, value: proto::summary::Value) -> Event {
    Event {
        wall_time: now_seconds(),
        step: step as i64,
        what: Some(proto::event::What::Summary(Summary { value: vec![value] })),
    }
}

/// A `[1]` string tensor summary for `plugin`, as PyTorch's `summary.text` builds it.
fn string_value(
    tag: String,
    plugin: &str,
    bytes: Vec<u8>,
    shape: Vec<i64>,
) -> proto::summary::Value {
    proto::summary::Value {
        tag,
        metadata: Some(SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: plugin.into(),
                content: Vec::new(),
            }),
        }),
        value: Some(proto::summary::value::Value::Tensor(TensorProto {
            dtype: proto::DT_STRING,
            tensor_shape: Some(TensorShapeProto {
                dim: shape.into_iter().map(|size| Dim { size }).collect(),
            }),
            string_val: vec![bytes],
        })),
    }
}

/// A run's TensorBoard output.
#[derive(Debug)]
pub struct TensorBoardWriter {
    dir: PathBuf,
    events: EventFileWriter,
}

impl TensorBoardWriter {
    /// Opens a new event file in `dir` and writes the run's configuration (`args`), the
    /// model's configuration (`model_config`, when known) and the chart layout.
    ///
    /// # Errors
    /// [`TrackError::Io`] when the directory or the file cannot be created or written.
    pub fn start(dir: &Path, info: &RunInfo) -> Result<Self, TrackError> {
        let mut events = EventFileWriter::create(dir)?;
        let pretty = |map: &serde_json::Map<String, serde_json::Value>| {
            serde_json::to_string_pretty(map).unwrap_or_default()
        };
        let mut texts = vec![("args", pretty(&info.config))];
        if let Some(model) = &info.model_config {
            texts.push(("model_config", pretty(model)));
        }
        for (name, text) in texts {
            let value = string_value(
                format!("{name}/text_summary"),
                "text",
                text.into_bytes(),
                vec![1],
            );
            events.write(&summary_event(0, value))?;
        }
        if !info.chart_groups.is_empty() {
            let layout = custom_scalars_layout(&info.chart_groups).encode_to_vec();
            let value = string_value(
                "custom_scalars__config__".into(),
                "custom_scalars",
                layout,
                Vec::new(),
            );
            events.write(&summary_event(0, value))?;
        }
        events.flush()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            events,
        })
    }

    /// The directory of the event files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The event file being written.
    pub fn file(&self) -> &Path {
        self.events.path()
    }

    /// Writes one log (`epoch` included, as transformers adds it to every log) as float32
    /// scalars at `step`, then flushes.
    ///
    /// # Errors
    /// [`TrackError::Io`] naming the event file.
    pub fn log(
        &mut self,
        step: u64,
        epoch: f64,
        values: &BTreeMap<String, f64>,
    ) -> Result<(), TrackError> {
        let epoch = [("epoch".to_string(), epoch)];
        for (name, value) in values
            .iter()
            .map(|(k, v)| (k, *v))
            .chain(epoch.iter().map(|(k, v)| (k, *v)))
        {
            let scalar = proto::summary::Value {
                tag: tag_for(name),
                metadata: None,
                value: Some(proto::summary::value::Value::SimpleValue(value as f32)),
            };
            self.events.write(&summary_event(step, scalar))?;
        }
        self.events.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_transformers_rewrite_logs() {
        assert_eq!(tag_for("loss"), "train/loss");
        assert_eq!(tag_for("rewards/accuracies"), "train/rewards/accuracies");
        assert_eq!(tag_for("eval_loss"), "eval/loss");
        assert_eq!(tag_for("eval_rewards/chosen"), "eval/rewards/chosen");
        assert_eq!(tag_for("test_loss"), "test/loss");
        assert_eq!(tag_for("train_runtime"), "train/train_runtime");
        assert_eq!(tag_for("epoch"), "train/epoch");
    }

    #[test]
    fn the_directory_is_the_key_then_the_variable_then_the_default() {
        let mut info = RunInfo::new("out/run");
        let none = |_: &str| None;
        let dir = logging_dir(&info, &none);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(dir.parent().unwrap(), Path::new("out/run/runs"));
        assert!(name.ends_with(&format!("_{}", hostname())), "{name}");
        // `%b%d_%H-%M-%S`: an English month abbreviation, the day, then the time.
        let stamp = &name[..name.len() - hostname().len() - 1];
        assert!(
            chrono::NaiveDateTime::parse_from_str(&format!("2000{stamp}"), "%Y%b%d_%H-%M-%S")
                .is_ok(),
            "{stamp}"
        );
        let env = |key: &str| match key {
            LOGGING_DIR_ENV => Some("~/tb".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        assert_eq!(logging_dir(&info, &env), PathBuf::from("/home/u/tb"));
        info.logging_dir = Some(PathBuf::from("logs/here"));
        assert_eq!(logging_dir(&info, &env), PathBuf::from("logs/here"));
    }
}
