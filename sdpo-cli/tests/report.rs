//! `sdpo report` end to end: a short real training run reported on (charts, the configuration
//! from its checkpoint or from `--config`, the data it read), and the errors a user sees.

use std::path::Path;
use std::process::{Command, Output};

fn sdpo(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sdpo"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BURN_DEVICE")
        .output()
        .expect("run sdpo")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A tiny SDPO run (1-layer Llama with SmolLM2's vocabulary, random init, 12 pairs, 4 steps,
/// evaluation every 2, checkpoints at steps 2 and 4). Returns the config path.
fn write_run(root: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(root.join("model")).unwrap();
    let model = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
        "hidden_act": "silu", "max_position_embeddings": 128, "initializer_range": 0.5,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "torch_dtype": "float32"
    });
    std::fs::write(root.join("model/config.json"), model.to_string()).unwrap();
    let pairs: Vec<String> = (0..12)
        .map(|i| {
            serde_json::json!({
                "prompt": format!("Say something kind about item {i}."),
                "chosen": format!("Item {i} is wonderful, thank you for asking."),
                "rejected": format!("Item {i}? Go away."),
            })
            .to_string()
        })
        .collect();
    std::fs::write(root.join("train.jsonl"), pairs.join("\n")).unwrap();
    std::fs::write(root.join("eval.jsonl"), pairs[..4].join("\n")).unwrap();
    let tokenizer = sdpo_testkit::fixtures_dir().join("smollm2");
    let config = format!(
        r#"output_dir = "out"
model_name_or_path = "model"
init_from_config = true
tokenizer_name_or_path = "{}"
train_file = "train.jsonl"
eval_file = "eval.jsonl"
loss_type = "sdpo"
learning_rate = 0.01
per_device_train_batch_size = 4
per_device_eval_batch_size = 4
max_steps = 4
logging_steps = 1
eval_steps = 2
save_steps = 2
max_length = 64
"#,
        tokenizer.display().to_string().replace('\\', "/")
    );
    let path = root.join("run.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn charts(html: &str) -> usize {
    html.matches("<figure class=\"chart\"").count()
}

#[test]
fn report_on_a_real_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_run(tmp.path());
    let config = config.to_str().unwrap();
    let out = sdpo(
        &["train", "--config", config, "--device", "flex"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));

    let out = sdpo(&["report", "out"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("report written to out/report.html"));
    let html = std::fs::read_to_string(tmp.path().join("out/report.html")).unwrap();
    // loss, accuracies, margins, rewards, kept fraction, threshold, learning rate, grad norm,
    // logps, logits: every metric the trainer logs, train and eval on the same axes.
    assert_eq!(charts(&html), 10, "{html}");
    assert!(html.contains("loss (eval)"));
    assert!(html.contains("step 4 of 4"));
    // The configuration and data summary `sdpo train` wrote at start-up.
    assert!(html.contains("run_config.json"), "{html}");
    assert!(html.contains("<tr><td>loss_type</td><td>sdpo</td></tr>"));
    assert!(html.contains("<td><code>train.jsonl</code></td><td class=\"num\">12</td>"));

    // --out elsewhere, with the configuration from --config and an override.
    let out = sdpo(
        &[
            "report",
            "out",
            "--out",
            "elsewhere.html",
            "--config",
            config,
            "--set",
            "beta=0.5",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let html = std::fs::read_to_string(tmp.path().join("elsewhere.html")).unwrap();
    assert!(html.contains("From <code>--config "));
    assert!(html.contains("<tr><td>beta</td><td>0.5</td></tr>"));
}

#[test]
fn report_errors_are_one_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sdpo(&["report", "missing"], tmp.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: cannot report on `missing`: run directory `missing` does not exist or is not a directory"
    );

    std::fs::create_dir(tmp.path().join("run")).unwrap();
    std::fs::write(tmp.path().join("run/metrics.jsonl"), "").unwrap();
    let out = sdpo(&["report", "run"], tmp.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no records"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    std::fs::write(
        tmp.path().join("run/metrics.jsonl"),
        "{\"step\":1,\"loss\":0.5}\nxx\n",
    )
    .unwrap();
    let out = sdpo(&["report", "run"], tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metrics.jsonl` line 2: not a JSON object"),
        "{stderr}"
    );
    assert!(!tmp.path().join("run/report.html").exists());
}
