//! Shared set-up of the trainer tests: a tiny Llama with SmolLM2's vocabulary, a few
//! preference pairs, and a configuration that trains in seconds.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod trl_run;

/// Collects the trainer's messages (`TrainObserver::on_message`).
#[derive(Default)]
pub struct Messages(pub Vec<String>);

impl sdpo_train::TrainObserver for Messages {
    fn on_message(&mut self, message: &str) {
        self.0.push(message.to_string());
    }
}

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

/// Runs `config` in `<output_dir>-interrupted` until `stop_at` steps and stops, as a killed run
/// would; returns that configuration and its `checkpoint-<stop_at>`.
pub fn interrupted_run(
    config: &TrainConfig,
    device: &burn::tensor::Device,
    stop_at: usize,
) -> (TrainConfig, PathBuf) {
    use sdpo_train::{SilentObserver, Start, Trainer};
    let mut interrupted = config.clone();
    let name = config.output_dir.file_name().expect("an output_dir name");
    interrupted.output_dir = config
        .output_dir
        .with_file_name(format!("{}-interrupted", name.to_string_lossy()));
    let mut trainer = Trainer::new(
        interrupted.clone(),
        device,
        Start::Fresh,
        &mut SilentObserver,
    )
    .unwrap();
    trainer.train(Some(stop_at), &mut SilentObserver).unwrap();
    let checkpoint = interrupted.output_dir.join(format!("checkpoint-{stop_at}"));
    (interrupted, checkpoint)
}

/// Resumes the [`interrupted_run`] from `checkpoint` to the end and returns every record of its
/// `metrics.jsonl` (those before the checkpoint and those after).
pub fn resume_to_end(
    interrupted: &TrainConfig,
    device: &burn::tensor::Device,
    checkpoint: &Path,
) -> Vec<sdpo_train::MetricsRecord> {
    use sdpo_train::{SilentObserver, Start, Trainer};
    let mut resumed = Trainer::new(
        interrupted.clone(),
        device,
        Start::Resume(checkpoint),
        &mut SilentObserver,
    )
    .unwrap();
    let step = checkpoint
        .file_name()
        .and_then(|n| {
            n.to_str()?
                .strip_prefix("checkpoint-")?
                .parse::<usize>()
                .ok()
        })
        .expect("a checkpoint-N directory");
    assert_eq!(
        resumed.global_step(),
        step,
        "the resumed run starts at its checkpoint"
    );
    resumed.train(None, &mut SilentObserver).unwrap();
    sdpo_train::read_metrics_records(&interrupted.output_dir.join("metrics.jsonl")).unwrap()
}

/// A fixture's number, or a panic naming it.
pub fn f64_of(v: &serde_json::Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("fixture: {what} is not a number: {v}"))
}

/// A fixture's integer, or a panic naming it.
pub fn usize_of(v: &serde_json::Value, what: &str) -> usize {
    v.as_u64()
        .unwrap_or_else(|| panic!("fixture: {what} is not an integer: {v}")) as usize
}

/// The fixture's path under `key`, relative to the fixtures folder.
pub fn fixture_path(fixture: &serde_json::Value, key: &str) -> PathBuf {
    sdpo_testkit::fixtures_dir().join(
        fixture[key]
            .as_str()
            .unwrap_or_else(|| panic!("fixture: no {key}")),
    )
}

/// The configuration of a run of TRL's `DPOTrainer` recorded in a fixture (fixtures/README.md
/// sections 11, 13 and 14): every setting read from its `config` by TRL's names (`optim`,
/// `label_smoothing` and `precompute_ref_log_probs` where it has them, `bf16`), the dtype the
/// model was loaded in (`model_dtype`, when given), the model, tokenizer
/// and pairs from `policy_model`, `tokenizer_dir` and `train_file`; no evaluation, no saving.
pub fn trl_fixture_config(fixture: &serde_json::Value, output_dir: &Path) -> TrainConfig {
    let c = &fixture["config"];
    assert_eq!(c["loss_type"], serde_json::json!(["sigmoid"]));
    let mut config = TrainConfig {
        output_dir: output_dir.to_path_buf(),
        model_name_or_path: fixture_path(fixture, "policy_model"),
        tokenizer_name_or_path: Some(fixture_path(fixture, "tokenizer_dir")),
        train_file: fixture_path(fixture, "train_file"),
        eval_file: None,
        learning_rate: f64_of(&c["learning_rate"], "learning_rate"),
        lr_scheduler_type: serde_json::from_value(c["lr_scheduler_type"].clone())
            .expect("lr_scheduler_type"),
        warmup_steps: usize_of(&c["warmup_steps"], "warmup_steps").into(),
        weight_decay: f64_of(&c["weight_decay"], "weight_decay"),
        adam_beta1: f64_of(&c["adam_beta1"], "adam_beta1"),
        adam_beta2: f64_of(&c["adam_beta2"], "adam_beta2"),
        adam_epsilon: f64_of(&c["adam_epsilon"], "adam_epsilon"),
        max_grad_norm: f64_of(&c["max_grad_norm"], "max_grad_norm"),
        per_device_train_batch_size: usize_of(
            &c["per_device_train_batch_size"],
            "per_device_train_batch_size",
        ),
        gradient_accumulation_steps: usize_of(
            &c["gradient_accumulation_steps"],
            "gradient_accumulation_steps",
        ),
        max_steps: c["max_steps"].as_i64().expect("max_steps"),
        seed: c["seed"].as_u64().expect("seed"),
        logging_steps: usize_of(&c["logging_steps"], "logging_steps").into(),
        save_steps: 0.into(),
        bf16: c["bf16"].as_bool().expect("bf16"),
        ..TrainConfig::default()
    };
    if let Some(dtype) = fixture.get("model_dtype") {
        config.dtype = serde_json::from_value(dtype.clone()).expect("model_dtype");
    }
    if let Some(optim) = c.get("optim") {
        config.optim = serde_json::from_value(optim.clone()).expect("optim");
    }
    if let Some(precompute) = c.get("precompute_ref_log_probs") {
        config.precompute_ref_log_probs = precompute.as_bool().expect("precompute_ref_log_probs");
    }
    config.loss.loss_type = sdpo_core::LossTypes::One(sdpo_core::LossType::Sigmoid);
    config.loss.beta = f64_of(&c["beta"], "beta");
    if let Some(smoothing) = c.get("label_smoothing") {
        config.loss.label_smoothing = f64_of(smoothing, "label_smoothing");
    }
    config.data.max_length = Some(usize_of(&c["max_length"], "max_length"));
    config.data.truncation_mode =
        Some(serde_json::from_value(c["truncation_mode"].clone()).expect("truncation_mode"));
    config
}
