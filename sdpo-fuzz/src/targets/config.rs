//! The run's configuration: a TOML file, TRL's YAML file, and TRL-style command-line flags with
//! `--set` overrides, through [`sdpo_cli::config_file::load_config`] as `sdpo train` reads them.

use std::path::Path;

use arbitrary::{Result, Unstructured};

use crate::Rejection;
use crate::structured::{string, toml_value};

/// Keys of `TrainConfig` and TRL's `DPOConfig`, and a few that are neither.
const KEYS: [&str; 32] = [
    "output_dir",
    "model_name_or_path",
    "train_file",
    "dataset_name",
    "loss_type",
    "sdpo_threshold",
    "beta",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "max_length",
    "seed",
    "bf16",
    "use_peft",
    "lora_r",
    "lora_target_modules",
    "load_in_4bit",
    "optim",
    "report_to",
    "save_strategy",
    "model_init_kwargs",
    "dataset_mixture",
    "precompute_ref_log_probs",
    "ref_model_init_kwargs",
    "label_smoothing",
    "rpo_alpha",
    "deepspeed",
    "no_such_key",
];

fn load(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    sdpo_cli::config_file::load_config(Some(path), &[], &[])?;
    Ok(())
}

fn toml(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut text = String::new();
    for _ in 0..u.int_in_range(0..=8)? {
        match u.int_in_range(0..=9)? {
            0 => text.push_str(&format!("[{}]\n", string(u, &KEYS)?)),
            1 => text.push_str(&"[".repeat(u.int_in_range(1..=200)?)),
            _ => text.push_str(&format!(
                "{} = {}\n",
                string(u, &KEYS)?,
                toml_value(u, &KEYS)?
            )),
        }
    }
    Ok(text.into_bytes())
}

fn yaml(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut text = String::new();
    for _ in 0..u.int_in_range(0..=8)? {
        match u.int_in_range(0..=11)? {
            0 => text.push_str(&format!(
                "env:\n  {}: {}\n",
                string(u, &["HF_HUB_OFFLINE", "A=B", "", "X"])?,
                string(u, &["1", ""])?
            )),
            1 => text.push_str("anchors: &a [*a]\n"),
            2 => text.push_str(&format!(
                "{}: {}\n",
                string(u, &KEYS)?,
                "[".repeat(u.int_in_range(1..=300)?)
            )),
            3 => text.push_str(&format!(
                "{}:\n  - {}\n  - {}\n",
                string(u, &KEYS)?,
                string(u, &KEYS)?,
                toml_value(u, &[])?
            )),
            4 => text.push_str("a: &x 1\nb: *x\nc: *y\n"),
            _ => text.push_str(&format!(
                "{}: {}\n",
                string(u, &KEYS)?,
                toml_value(u, &KEYS)?
            )),
        }
    }
    Ok(text.into_bytes())
}

/// Command-line words, one per line of the input, after `sdpo train`.
fn flags(path: &Path, bytes: &[u8]) -> std::result::Result<(), Rejection> {
    let _ = path;
    let text = String::from_utf8_lossy(bytes);
    let mut args = vec!["sdpo".to_string(), "train".to_string()];
    args.extend(text.lines().map(str::to_string));
    let (own, trl) = sdpo_cli::flags::split_trl_flags(args);
    let overrides: Vec<String> = own
        .windows(2)
        .filter(|w| w[0] == "--set")
        .map(|w| w[1].clone())
        .collect();
    sdpo_cli::config_file::load_config(None, &trl, &overrides)?;
    Ok(())
}

fn flag_lines(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut words = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        match u.int_in_range(0..=5)? {
            0 => {
                words.push("--set".to_string());
                words.push(format!("{}={}", string(u, &KEYS)?, toml_value(u, &KEYS)?));
            }
            1 => words.push(format!(
                "--{}={}",
                string(u, &KEYS)?,
                string(u, &["1", "true", "x", ""])?
            )),
            2 => words.push(format!("--no_{}", string(u, &KEYS)?)),
            _ => {
                words.push(format!("--{}", string(u, &KEYS)?));
                for _ in 0..u.int_in_range(0..=2)? {
                    words.push(toml_value(u, &KEYS)?);
                }
            }
        }
    }
    Ok(words.join("\n").into_bytes())
}

const CONFIG_LOCATORS: &[&str] = &["--", "` = ", "`env"];

/// The configuration targets.
pub(crate) static TARGETS: [crate::Target; 3] = [
    crate::Target {
        name: "config_toml",
        about: "a TOML run configuration through load_config (what `sdpo train --config` reads)",
        file_name: "run.toml",
        names: &[],
        seeds: &["examples/*/*.toml", "examples/*/*/*.toml"],
        generate: toml,
        run: load,
        locators: CONFIG_LOCATORS,
    },
    crate::Target {
        name: "config_yaml",
        about: "TRL's YAML configuration (with `env:`) through load_config",
        file_name: "run.yaml",
        names: &[],
        seeds: &["examples/**/*.yaml", "fixtures/**/*.yaml"],
        generate: yaml,
        run: load,
        locators: CONFIG_LOCATORS,
    },
    crate::Target {
        name: "cli_flags",
        about: "TRL-style flags and --set overrides after `sdpo train` (one word per line)",
        file_name: "",
        names: &[],
        seeds: &[],
        generate: flag_lines,
        run: flags,
        locators: CONFIG_LOCATORS,
    },
];
