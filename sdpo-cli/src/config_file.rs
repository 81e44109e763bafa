//! Reading the TOML configuration and applying `--set key=value` overrides.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sdpo_train::TrainConfig;

/// Reads `path`, applies the overrides, and deserialises into [`TrainConfig`]; unknown keys and
/// wrong types are errors that name the key.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file `{}`", path.display()))?;
    let mut table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("config file `{}` is not valid TOML", path.display()))?;
    for item in overrides {
        let Some((key, value)) = item.split_once('=') else {
            bail!("--set `{item}`: expected KEY=VALUE");
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("--set `{item}`: empty key");
        }
        table.insert(key.to_string(), parse_value(value.trim()));
    }
    let config: TrainConfig = toml::Value::Table(table)
        .try_into()
        .with_context(|| format!("config file `{}`", path.display()))?;
    Ok(config)
}

/// A TOML value (`1e-5`, `true`, `["sdpo", "sft"]`, `"text"`), or the raw text as a string.
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn overrides_are_typed_and_win() {
        let f = write("model_name_or_path = \"m\"\ntrain_file = \"t.jsonl\"\nbeta = 0.1\n");
        let c = load_config(
            f.path(),
            &[
                "beta=0.5".into(),
                "loss_type=[\"sdpo\", \"sft\"]".into(),
                "output_dir=runs/x".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.loss.beta, 0.5);
        assert_eq!(c.loss.loss_types().len(), 2);
        assert_eq!(c.output_dir, std::path::PathBuf::from("runs/x"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = write("model_name_or_path = \"m\"\ntrain_file = \"t\"\nlerning_rate = 1e-5\n");
        let err = format!("{:#}", load_config(f.path(), &[]).unwrap_err());
        assert!(err.contains("lerning_rate"), "{err}");
        let f = write("model_name_or_path = \"m\"\ntrain_file = \"t\"\n");
        let err = format!(
            "{:#}",
            load_config(f.path(), &["bta=1".into()]).unwrap_err()
        );
        assert!(err.contains("bta"), "{err}");
        let err = format!("{:#}", load_config(f.path(), &["beta".into()]).unwrap_err());
        assert!(err.contains("KEY=VALUE"), "{err}");
    }
}
