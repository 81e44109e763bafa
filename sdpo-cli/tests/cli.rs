//! The `sdpo` binary end to end: a short training run, its files, resuming, evaluating, and
//! the error messages a user sees.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor};
use sdpo_models::CausalLm;

mod common;
use common::{sdpo, text, write_tiny_run};

/// A tiny run: a 1-layer Llama with SmolLM2's vocabulary, random init, 12 pairs.
fn write_run(root: &Path) -> PathBuf {
    write_tiny_run(
        root,
        1,
        12,
        r#"output_dir = "out"
loss_type = "sdpo"
learning_rate = 0.01
per_device_train_batch_size = 4
per_device_eval_batch_size = 4
max_steps = 3
logging_steps = 1
save_steps = 2
max_length = 64
"#,
    )
}

fn logits(dir: &Path) -> Vec<f32> {
    let device = Device::flex();
    let model = CausalLm::from_pretrained(dir, &device).expect("saved model loads");
    let ids = Tensor::<2, Int>::from_ints([[1, 504, 3500, 30, 2, 42]], &device);
    let mask = Tensor::<2, Int>::ones([1, 6], &device);
    model.forward(ids, mask).try_into_vec_as::<f32>().unwrap()
}

#[test]
fn train_writes_metrics_checkpoints_and_a_loadable_model() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_run(tmp.path());
    let out = sdpo(
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--device",
            "flex",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));

    let run = tmp.path().join("out");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let train: Vec<_> = records.iter().filter(|r| r.get("loss").is_some()).collect();
    assert_eq!(
        train.len(),
        3,
        "one record per step with logging_steps = 1:\n{metrics}"
    );
    for key in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "logits/chosen",
        "logits/rejected",
        "grad_norm",
        "learning_rate",
        "epoch",
        "step",
        "sdpo/chosen_kept_fraction",
        "sdpo/rejected_kept_fraction",
    ] {
        assert!(
            train[0].get(key).is_some(),
            "metrics lack {key}: {}",
            train[0]
        );
    }
    assert!(
        records.iter().any(|r| r.get("eval_loss").is_some()),
        "no eval record:\n{metrics}"
    );

    let checkpoint = run.join("checkpoint-2");
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "optimizer.bpk",
        "manifest.json",
        "trainer_state.json",
    ] {
        assert!(checkpoint.join(file).is_file(), "checkpoint-2 lacks {file}");
    }
    assert!(
        run.join("checkpoint-3/trainer_state.json").is_file(),
        "save_steps = 2 saves at step 2 and, as transformers, at the last step"
    );
    assert!(!run.join("checkpoint-1").exists(), "no save at step 1");
    for file in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(run.join(file).is_file(), "final model lacks {file}");
    }
    assert!(
        std::fs::read_dir(&run).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tmp"))
    );

    // The final model loads back and gives the same logits as evaluating it through `sdpo eval`
    // twice (deterministic), and differs from the step-2 checkpoint (training moved it).
    let final_logits = logits(&run);
    // Finite first: NaN logits would make the `assert_ne!` below pass without meaning anything.
    assert!(
        final_logits.iter().all(|x| x.is_finite()),
        "the final model gives non-finite logits"
    );
    assert_eq!(final_logits, logits(&run), "loading is deterministic");
    assert_ne!(
        final_logits,
        logits(&checkpoint),
        "step 3 changed the model"
    );

    // Resuming from the checkpoint reproduces the last step exactly (flex, same seed).
    let resumed_dir = tmp.path().join("resumed");
    let out = sdpo(
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--set",
            &format!("output_dir={:?}", resumed_dir.display().to_string()),
            "--resume-from-checkpoint",
            checkpoint.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        final_logits,
        logits(&resumed_dir),
        "resumed final model differs"
    );

    // `sdpo eval` prints eval_ metrics as JSON.
    let out = sdpo(
        &[
            "eval",
            "--config",
            config.to_str().unwrap(),
            "--checkpoint",
            run.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        record["eval_loss"].as_f64().unwrap().is_finite(),
        "{record}"
    );
}

#[test]
fn user_errors_are_one_clear_message_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_run(tmp.path());
    let cfg = config.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "--config", "nope.toml"], "nope.toml"),
        (
            vec!["train", "--config", cfg, "--set", "lerning_rate=1"],
            "lerning_rate",
        ),
        (
            vec!["train", "--config", cfg, "--set", "sdpo_threshold=2"],
            "sdpo_threshold",
        ),
        (
            vec![
                "train",
                "--config",
                cfg,
                "--set",
                "train_file=missing.jsonl",
            ],
            "missing.jsonl",
        ),
        (
            vec!["train", "--config", cfg, "--device", "cuda-please"],
            "flex",
        ),
        (
            vec![
                "train",
                "--config",
                cfg,
                "--resume-from-checkpoint",
                "latest",
            ],
            "no checkpoint",
        ),
    ];
    for (args, needle) in cases {
        let out = sdpo(&args, tmp.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("error:") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{args:?} panicked: {err}"
        );
    }
    let out = sdpo(&["--version"], tmp.path());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backends: flex"),
        "{}",
        text(&out)
    );
}
