//! Shared set-up of the trainer tests: a tiny Llama with SmolLM2's vocabulary, a few
//! preference pairs, and a configuration that trains in seconds.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sdpo_train::TrainConfig;

/// The SmolLM2 tokenizer fixture directory.
pub fn tokenizer_dir() -> PathBuf {
    sdpo_testkit::fixtures_dir().join("smollm2")
}

/// Writes a tiny Llama `config.json` (SmolLM2's vocabulary so the tokenizer fits) into `dir`.
pub fn write_tiny_model_config(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 49152,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "hidden_act": "silu",
        "max_position_embeddings": 128,
        "initializer_range": 0.5,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "torch_dtype": "float32"
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// Writes `n` standard-format pairs with varied lengths.
pub fn write_pairs(path: &Path, n: usize, offset: usize) {
    let topics = [
        "tea", "rivers", "chess", "gardens", "bicycles", "clouds", "bread", "music",
    ];
    let mut lines = Vec::new();
    for i in offset..offset + n {
        let topic = topics[i % topics.len()];
        let extra = " really".repeat(i % 3);
        lines.push(
            serde_json::json!({
                "prompt": format!("Tell me something{extra} nice about {topic} number {i}."),
                "chosen": format!("Happy to help: {topic} are lovely and{extra} worth a look."),
                "rejected": format!("No. {topic} bore me{extra}."),
            })
            .to_string(),
        );
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A run on the tiny model with random initial weights, in `root`.
pub fn tiny_config(root: &Path) -> TrainConfig {
    let model = root.join("model");
    write_tiny_model_config(&model);
    write_pairs(&root.join("train.jsonl"), 12, 0);
    write_pairs(&root.join("eval.jsonl"), 4, 100);
    TrainConfig {
        output_dir: root.join("out"),
        model_name_or_path: model,
        init_from_config: true,
        tokenizer_name_or_path: Some(tokenizer_dir()),
        train_file: root.join("train.jsonl"),
        eval_file: Some(root.join("eval.jsonl")),
        learning_rate: 1e-2,
        per_device_train_batch_size: 4,
        per_device_eval_batch_size: 4,
        max_steps: 3,
        logging_steps: 1.into(),
        save_steps: 0.into(),
        data: sdpo_data::DataConfig {
            max_length: Some(64),
            ..Default::default()
        },
        ..TrainConfig::default()
    }
}

/// A second model with other random weights (a "different reference"), saved in HF layout
/// with the tokenizer files next to it.
pub fn write_reference_model(root: &Path, seed: u64) -> PathBuf {
    let dir = root.join(format!("ref-{seed}"));
    write_tiny_model_config(&dir);
    let config = sdpo_models::ModelConfig::from_pretrained_dir(&dir).unwrap();
    let model = sdpo_models::CausalLm::from_config(&config, seed, &burn::tensor::Device::flex());
    model.save_pretrained(&dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tokenizer_dir().join(f), dir.join(f)).unwrap();
    }
    dir
}

/// The values of `key` in a list of records, by step.
pub fn series(records: &[sdpo_train::MetricsRecord], key: &str) -> Vec<(usize, f64)> {
    records
        .iter()
        .filter_map(|r| r.values.get(key).map(|v| (r.step, *v)))
        .collect()
}

/// `records` without what depends on the clock: the timing metrics
/// ([`sdpo_train::run_summary::TIMING_METRICS`]) and the end-of-run record (its `train_loss`
/// covers one `train` call, so a resumed run's differs too).
pub fn without_timing(records: &[sdpo_train::MetricsRecord]) -> Vec<sdpo_train::MetricsRecord> {
    records
        .iter()
        .filter(|r| !r.values.contains_key("train_runtime"))
        .map(|r| {
            let mut r = r.clone();
            r.values
                .retain(|k, _| !sdpo_train::run_summary::TIMING_METRICS.contains(&k.as_str()));
            r
        })
        .collect()
}

/// Trains a fresh run to the end and returns its `loss` series.
#[allow(dead_code)]
pub fn run_losses(config: TrainConfig, device: &burn::tensor::Device) -> Vec<f64> {
    use sdpo_train::{SilentObserver, Start, Trainer};
    let mut trainer = Trainer::new(config, device, Start::Fresh, &mut SilentObserver).unwrap();
    let records = trainer.train(None, &mut SilentObserver).unwrap();
    series(&records, "loss")
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// The `eval_loss` of the policy saved in `weights` (a full model or a PEFT adapter).
#[allow(dead_code)]
pub fn eval_loss(config: TrainConfig, device: &burn::tensor::Device, weights: &Path) -> f64 {
    use sdpo_train::{SilentObserver, Start, Trainer};
    let mut trainer = Trainer::new(
        config,
        device,
        Start::PolicyWeights(weights),
        &mut SilentObserver,
    )
    .expect("evaluation trainer");
    trainer.evaluate().unwrap().unwrap().values["eval_loss"]
}

/// `|got - want| <= tol · (1 + |want|)` elementwise; a non-finite value fails.
#[allow(dead_code)]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (g, w) in got.iter().zip(want) {
        assert!(
            g.is_finite() && (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: {got:?} vs {want:?}"
        );
    }
}

/// The key and reason of the configuration error `config` must give on flex.
#[allow(dead_code)]
pub fn config_error_key(config: TrainConfig) -> (String, String) {
    use sdpo_train::{SilentObserver, Start, TrainError, Trainer};
    match Trainer::new(
        config,
        &burn::tensor::Device::flex(),
        Start::Fresh,
        &mut SilentObserver,
    ) {
        Err(TrainError::Config { key, reason }) => (key, reason),
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error, got a trainer"),
    }
}
