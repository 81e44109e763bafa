//! The start-up step that turns Hub ids into local directories (sdpo-hub): the model, the
//! reference, the tokenizer, the adapter and the dataset, each a local path, a snapshot in the
//! Hugging Face cache or a download into it, with a progress bar per file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sdpo_hub::{DownloadProgress, HubSettings, Origin, Resolver, Role};
use sdpo_train::TrainConfig;

/// Draws one byte bar per downloaded file on stderr (plain lines when stderr is no terminal).
struct DownloadBar {
    bar: ProgressBar,
}

impl DownloadBar {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self { bar }
    }

    fn line(&self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

impl DownloadProgress for DownloadBar {
    fn file_started(&mut self, file: &str, total_bytes: u64, resumed_from: u64) {
        self.bar.reset();
        self.bar.set_length(total_bytes);
        self.bar.set_position(resumed_from);
        self.bar.set_message(format!("downloading {file}"));
        if resumed_from > 0 {
            self.line(&format!(
                "resuming {file} at {resumed_from} of {total_bytes} bytes"
            ));
        }
    }

    fn bytes(&mut self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn retrying(&mut self, file: &str, attempt: usize, reason: &str) {
        self.line(&format!("{file}: {reason}; resuming (attempt {attempt})"));
    }

    fn file_done(&mut self, file: &str) {
        let size = self.bar.length().unwrap_or(0);
        self.bar.set_position(size);
        self.line(&format!("downloaded {file} ({size} bytes)"));
    }

    fn note(&mut self, message: &str) {
        self.line(&format!("warning: {message}"));
    }
}

/// Resolves `spec` for `key`, printing where it came from when it is not a local path.
fn resolve_one(
    resolver: &mut Resolver,
    key: &str,
    spec: &str,
    revision: Option<&str>,
    role: Role,
) -> Result<PathBuf> {
    let mut bar = DownloadBar::new();
    let resolved = resolver
        .resolve(spec, revision, role, &mut bar)
        .with_context(|| format!("`{key}`"))?;
    bar.bar.finish_and_clear();
    match &resolved.origin {
        Origin::Local => {}
        Origin::Cache { commit, .. } => eprintln!(
            "{key} `{spec}`: cached snapshot {commit} ({})",
            resolved.path.display()
        ),
        Origin::Hub {
            commit, downloaded, ..
        } => eprintln!(
            "{key} `{spec}`: snapshot {commit}, {downloaded} files downloaded ({})",
            resolved.path.display()
        ),
    }
    Ok(resolved.path)
}

/// Replaces every Hub id in `config` by its local directory (one resolution step at start-up,
/// before any file is read): `model_name_or_path` (at `model_revision`),
/// `ref_model_name_or_path`, the token-level methods' scoring models, `tokenizer_name_or_path`, `peft_adapter_path`, `dataset_name` and
/// the `path` of each `datasets` mixture entry (sdpo-data then reads the local directory's
/// splits and configs).
pub fn resolve_hub_ids(config: &mut TrainConfig) -> Result<()> {
    let settings = HubSettings::from_env();
    let mut resolver = Resolver::new(settings);
    let path_spec = |p: &std::path::Path| p.to_string_lossy().into_owned();
    if !config.model_name_or_path.as_os_str().is_empty() {
        let spec = path_spec(&config.model_name_or_path);
        let revision = config.model_revision.clone();
        config.model_name_or_path = resolve_one(
            &mut resolver,
            "model_name_or_path",
            &spec,
            Some(&revision),
            Role::Model,
        )?;
    }
    for (key, role) in [
        ("ref_model_name_or_path", Role::Model),
        ("tokenizer_name_or_path", Role::Tokenizer),
        ("peft_adapter_path", Role::Adapter),
    ] {
        let slot = match key {
            "ref_model_name_or_path" => &mut config.ref_model_name_or_path,
            "tokenizer_name_or_path" => &mut config.tokenizer_name_or_path,
            _ => &mut config.peft_adapter_path,
        };
        if let Some(path) = slot.as_ref() {
            let spec = path_spec(path);
            *slot = Some(resolve_one(&mut resolver, key, &spec, None, role)?);
        }
    }
    for entry in sdpo_train::scoring::SCORING_MODEL_KEYS {
        if let Some(slot) = config.scoring_model_slot(entry.key)
            && let Some(path) = slot.as_ref()
        {
            let spec = path_spec(path);
            *slot = Some(resolve_one(
                &mut resolver,
                entry.key,
                &spec,
                None,
                Role::Model,
            )?);
        }
    }
    if let Some(name) = config.data.dataset_name.clone() {
        let dir = resolve_one(&mut resolver, "dataset_name", &name, None, Role::Dataset)?;
        config.data.dataset_name = Some(dir.to_string_lossy().into_owned());
    }
    if let Some(entries) = config.data.datasets.as_mut() {
        for (index, entry) in entries.iter_mut().enumerate() {
            let key = format!("datasets[{index}].path");
            let dir = resolve_one(&mut resolver, &key, &entry.path, None, Role::Dataset)?;
            entry.path = dir.to_string_lossy().into_owned();
        }
    }
    Ok(())
}
