//! TRL's example commands (`trl/scripts/dpo.py`, full and LoRA) run unchanged but for the step
//! count and the output directory, with Hub ids for the model and the dataset: through the
//! test Hub server, then from the cache with `HF_HUB_OFFLINE=1`, and as a YAML file. A tiny
//! model (trained one step by `sdpo` itself from a random Llama with SmolLM2's vocabulary) and
//! the quickstart's Parquet pairs stand in for Qwen2-0.5B-Instruct and UltraFeedback.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{text, write_tiny_run};
use sdpo_hub_testserver::HubServer;

const MODEL: &str = "test-org/tiny-llama";
const DATASET: &str = "test-org/tiny-prefs";

/// TRL's full-training command from `trl/scripts/dpo.py`, `--max_steps` and `--output_dir`
/// changed.
fn full_command(out: &Path) -> Vec<String> {
    let out = out.display().to_string();
    [
        "--dataset_name",
        DATASET,
        "--model_name_or_path",
        MODEL,
        "--learning_rate",
        "5.0e-7",
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "2",
        "--gradient_accumulation_steps",
        "8",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "50",
        "--output_dir",
        &out,
        "--no_remove_unused_columns",
    ]
    .map(str::to_string)
    .to_vec()
}

/// TRL's LoRA command: the full one plus `--use_peft --lora_r 32 --lora_alpha 16` (and
/// `--learning_rate 5.0e-6`).
fn lora_command(out: &Path) -> Vec<String> {
    let mut args = full_command(out);
    args[5] = "5.0e-6".into();
    args.extend(["--use_peft", "--lora_r", "32", "--lora_alpha", "16"].map(str::to_string));
    args
}

/// Lays out the two repositories the server offers and returns its root.
fn hub_root(work: &Path) -> PathBuf {
    let run = write_tiny_run(
        &work.join("seed"),
        1,
        16,
        "max_steps = 1\nsave_strategy = \"no\"\nper_device_train_batch_size = 4\noutput_dir = \"tiny\"\n",
    );
    let seeded = sdpo(
        &["train", "--config", &run.display().to_string()],
        &work.join("seed"),
        &[],
    );
    assert!(seeded.status.success(), "{}", text(&seeded));
    let root = work.join("hub");
    let model = root.join("models").join(MODEL);
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(work.join("seed/tiny")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let model_file = name == "config.json"
            || name == "generation_config.json"
            || name.starts_with("tokenizer")
            || name == "special_tokens_map.json"
            || name.ends_with(".safetensors");
        if model_file {
            std::fs::copy(entry.path(), model.join(&name)).unwrap();
        }
    }
    let data = root.join("datasets").join(DATASET).join("data");
    std::fs::create_dir_all(&data).unwrap();
    let parquet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/parquet/data");
    for split in ["train", "test"] {
        let name = format!("{split}-00000-of-00001.parquet");
        std::fs::copy(parquet.join(&name), data.join(&name)).unwrap();
    }
    root
}

fn sdpo(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sdpo"));
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("BURN_DEVICE");
    for name in [
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_TOKEN",
        "HF_HOME",
        "HF_HUB_CACHE",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("run sdpo")
}

fn train(args: &[String], cwd: &Path, env: &[(&str, &str)]) -> String {
    let mut all = vec!["train".to_string()];
    all.extend(args.iter().cloned());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = sdpo(&refs, cwd, env);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_trained(out: &Path, adapter: bool) {
    let weights = if adapter {
        "adapter_model.safetensors"
    } else {
        "model.safetensors"
    };
    assert!(
        out.join(weights).is_file(),
        "{} has no {weights}",
        out.display()
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"eval_loss\""),
        "eval split evaluated: {metrics}"
    );
}

#[test]
fn trls_example_commands_run_through_the_hub_offline_and_as_yaml() {
    let work = tempfile::tempdir().unwrap();
    let root = hub_root(work.path());
    let server = HubServer::start(&root).unwrap();
    let cache = work.path().join("hf-cache");
    let cache_str = cache.display().to_string();
    let url = server.url();
    let online = [
        ("HF_HUB_CACHE", cache_str.as_str()),
        ("HF_ENDPOINT", url.as_str()),
    ];

    let log = train(
        &full_command(&work.path().join("full")),
        work.path(),
        &online,
    );
    assert!(log.contains("files downloaded"), "{log}");
    assert!(
        log.contains("`remove_unused_columns` = false changes nothing here"),
        "{log}"
    );
    assert_trained(&work.path().join("full"), false);
    assert!(
        cache
            .join("models--test-org--tiny-llama/refs/main")
            .is_file()
    );
    assert!(
        cache
            .join("datasets--test-org--tiny-prefs/refs/main")
            .is_file()
    );

    let log = train(
        &lora_command(&work.path().join("lora")),
        work.path(),
        &online,
    );
    assert!(
        log.contains("0 files downloaded"),
        "the second run reuses the cache: {log}"
    );
    assert_trained(&work.path().join("lora"), true);

    // Offline, with the server gone: the cache alone.
    let requests = server.requests().len();
    drop(server);
    let offline = [
        ("HF_HUB_CACHE", cache_str.as_str()),
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let log = train(
        &full_command(&work.path().join("full-offline")),
        work.path(),
        &offline,
    );
    assert!(log.contains("cached snapshot"), "{log}");
    assert_trained(&work.path().join("full-offline"), false);
    let log = train(
        &lora_command(&work.path().join("lora-offline")),
        work.path(),
        &offline,
    );
    assert!(log.contains("cached snapshot"), "{log}");
    assert!(requests > 0);

    // The same run as TRL's YAML file.
    let yaml = format!(
        "dataset_name: {DATASET}\nmodel_name_or_path: {MODEL}\nlearning_rate: 5.0e-7\n\
         num_train_epochs: 1\nper_device_train_batch_size: 2\nmax_steps: 2\n\
         gradient_accumulation_steps: 8\neval_strategy: steps\neval_steps: 50\n\
         output_dir: {}\nremove_unused_columns: false\nenv:\n  HF_HUB_OFFLINE: 1\n",
        work.path().join("yaml").display()
    );
    std::fs::write(work.path().join("run.yaml"), yaml).unwrap();
    let log = train(
        &["--config".into(), "run.yaml".into()],
        work.path(),
        &[
            ("HF_HUB_CACHE", cache_str.as_str()),
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ],
    );
    assert!(
        log.contains("cached snapshot"),
        "the YAML's env: set HF_HUB_OFFLINE: {log}"
    );
    assert_trained(&work.path().join("yaml"), false);

    // Offline without the dataset in the cache: every place is listed.
    let empty = work.path().join("empty-cache").display().to_string();
    let out = sdpo(
        &[
            "train",
            "--dataset_name",
            "test-org/absent",
            "--model_name_or_path",
            MODEL,
        ],
        work.path(),
        &[("HF_HUB_CACHE", empty.as_str()), ("HF_HUB_OFFLINE", "1")],
    );
    let err = text(&out);
    assert!(!out.status.success(), "{err}");
    for needle in [
        "model_name_or_path",
        "local path",
        "models--test-org--tiny-llama",
        "offline",
    ] {
        assert!(err.contains(needle), "`{needle}` missing: {err}");
    }
}
