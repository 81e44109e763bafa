//! Shared set-up of the `sdpo` binary's tests: running it, showing its output, and a tiny run
//! (a random-init Llama with SmolLM2's vocabulary, a few preference pairs, a `run.toml`).

// Each test file uses the part it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `sdpo args` in `cwd` (without `BURN_DEVICE`, so the default backend is used).
pub fn sdpo(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sdpo"))
        .args(args)
        .current_dir(cwd)
        .env_remove("BURN_DEVICE")
        .output()
        .expect("run sdpo")
}

/// Exit status, stdout and stderr, for an assertion message.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes a tiny run into `root`: `model/config.json` (a `layers`-layer Llama with SmolLM2's
/// vocabulary, random init), `train.jsonl` with `pairs` pairs, `eval.jsonl` with the first 4,
/// and `run.toml` holding the model, tokenizer and data keys followed by `settings` (TOML
/// lines: loss, steps, batch sizes, ...). Returns the path of `run.toml`.
pub fn write_tiny_run(root: &Path, layers: usize, pairs: usize, settings: &str) -> PathBuf {
    std::fs::create_dir_all(root.join("model")).unwrap();
    let model = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": layers,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
        "hidden_act": "silu", "max_position_embeddings": 128, "initializer_range": 0.5,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "torch_dtype": "float32"
    });
    std::fs::write(root.join("model/config.json"), model.to_string()).unwrap();
    let pairs: Vec<String> = (0..pairs)
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
        r#"model_name_or_path = "model"
init_from_config = true
tokenizer_name_or_path = "{}"
train_file = "train.jsonl"
eval_file = "eval.jsonl"
{settings}"#,
        tokenizer.display().to_string().replace('\\', "/")
    );
    let path = root.join("run.toml");
    std::fs::write(&path, config).unwrap();
    path
}
