//! Nothing bad reaches the weights, the checkpoints or the numbers: diverging steps, NaN
//! metrics, changed configurations on resume, models that do not fit the data, corrupted files,
//! `reference_free`, weight decay.

mod common;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use common::{Messages, tiny_config, tokenizer_dir, write_tiny_model_config};
use sdpo_models::CausalLm;
use sdpo_train::MetricsFile;
use sdpo_train::checkpoint::checkpoint_dir;
use sdpo_train::{
    MetricsRecord, SilentObserver, Start, TrainConfig, TrainError, Trainer, read_metrics_records,
};

struct Flatten(Vec<f32>);

impl ModuleVisitor for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let values = param.val().into_data().try_to_vec::<f32>().unwrap();
        self.0.extend(values);
    }
}

/// Every weight of a model, in visiting order.
fn weights<M: Module>(model: &M) -> Vec<f32> {
    let mut v = Flatten(Vec::new());
    model.visit(&mut v);
    v.0
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn new_trainer(config: &TrainConfig, start: Start<'_>) -> Result<Trainer, TrainError> {
    Trainer::new(config.clone(), &Device::flex(), start, &mut SilentObserver)
}

fn trained_checkpoint(root: &Path) -> (TrainConfig, PathBuf) {
    let mut config = tiny_config(root);
    config.max_steps = 4;
    config.save_steps = 2.into();
    let mut trainer = new_trainer(&config, Start::Fresh).unwrap();
    trainer.train(Some(2), &mut SilentObserver).unwrap();
    (config.clone(), checkpoint_dir(&config.output_dir, 2))
}

#[test]
fn a_diverging_run_stops_before_the_update_and_its_last_checkpoint_resumes() {
    // The reproduction on the tiny model: a learning rate of 1e12 makes the weights
    // explode within a few steps.
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    config.learning_rate = 1e12;
    config.max_steps = 12;
    config.save_steps = 1.into();
    let mut trainer = new_trainer(&config, Start::Fresh).unwrap();
    let mut failure = None;
    let mut before = Vec::new();
    for _ in 0..12 {
        before = weights(trainer.policy());
        match trainer.train(Some(1), &mut SilentObserver) {
            Ok(_) => {}
            Err(TrainError::NonFinite {
                step,
                quantity,
                value,
            }) => {
                failure = Some((step, quantity, value));
                break;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    let (step, quantity, value) = failure.expect("a learning rate of 1e12 must diverge");
    assert!(!value.is_finite(), "{quantity} = {value}");
    assert!(step >= 2, "the first step starts from finite weights");
    println!("diverged at step {step} on {quantity} = {value}");
    // The failed step did not touch the weights.
    assert_eq!(bits(&weights(trainer.policy())), bits(&before));
    assert!(before.iter().all(|v| v.is_finite()));
    // No checkpoint of the failed step, no final model; the last checkpoint resumes.
    assert!(!checkpoint_dir(&config.output_dir, step).exists());
    assert!(!config.output_dir.join("model.safetensors").exists());
    let last = checkpoint_dir(&config.output_dir, step - 1);
    let resumed = new_trainer(&config, Start::Resume(&last)).unwrap();
    assert_eq!(resumed.global_step(), step - 1);
    assert_eq!(bits(&weights(resumed.policy())), bits(&before));
    // The metrics written so far read back.
    let records = read_metrics_records(&config.output_dir.join(MetricsFile::NAME)).unwrap();
    assert_eq!(records.last().map(|r| r.step), Some(step - 1));
}

#[test]
fn non_finite_metrics_are_written_as_null_and_read_back_as_nan() {
    let tmp = tempfile::tempdir().unwrap();
    let mut file = MetricsFile::open(tmp.path(), None).unwrap();
    let record = MetricsRecord {
        step: 3,
        epoch: 0.5,
        values: [
            ("eval_loss".to_string(), f64::NAN),
            ("eval_rewards/margins".to_string(), f64::INFINITY),
            ("eval_rewards/accuracies".to_string(), 0.75),
        ]
        .into_iter()
        .collect(),
    };
    file.append(&record).unwrap();
    drop(file);
    let path = tmp.path().join(MetricsFile::NAME);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("null"), "{text}");
    let back = read_metrics_records(&path).unwrap();
    assert_eq!(back.len(), 1);
    assert!(back[0].values["eval_loss"].is_nan());
    assert!(back[0].values["eval_rewards/margins"].is_nan());
    assert_eq!(back[0].values["eval_rewards/accuracies"], 0.75);
    // Resuming keeps such records.
    MetricsFile::open(tmp.path(), Some(3)).unwrap();
    assert_eq!(read_metrics_records(&path).unwrap().len(), 1);

    // A record cut short by a kill (no newline) is left out; a bad line elsewhere is an error.
    std::fs::write(&path, format!("{}{{\"step\": 4, \"ep", text)).unwrap();
    assert_eq!(read_metrics_records(&path).unwrap().len(), 1);
    std::fs::write(&path, format!("garbage\n{text}")).unwrap();
    let err = read_metrics_records(&path).unwrap_err().to_string();
    assert!(
        err.contains("line 1") && err.contains("metrics.jsonl"),
        "{err}"
    );
    std::fs::write(&path, "{\"step\": 1, \"epoch\": 0.1, \"loss\": \"high\"}\n").unwrap();
    let err = read_metrics_records(&path).unwrap_err().to_string();
    assert!(err.contains("loss"), "{err}");
}

#[test]
fn resume_refuses_changes_to_the_loss_or_data_and_warns_on_others() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, checkpoint) = trained_checkpoint(tmp.path());

    let mut changed = config.clone();
    changed.loss.beta = 0.5;
    changed.data.max_length = Some(32);
    changed.seed = 7;
    let err = new_trainer(&changed, Start::Resume(&checkpoint)).unwrap_err();
    let text = err.to_string();
    for key in ["beta", "max_length", "seed"] {
        assert!(text.contains(&format!("`{key}`")), "{key} missing: {text}");
    }
    assert!(matches!(err, TrainError::ConfigChanged { .. }), "{err:?}");

    let mut cosmetic = config.clone();
    cosmetic.logging_steps = 5.into();
    cosmetic.eval_steps = Some(3.into());
    let mut messages = Messages::default();
    Trainer::new(
        cosmetic,
        &Device::flex(),
        Start::Resume(&checkpoint),
        &mut messages,
    )
    .expect("logging and eval cadence may change");
    let warnings = messages.0.join("\n");
    assert!(
        warnings.contains("logging_steps") && warnings.contains("eval_steps"),
        "{warnings}"
    );
}

/// A model of the tiny architecture with a vocabulary too small for SmolLM2's tokenizer.
fn write_small_vocab_model(dir: &Path) {
    write_tiny_model_config(dir);
    let path = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["vocab_size"] = 1000.into();
    std::fs::write(&path, json.to_string()).unwrap();
    let config = sdpo_models::ModelConfig::from_pretrained_dir(dir).unwrap();
    CausalLm::from_config(&config, 3, &Device::flex())
        .save_pretrained(dir)
        .unwrap();
}

#[test]
fn a_checkpoint_with_a_smaller_vocabulary_is_refused_on_resume_and_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, checkpoint) = trained_checkpoint(tmp.path());
    // Evaluation of a model that cannot embed the tokenizer's ids.
    let small = tmp.path().join("small");
    write_small_vocab_model(&small);
    let err = new_trainer(&config, Start::PolicyWeights(&small)).unwrap_err();
    let chain = format!("{err}: {:?}", err);
    assert!(
        chain.contains("vocab_size 1000") && chain.contains("small"),
        "{chain}"
    );
    // Resuming a checkpoint whose weights were swapped for such a model (no manifest to catch
    // it first).
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(small.join(file), checkpoint.join(file)).unwrap();
    }
    std::fs::remove_file(checkpoint.join("manifest.json")).unwrap();
    let err = new_trainer(&config, Start::Resume(&checkpoint)).unwrap_err();
    assert!(format!("{err:?}").contains("vocab_size 1000"), "{err:?}");
}

#[test]
fn a_flipped_byte_or_a_truncated_file_in_a_checkpoint_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, checkpoint) = trained_checkpoint(tmp.path());
    for file in [
        "model.safetensors",
        "optimizer.bpk",
        "trainer_state.json",
        "config.json",
    ] {
        for damage in ["flip", "truncate"] {
            let copy = tmp.path().join(format!("damaged-{file}-{damage}"));
            copy_dir(&checkpoint, &copy);
            damage_file(&copy.join(file), damage);
            let err = new_trainer(&config, Start::Resume(&copy)).unwrap_err();
            match &err {
                TrainError::CorruptCheckpoint { file: named, .. } => {
                    assert_eq!(named, file, "{err}")
                }
                other => panic!("{file} ({damage}): expected CorruptCheckpoint, got {other:?}"),
            }
        }
    }
    // The undamaged checkpoint verifies and resumes.
    new_trainer(&config, Start::Resume(&checkpoint)).unwrap();
}

#[test]
fn damaged_files_without_a_manifest_are_typed_errors_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, checkpoint) = trained_checkpoint(tmp.path());
    std::fs::remove_file(checkpoint.join("manifest.json")).unwrap();
    let mut messages = Messages::default();
    Trainer::new(
        config.clone(),
        &Device::flex(),
        Start::Resume(&checkpoint),
        &mut messages,
    )
    .expect("an old checkpoint without a manifest still resumes");
    assert!(
        messages.0.iter().any(|m| m.contains("no manifest.json")),
        "{:?}",
        messages.0
    );
    for (file, damage) in [
        ("optimizer.bpk", "truncate"),
        ("optimizer.bpk", "garbage"),
        ("trainer_state.json", "truncate"),
        ("model.safetensors", "truncate"),
        ("model.safetensors", "header"),
    ] {
        let copy = tmp.path().join(format!("old-{file}-{damage}"));
        copy_dir(&checkpoint, &copy);
        damage_file(&copy.join(file), damage);
        let err = new_trainer(&config, Start::Resume(&copy))
            .err()
            .unwrap_or_else(|| panic!("{file} ({damage}) was accepted"));
        let text = format!("{err} {err:?}");
        assert!(text.contains(file), "{file} ({damage}): {text}");
    }
    // A corrupted metrics file is refused when the run resumes and appends to it.
    let metrics = config.output_dir.join(MetricsFile::NAME);
    let good = std::fs::read_to_string(&metrics).unwrap();
    std::fs::write(&metrics, format!("not json\n{good}")).unwrap();
    let mut trainer = new_trainer(&config, Start::Resume(&checkpoint)).unwrap();
    let err = trainer.train(Some(1), &mut SilentObserver).unwrap_err();
    assert!(err.to_string().contains("metrics.jsonl"), "{err}");
}

/// Rewrites the optimizer state of `checkpoint` with `edit` applied to its tensors (scalars and
/// parameter paths kept) and removes the manifest, as a hand-edited checkpoint would look.
fn edit_optimizer_state(checkpoint: &Path, edit: impl FnOnce(&mut Vec<burn_pack::Tensor>)) {
    let path = checkpoint.join("optimizer.bpk");
    let reader = burn_pack::Reader::from_file(&path).unwrap();
    let scalars = reader.scalars().clone();
    let metadata = reader.metadata().clone();
    let mut tensors: Vec<burn_pack::Tensor> = reader
        .into_tensors()
        .unwrap()
        .into_iter()
        .map(|tensor| {
            let (name, dtype, shape, id, bytes) = tensor.into_parts().unwrap();
            let bytes = burn::tensor::Bytes::from_bytes_vec(bytes.to_vec());
            burn_pack::Tensor::new(name, dtype, shape, id, bytes)
        })
        .collect();
    edit(&mut tensors);
    let mut writer = burn_pack::Writer::new(tensors).overwrite(true);
    for (key, value) in &scalars {
        writer = writer.with_scalar(key, *value);
    }
    for (key, value) in &metadata {
        writer = writer.with_metadata(key, value);
    }
    writer.write_to_file(&path).unwrap();
    let _ = std::fs::remove_file(checkpoint.join("manifest.json"));
}

/// The optimizer-state error of resuming `checkpoint` with `config`.
fn optimizer_state_error(config: &TrainConfig, checkpoint: &Path) -> String {
    match new_trainer(config, Start::Resume(checkpoint)) {
        Err(err @ TrainError::Optimizer { .. }) => err.to_string(),
        Err(other) => panic!("expected an optimizer-state error, got {other:?}"),
        Ok(_) => panic!("an edited optimizer state was accepted"),
    }
}

#[test]
fn an_edited_optimizer_state_is_refused_naming_the_parameter_before_any_update() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, checkpoint) = trained_checkpoint(tmp.path());
    // A moment one row short of its matrix (burn's loader takes it; the update would fail).
    let copy = tmp.path().join("short-moment");
    copy_dir(&checkpoint, &copy);
    edit_optimizer_state(&copy, |tensors| {
        let tensor = tensors
            .iter_mut()
            .find(|t| t.name.ends_with("momentum.moment_1") && t.shape.num_dims() == 2)
            .expect("a matrix's first moment");
        let (name, dtype, shape, id, bytes) = tensor.clone().into_parts().unwrap();
        let dims = shape.to_vec();
        let row = dims[1] * dtype.size();
        let kept = bytes[..bytes.len() - row].to_vec();
        *tensor = burn_pack::Tensor::new(
            name,
            dtype,
            [dims[0] - 1, dims[1]],
            id,
            burn::tensor::Bytes::from_bytes_vec(kept),
        );
    });
    let err = optimizer_state_error(&config, &copy);
    assert!(
        err.contains("momentum.moment_1") && err.contains("shape") && err.contains("optimizer.bpk"),
        "{err}"
    );
    // A state without its second moment (burn's loader would restart it from zero).
    let copy = tmp.path().join("missing-leaf");
    copy_dir(&checkpoint, &copy);
    edit_optimizer_state(&copy, |tensors| {
        let at = tensors
            .iter()
            .position(|t| t.name.ends_with("momentum.moment_2"))
            .expect("a second moment");
        tensors.remove(at);
    });
    let err = optimizer_state_error(&config, &copy);
    assert!(err.contains("leaves") && err.contains("moment_1"), "{err}");

    // 8-bit AdamW (on the Llama of its golden, whose matrices are large enough for 8-bit
    // states): block maxima one short of the blocks (the update would index past them).
    let fixture = common::trl_run::json("adamw_8bit/trl.json");
    let mut config = common::trl_fixture_config(&fixture, &tmp.path().join("8bit"));
    assert_eq!(config.optim, sdpo_train::Optimizer::Adamw8bit);
    config.max_steps = 4;
    config.save_steps = 2.into();
    new_trainer(&config, Start::Fresh)
        .unwrap()
        .train(Some(2), &mut SilentObserver)
        .unwrap();
    let checkpoint = checkpoint_dir(&config.output_dir, 2);
    edit_optimizer_state(&checkpoint, |tensors| {
        let tensor = tensors
            .iter_mut()
            .find(|t| t.name.ends_with("v_absmax"))
            .expect("an 8-bit state");
        let (name, dtype, shape, id, bytes) = tensor.clone().into_parts().unwrap();
        let blocks = shape.to_vec()[0];
        let kept = bytes[..bytes.len() - dtype.size()].to_vec();
        *tensor = burn_pack::Tensor::new(
            name,
            dtype,
            [blocks - 1],
            id,
            burn::tensor::Bytes::from_bytes_vec(kept),
        );
    });
    let err = optimizer_state_error(&config, &checkpoint);
    assert!(err.contains("v_absmax") && err.contains("shape"), "{err}");
}

#[test]
fn reference_free_loads_and_runs_no_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    config.loss.reference_free = true;
    config.loss.loss_type = sdpo_core::LossTypes::One(sdpo_core::LossType::Sigmoid);
    config.max_steps = 1;
    // A reference path that does not exist: loading it would fail.
    config.ref_model_name_or_path = Some(tmp.path().join("no-such-model"));
    let mut messages = Messages::default();
    let mut trainer =
        Trainer::new(config, &Device::flex(), Start::Fresh, &mut messages).expect("no reference");
    assert!(
        messages.0.iter().any(|m| m.contains("not loaded")),
        "{:?}",
        messages.0
    );
    let records = trainer.train(None, &mut SilentObserver).unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.values.values().all(|v| v.is_finite()))
    );
}

#[test]
fn weight_decay_spares_biases_and_normalisation_weights() {
    use burn::optim::GradientsParams;
    // Qwen2 has q/k/v biases and RMSNorm weights.
    let dir = sdpo_testkit::fixtures_dir().join("models/qwen2");
    let model = CausalLm::from_pretrained(&dir, &Device::flex()).unwrap();
    let spared = sdpo_train::optimizer::no_decay_parameter_names(&model);
    let layers = model.config().num_hidden_layers;
    // Per layer: input and post-attention norms, q/k/v biases; plus the final norm.
    assert_eq!(spared.len(), 5 * layers + 1, "{spared:?}");
    assert!(
        spared
            .iter()
            .all(|n| n.ends_with(".bias") || n.contains("norm")),
        "{spared:?}"
    );

    // One AdamW step with zero gradients: decayed weights shrink by (1 - lr * wd), the spared
    // ones do not move.
    let device = Device::flex().autodiff();
    let model = model.fork(&device).train();
    let config = TrainConfig {
        weight_decay: 0.5,
        ..TrainConfig::default()
    };
    let mut optimizer = sdpo_train::optimizer::adamw(&config, &model);
    struct ZeroGrads(GradientsParams);
    impl ModuleVisitor for ZeroGrads {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.register(param.id, param.val().zeros_like().inner());
        }
    }
    let mut zeros = ZeroGrads(GradientsParams::new());
    model.visit(&mut zeros);
    let before = weights(&model);
    let after_model = optimizer.step(0.1, model.clone(), zeros.0);
    let after = weights(&after_model);
    let mut decayed = 0;
    let mut kept = 0;
    for (b, a) in before.iter().zip(&after) {
        if a == b {
            kept += 1;
        } else {
            decayed += 1;
            assert!(
                (a - b * 0.95).abs() <= 1e-6 * b.abs().max(1e-3),
                "{b} -> {a}"
            );
        }
    }
    assert!(decayed > 0 && kept > 0, "decayed {decayed}, kept {kept}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Damages a file: flips a byte in its middle, cuts it in half, replaces it with garbage, or
/// (safetensors) declares a tensor at a huge offset.
fn damage_file(path: &Path, how: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        "flip" => {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x5a;
        }
        "truncate" => bytes.truncate(bytes.len() / 2),
        "garbage" => bytes = b"definitely not a burnpack file".repeat(7),
        "header" => {
            let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let header = String::from_utf8(bytes[8..8 + len].to_vec()).unwrap();
            let mut json: serde_json::Value = serde_json::from_str(&header).unwrap();
            for (name, entry) in json.as_object_mut().unwrap() {
                if name != "__metadata__" {
                    entry["data_offsets"] = serde_json::json!([0u64, u64::MAX / 2]);
                    break;
                }
            }
            let new_header = json.to_string();
            let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
            out.extend(new_header.as_bytes());
            out.extend(&bytes[8 + len..]);
            bytes = out;
        }
        other => panic!("unknown damage {other}"),
    }
    std::fs::write(path, bytes).unwrap();
}

/// `bytes` (a safetensors file) with one field of its `__metadata__` replaced.
fn with_metadata_field(bytes: &[u8], field: &str, value: &str) -> Vec<u8> {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut json: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    json["__metadata__"][field] = serde_json::Value::from(value);
    let header = json.to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(&bytes[8 + len..]);
    out
}

#[test]
fn a_corrupted_reference_cache_is_an_error_naming_it_and_is_recomputed() {
    use sdpo_train::reference::cache;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    config.precompute_ref_log_probs = true;
    config.max_steps = 1;
    new_trainer(&config, Start::Fresh).unwrap();
    let dir = cache::cache_dir(&config.output_dir);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("train-")
        })
        .unwrap();
    let good = std::fs::read(&file).unwrap();
    let (header, pairs) = cache::read(&file).unwrap();
    assert_eq!(header.pair_count, pairs.len());
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("trailing bytes", [good.as_slice(), &[1, 2, 3]].concat()),
        ("old format", [b"SDPOREF1".as_slice(), &good[8..]].concat()),
        (
            "more pairs declared",
            with_metadata_field(&good, "pair_count", "1000000000"),
        ),
        (
            "pairs outside the split",
            with_metadata_field(&good, "first_pair", "5"),
        ),
        (
            "a part that is not its key's",
            with_metadata_field(&good, "reference", "0"),
        ),
        (
            "another format version",
            with_metadata_field(&good, "format_version", "3"),
        ),
    ];
    let mut huge_header = good.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("huge header length", huge_header));
    let mut nan = pairs.clone();
    nan[0].0[0] = f32::NAN;
    cache::write(&file, &header, &nan).unwrap();
    cases.push(("NaN", std::fs::read(&file).unwrap()));
    for (what, bytes) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let err = cache::read(&file).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{what}: {err}");
        if what == "old format" {
            assert!(
                err.contains("SDPOREF1") && err.contains("recompute"),
                "{err}"
            );
        }
        // The trainer reports it and recomputes instead of failing.
        let mut messages = Messages::default();
        Trainer::new(config.clone(), &Device::flex(), Start::Fresh, &mut messages).unwrap();
        assert!(
            messages.0.iter().any(|m| m.contains("recomputing")),
            "{what}: {:?}",
            messages.0
        );
        let (_, recomputed) = cache::read(&file).expect("recomputed cache");
        assert_eq!(recomputed, pairs, "{what}");
    }
    let _ = tokenizer_dir();
}
