//! LoRA adapters beyond the PEFT goldens: save → load round trips, merge → save → load,
//! attaching (a new adapter leaves the model unchanged; only A/B train; the frozen base
//! survives `valid` / `fork` / `train` and an optimizer step), dropout, and typed errors for
//! hostile adapter directories and settings.

mod common;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use common::{Golden, host, max_abs_diff, model_dir, read_raw, write_raw};
use sdpo_models::lora::{InitLoraWeights, LoraConfig, TargetModules, resolve_adapter_base};
use sdpo_models::{CausalLm, ModelError};
use serde_json::Value;

fn adapter_dir(name: &str) -> PathBuf {
    sdpo_testkit::fixtures_dir().join("lora").join(name)
}

/// The base of an adapter fixture, from its `golden.json`.
fn fixture_base(name: &str) -> PathBuf {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(adapter_dir(name).join("golden.json")).unwrap(),
    )
    .unwrap();
    sdpo_testkit::fixtures_dir().join(golden["base_model_dir"].as_str().unwrap())
}

fn logits(model: &CausalLm, golden_of: &str, device: &Device) -> Vec<f32> {
    let golden = Golden::open(&model_dir(golden_of).join("golden.safetensors"));
    host(model.forward(
        golden.int_tensor("input_ids", device),
        golden.int_tensor("attention_mask", device),
    ))
}

/// A copy of an adapter fixture directory that a test may damage.
fn copy_adapter(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(adapter_dir(name).join(file), tmp.path().join(file)).unwrap();
    }
    tmp
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("adapter_config.json");
    let mut json: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

#[test]
fn saved_adapters_are_peft_files_and_load_back_to_the_same_logits() {
    let mut checked = 0;
    for dev in sdpo_testkit::test_devices!() {
        for name in ["llama_r4", "qwen2_r8_rslora"] {
            let base = fixture_base(name);
            let base_name = base.file_name().unwrap().to_str().unwrap().to_string();
            let model = CausalLm::from_pretrained(&base, &dev.device)
                .and_then(|m| m.load_adapter(adapter_dir(name)))
                .unwrap();
            let out = tempfile::tempdir().unwrap();
            model.save_adapter(out.path(), Some("some/base")).unwrap();

            // The same tensors, bit for bit, under the same keys as PEFT's file.
            let peft = read_raw(&adapter_dir(name).join("adapter_model.safetensors"));
            let ours = read_raw(&out.path().join("adapter_model.safetensors"));
            assert_eq!(
                peft.keys().collect::<Vec<_>>(),
                ours.keys().collect::<Vec<_>>(),
                "{name}: keys"
            );
            for (key, t) in &peft {
                assert_eq!(ours[key].shape, t.shape, "{name}/{key}");
                assert!(ours[key].data == t.data, "{name}/{key}: values differ");
            }
            // The config round-trips to the same settings.
            let (theirs, _) =
                sdpo_models::lora::LoraConfig::from_adapter_config(&adapter_dir(name)).unwrap();
            let (mine, info) =
                sdpo_models::lora::LoraConfig::from_adapter_config(out.path()).unwrap();
            assert_eq!(info.base_model_name_or_path.as_deref(), Some("some/base"));
            assert_eq!(mine.r, theirs.r);
            assert_eq!(mine.lora_alpha, theirs.lora_alpha);
            assert_eq!(mine.use_rslora, theirs.use_rslora);

            let reloaded = CausalLm::from_pretrained(&base, &dev.device)
                .and_then(|m| m.load_adapter(out.path()))
                .unwrap();
            let a = logits(&model, &base_name, &dev.device);
            let b = logits(&reloaded, &base_name, &dev.device);
            assert_eq!(max_abs_diff(&a, &b), 0.0, "[{}] {name}: reloaded", dev.name);
            checked += 1;
        }
    }
    println!("checked {checked} save/load round trips");
}

#[test]
fn merged_model_saves_as_a_plain_checkpoint_with_the_merged_logits() {
    for dev in sdpo_testkit::test_devices!() {
        for name in ["llama_r4", "qwen2_r8_rslora"] {
            let base = fixture_base(name);
            let model = CausalLm::from_pretrained(&base, &dev.device)
                .and_then(|m| m.load_adapter(adapter_dir(name)))
                .unwrap();
            // An adapted model is not saved as a checkpoint: the adapter would be lost.
            let out = tempfile::tempdir().unwrap();
            assert!(matches!(
                model.save_pretrained(out.path()),
                Err(ModelError::AdapterNotMerged)
            ));
            model
                .clone()
                .merge_adapters()
                .save_pretrained(out.path())
                .unwrap();
            let plain = CausalLm::from_pretrained(out.path(), &dev.device).unwrap();
            assert!(plain.adapter().is_none());
            let golden = Golden::open(&adapter_dir(name).join("golden.safetensors"));
            let got = host(plain.forward(
                golden.int_tensor("input_ids", &dev.device),
                golden.int_tensor("attention_mask", &dev.device),
            ));
            let (want, _) = golden.f32("logits_merged");
            let d = max_abs_diff(&got, &want);
            assert!(
                d <= 1e-4,
                "[{}] {name}: merged checkpoint differs by {d}",
                dev.name
            );
        }
    }
}

/// What sdpo-train's `assign_param_ids` does to each parameter (`consume`, then
/// `from_mapped_value`), here with the same id.
struct RebuildParams;

impl ModuleMapper for RebuildParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        Param::from_mapped_value(id, value, mapper)
    }
}

#[test]
fn new_adapters_start_as_the_base_and_only_a_and_b_train() {
    for dev in sdpo_testkit::test_devices!() {
        for (base, targets, layers) in [
            ("llama", TargetModules::AllLinear, 14),
            (
                "qwen2",
                TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]),
                4,
            ),
            ("gpt2", TargetModules::Names(vec!["c_attn".into()]), 2),
        ] {
            let config = LoraConfig {
                target_modules: Some(targets),
                lora_dropout: 0.0,
                ..LoraConfig::new(4, 8.0)
            };
            // Attached on the plain device and moved to training as the trainer does.
            let plain = CausalLm::from_pretrained(model_dir(base), &dev.device).unwrap();
            let before = logits(&plain, base, &dev.device);
            let adapted = plain.attach_lora(&config, 3).unwrap();
            assert_eq!(
                adapted.lora_branches().len(),
                layers,
                "{base}: adapted layers"
            );
            // B = 0: the new adapter does not change the model.
            assert_eq!(
                max_abs_diff(&logits(&adapted, base, &dev.device), &before),
                0.0
            );

            let train = dev.device.clone().autodiff();
            let mut policy = adapted.fork(&train).train();
            let golden = Golden::open(&model_dir(base).join("golden.safetensors"));
            let ids = golden.int_tensor("input_ids", &train);
            let mask = golden.int_tensor("attention_mask", &train);
            let mut optimizer = AdamWConfig::new().init();
            for step in 0..2 {
                let loss = policy.forward(ids.clone(), mask.clone()).square().mean();
                let grads = GradientsParams::from_grads(loss.backward(), &policy);
                // Frozen base: gradients (hence AdamW state) for A and B only.
                assert_eq!(grads.len(), 2 * layers, "{base} step {step}: gradients");
                policy = optimizer.step(1e-2, policy, grads);
                // Rebuilding every parameter from its parts as sdpo-train's `assign_param_ids`
                // does on resume, then valid → fork → train (eval, resume) keeps the base frozen.
                policy = policy.map(&mut RebuildParams).valid().fork(&train).train();
            }
            let trained = policy.valid();
            // The base is untouched: disabling the adapter gives the original logits exactly.
            assert_eq!(
                max_abs_diff(
                    &logits(&trained.without_adapters(), base, &dev.device),
                    &before
                ),
                0.0,
                "[{}] {base}: base changed",
                dev.name
            );
            let on = logits(&trained, base, &dev.device);
            assert!(
                max_abs_diff(&on, &before) > 1e-4,
                "{base}: adapter did not train"
            );
            // Merging folds the trained adapter in: same logits, within rounding.
            let merged = logits(&trained.clone().merge_adapters(), base, &dev.device);
            assert!(max_abs_diff(&merged, &on) <= 1e-4, "{base}: merged");
            // A saved trained adapter loads back to the same logits.
            let out = tempfile::tempdir().unwrap();
            trained.save_adapter(out.path(), None).unwrap();
            let reloaded = CausalLm::from_pretrained(model_dir(base), &dev.device)
                .and_then(|m| m.load_adapter(out.path()))
                .unwrap();
            assert_eq!(
                max_abs_diff(&logits(&reloaded, base, &dev.device), &on),
                0.0
            );
        }
    }
}

#[test]
fn same_seed_same_adapter_and_dropout_only_in_training() {
    for dev in sdpo_testkit::test_devices!() {
        let config = LoraConfig {
            init_lora_weights: InitLoraWeights::Random,
            lora_dropout: 0.5,
            ..LoraConfig::new(4, 8.0)
        };
        let base = || CausalLm::from_pretrained(model_dir("llama"), &dev.device).unwrap();
        let a = base().attach_lora(&config, 11).unwrap();
        let b = base().attach_lora(&config, 11).unwrap();
        let c = base().attach_lora(&config, 12).unwrap();
        let (la, lb, lc) = (
            logits(&a, "llama", &dev.device),
            logits(&b, "llama", &dev.device),
            logits(&c, "llama", &dev.device),
        );
        assert_eq!(max_abs_diff(&la, &lb), 0.0, "same seed");
        assert!(max_abs_diff(&la, &lc) > 0.0, "different seeds");
        // Plain device (inference, the reference): no dropout, deterministic (checked above).
        // Autodiff device (training): the branch input is dropped at random.
        let train = dev.device.clone().autodiff();
        let t = a.fork(&train).train();
        let l1 = logits(&t, "llama", &train);
        let l2 = logits(&t, "llama", &train);
        assert!(max_abs_diff(&l1, &l2) > 0.0, "dropout in training");
    }
}

#[test]
fn hostile_adapters_and_settings_give_typed_errors() {
    let device = Device::flex();
    let base = || CausalLm::from_pretrained(model_dir("llama"), &device).unwrap();
    let key = "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight";

    // Missing tensor.
    let dir = copy_adapter("llama_r4");
    let path = dir.path().join("adapter_model.safetensors");
    let mut tensors = read_raw(&path);
    let removed = tensors.remove(key).unwrap();
    write_raw(&path, &tensors);
    match base().load_adapter(dir.path()) {
        Err(ModelError::MissingTensors { names, .. }) => assert_eq!(names, vec![key]),
        other => panic!("missing tensor: {other:?}"),
    }
    // Unexpected tensor.
    tensors.insert(key.into(), removed.clone());
    tensors.insert(
        "base_model.model.lm_head.lora_A.weight".into(),
        removed.clone(),
    );
    write_raw(&path, &tensors);
    match base().load_adapter(dir.path()) {
        Err(ModelError::UnexpectedTensors { names, .. }) => {
            assert_eq!(names, vec!["base_model.model.lm_head.lora_A.weight"])
        }
        other => panic!("unexpected tensor: {other:?}"),
    }
    // Wrong shape.
    tensors.remove("base_model.model.lm_head.lora_A.weight");
    let mut wrong = removed.clone();
    wrong.shape.reverse();
    tensors.insert(key.into(), wrong);
    write_raw(&path, &tensors);
    match base().load_adapter(dir.path()) {
        Err(ModelError::WrongShapes { mismatches, .. }) => {
            assert_eq!(mismatches.len(), 1);
            assert_eq!(mismatches[0].name, key);
        }
        other => panic!("wrong shape: {other:?}"),
    }

    // Unknown target module: the error lists the model's linear layers.
    let dir = copy_adapter("llama_r4");
    edit_config(dir.path(), |c| {
        c.insert(
            "target_modules".into(),
            serde_json::json!(["q_proj", "qkv_proj"]),
        );
    });
    let loaded = base().load_adapter(dir.path());
    if let Err(err) = &loaded {
        assert!(
            err.to_string().contains("adapter_config.json"),
            "names the file: {err}"
        );
    }
    match loaded.map_err(ModelError::without_file) {
        Err(ModelError::UnknownTargetModules {
            unknown, available, ..
        }) => {
            assert_eq!(unknown, vec!["qkv_proj"]);
            assert_eq!(
                available,
                [
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "gate_proj",
                    "up_proj",
                    "down_proj"
                ]
            );
        }
        other => panic!("unknown target: {other:?}"),
    }
    let config = LoraConfig {
        target_modules: Some(TargetModules::Names(vec!["c_attn".into()])),
        ..LoraConfig::default()
    };
    assert!(matches!(
        base().attach_lora(&config, 0),
        Err(ModelError::UnknownTargetModules { .. })
    ));

    // LoRA on biases, other PEFT methods: refused, naming the option.
    for (key, value) in [
        ("bias", serde_json::json!("all")),
        ("peft_type", serde_json::json!("IA3")),
        ("layers_to_transform", serde_json::json!([0])),
        ("init_lora_weights", serde_json::json!("pissa")),
    ] {
        let dir = copy_adapter("llama_r4");
        edit_config(dir.path(), |c| {
            c.insert(key.into(), value.clone());
        });
        match base()
            .load_adapter(dir.path())
            .map_err(ModelError::without_file)
        {
            Err(ModelError::UnsupportedLora { option, .. }) => {
                assert!(option.starts_with(key), "{key}: {option}")
            }
            Err(ModelError::InvalidLoraConfig { key: named, .. }) if key == "init_lora_weights" => {
                assert_eq!(named, key)
            }
            other => panic!("{key} = {value}: {other:?}"),
        }
    }
    // `use_dora` on a plain LoRA file: every magnitude is missing, and named (tests/dora.rs
    // covers DoRA itself).
    let dir = copy_adapter("llama_r4");
    edit_config(dir.path(), |c| {
        c.insert("use_dora".into(), serde_json::json!(true));
    });
    match base().load_adapter(dir.path()) {
        Err(ModelError::MissingTensors { names, .. }) => {
            assert_eq!(names.len(), 14, "{names:?}");
            assert!(names.iter().all(|n| n.ends_with(".lora_magnitude_vector")));
        }
        other => panic!("use_dora on a LoRA file: {other:?}"),
    }
    let rank_zero = LoraConfig::new(0, 8.0);
    assert!(matches!(
        base().attach_lora(&rank_zero, 0),
        Err(ModelError::InvalidLoraConfig { .. })
    ));

    // One adapter at a time; the base of an adapter must be a local directory.
    let adapted = base().load_adapter(adapter_dir("llama_r4")).unwrap();
    assert!(matches!(
        adapted.load_adapter(adapter_dir("llama_r4")),
        Err(ModelError::AdapterAlreadyAttached { .. })
    ));
    let dir = copy_adapter("llama_r4");
    edit_config(dir.path(), |c| {
        c.insert(
            "base_model_name_or_path".into(),
            "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
        );
    });
    assert!(matches!(
        resolve_adapter_base(dir.path(), None),
        Err(ModelError::AdapterBaseNotLocal { .. })
    ));
    assert_eq!(
        resolve_adapter_base(dir.path(), Some(Path::new("/some/base"))).unwrap(),
        PathBuf::from("/some/base")
    );
    // No adapter to save.
    assert!(matches!(
        base().save_adapter(dir.path(), None),
        Err(ModelError::NoAdapter)
    ));
    println!("checked 16 hostile inputs");
}
