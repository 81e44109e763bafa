//! The run's configuration: a TOML file or TRL's YAML file (by extension: `.yaml`/`.yml`),
//! then TRL-style flags (`--learning_rate 5e-7`), then `--set key=value` overrides, each later
//! one winning; TRL keys go through [`crate::trl_config::prepare`].

use std::path::Path;

use anyhow::{Context, Result, bail};
use sdpo_train::TrainConfig;
use serde_json::{Map, Value};

use crate::trl_config::{Prepared, flag_value, kind_of, parse_literal, prepare};
use crate::trl_keys::Kind;

/// A configuration ready to run, with what the TRL keys said besides.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: TrainConfig,
    /// One line per key that changes nothing here.
    pub warnings: Vec<String>,
    /// TRL's `resume_from_checkpoint`, if given.
    pub resume_from_checkpoint: Option<String>,
}

/// Whether `path` names a YAML file.
fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// The keys of the file at `path`; a YAML file's `env:` mapping is set in the environment
/// first, as `TrlParser` does (before any Hub id is resolved).
fn read_file(path: &Path) -> Result<Map<String, Value>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read config file `{}`", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "config file `{}` is not UTF-8 text: invalid byte at offset {}",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    if !is_yaml(path) {
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("config file `{}` is not valid TOML", path.display()))?;
        return match serde_json::to_value(table)? {
            Value::Object(map) => Ok(map),
            _ => bail!("config file `{}` is not a table", path.display()),
        };
    }
    let mut map = crate::yaml::parse_yaml(&text)
        .with_context(|| format!("config file `{}`", path.display()))?;
    if let Some(env) = map.remove("env") {
        let Value::Object(vars) = env else {
            bail!("config file `{}`: `env` must be a mapping", path.display());
        };
        for (name, value) in vars {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                bail!(
                    "config file `{}`: `env.{name}`: an environment variable's name must be non-empty without `=` or NUL, and its value without NUL",
                    path.display()
                );
            }
            // SAFETY: the command line sets these before it starts any thread (no other thread
            // reads or writes the environment yet), as TRL sets them before training.
            unsafe { std::env::set_var(&name, value) };
        }
    }
    Ok(map)
}

/// Reads `path` (if any), applies the TRL-style flags and the `--set` overrides, and builds the
/// [`TrainConfig`]: unknown keys, refused TRL keys and wrong types are errors naming the key.
pub fn load_config(
    path: Option<&Path>,
    trl_flags: &[(String, Vec<String>)],
    overrides: &[String],
) -> Result<LoadedConfig> {
    let mut map = match path {
        Some(path) => read_file(path)?,
        None => Map::new(),
    };
    for (key, tokens) in trl_flags {
        // `--no_remove_unused_columns`: a bool set to false, as HfArgumentParser's `--no_X`.
        let negated = key
            .strip_prefix("no_")
            .filter(|base| tokens.is_empty() && kind_of(base) == Some(Kind::Bool));
        match negated {
            Some(base) => map.insert(base.to_string(), Value::Bool(false)),
            None => map.insert(key.clone(), flag_value(key, tokens, kind_of(key))?),
        };
    }
    for item in overrides {
        let Some((key, value)) = item.split_once('=') else {
            bail!("--set `{item}`: expected KEY=VALUE");
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("--set `{item}`: empty key");
        }
        map.insert(key.to_string(), parse_literal(value.trim()));
    }
    let what = match path {
        Some(path) => format!("config file `{}`", path.display()),
        None => "command-line configuration".to_string(),
    };
    let Prepared {
        map,
        warnings,
        resume_from_checkpoint,
    } = prepare(map).with_context(|| what.clone())?;
    let config: TrainConfig =
        serde_json::from_value(Value::Object(map)).with_context(|| what.clone())?;
    Ok(LoadedConfig {
        config,
        warnings,
        resume_from_checkpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn flags(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn overrides_are_typed_and_win() {
        let (_d, f) = write(
            "c.toml",
            "model_name_or_path = \"m\"\ntrain_file = \"t.jsonl\"\nbeta = 0.1\n",
        );
        let c = load_config(
            Some(&f),
            &[],
            &[
                "beta=0.5".into(),
                "loss_type=[\"sdpo\", \"sft\"]".into(),
                "output_dir=runs/x".into(),
            ],
        )
        .unwrap()
        .config;
        assert_eq!(c.loss.beta, 0.5);
        assert_eq!(c.loss.loss_types().len(), 2);
        assert_eq!(c.output_dir, std::path::PathBuf::from("runs/x"));
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let (_d, f) = write(
            "c.toml",
            "model_name_or_path = \"m\"\ntrain_file = \"t\"\nlerning_rate = 1e-5\n",
        );
        let err = format!("{:#}", load_config(Some(&f), &[], &[]).unwrap_err());
        assert!(
            err.contains("lerning_rate") && err.contains("`learning_rate`"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            load_config(Some(&f), &[], &["beta".into()]).unwrap_err()
        );
        assert!(err.contains("KEY=VALUE"), "{err}");
        let err = format!(
            "{:#}",
            load_config(None, &flags(&[("lora_rr", &["8"])]), &[]).unwrap_err()
        );
        assert!(err.contains("`lora_r`"), "{err}");
    }

    #[test]
    fn trl_yaml_and_flags_load_with_trl_types() {
        let yaml = "model_name_or_path: org/model\ndataset_name: org/data\nlearning_rate: 5e-7\n\
                    warmup_steps: 0.1\nreport_to: none\noptim: adamw_torch\n\
                    dataloader_num_workers: 4\nbf16: null\npad_to_multiple_of: auto\n\
                    lr_scheduler_type: cosine_with_min_lr\n\
                    lr_scheduler_kwargs: {min_lr_rate: 0.1}\nmodel_revision: 1234\n";
        let (_d, f) = write("run.yaml", yaml);
        let loaded = load_config(
            Some(&f),
            &flags(&[
                ("no_remove_unused_columns", &[]),
                ("lora_target_modules", &["q_proj", "v_proj"]),
                ("use_peft", &[]),
                ("gradient_checkpointing", &["false"]),
                ("rpo_alpha", &["0.5"]),
            ]),
            &["max_steps=3".into()],
        )
        .unwrap();
        let c = &loaded.config;
        assert_eq!(c.learning_rate, 5e-7);
        assert_eq!(c.warmup_steps, sdpo_train::Steps::Ratio(0.1));
        assert_eq!(c.model_revision, "1234");
        assert!(c.use_peft && !c.gradient_checkpointing && c.max_steps == 3);
        assert_eq!(c.loss.loss_types().len(), 2);
        assert_eq!(c.loss.loss_weights, Some(vec![1.0, 0.5]));
        assert_eq!(c.data.pad_to_multiple_of, None);
        assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.contains("dataloader_num_workers"))
        );
        for (key, value, needle) in [
            ("push_to_hub", "true", "never uploads"),
            ("optim", "adafactor", "AdamW"),
            ("report_to", "wandb", "does not provide"),
            ("lr_scheduler_type", "reduce_lr_on_plateau", "metrics"),
            ("learning_rate", "fast", "expected a number"),
        ] {
            let err = format!(
                "{:#}",
                load_config(None, &flags(&[(key, &[value])]), &[]).unwrap_err()
            );
            assert!(err.contains(key) && err.contains(needle), "{key}: {err}");
        }
    }
}
