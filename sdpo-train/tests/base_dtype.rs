//! `dtype` (TRL's `ModelConfig.dtype`): with `use_peft` the frozen base is held in the lower
//! dtype, which is exactly training on a checkpoint whose matrices were rounded to it; `"auto"`
//! reads the checkpoint's own; full fine-tuning trains the weights in the dtype (its goldens
//! are in bf16_weights.rs); a bad dtype is an error naming the key.

mod common;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, FloatDType, Tensor};
use common::{
    Messages, assert_close, config_error_key, eval_loss, run_losses, tiny_config,
    write_reference_model,
};
use sdpo_models::CausalLm;
use sdpo_models::lora::TargetModules;
use sdpo_train::{MERGED_DIR, ModelDtype, RefDtype, SilentObserver, Start, TrainConfig, Trainer};

/// A LoRA run (DoRA with `dora`) on a saved tiny checkpoint.
fn lora_config(root: &Path, dora: bool) -> TrainConfig {
    let base = tiny_config(root);
    TrainConfig {
        use_peft: true,
        use_dora: dora,
        lora_r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        lora_target_modules: Some(TargetModules::AllLinear),
        model_name_or_path: write_reference_model(root, base.seed),
        init_from_config: false,
        eval_file: None,
        ..base
    }
}

/// `dir`'s checkpoint with every matrix rounded to bfloat16 (vectors kept), saved to `out`.
fn rounded_copy(dir: &Path, out: PathBuf) -> PathBuf {
    let model = CausalLm::from_pretrained(dir, &Device::flex()).unwrap();
    sdpo_models::store_matrices_as(model, FloatDType::BF16)
        .save_pretrained(&out)
        .unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir.join(f), out.join(f)).unwrap();
    }
    out
}

/// The dtypes of the model's matrices (parameters with two or more dimensions).
fn matrix_dtypes(model: &CausalLm) -> Vec<DType> {
    struct Dtypes(Vec<DType>);
    impl ModuleVisitor for Dtypes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D >= 2 && param.shape().num_elements() > 0 {
                self.0.push(param.val().dtype());
            }
        }
    }
    let mut v = Dtypes(Vec::new());
    model.visit(&mut v);
    v.0
}

#[test]
fn a_bfloat16_lora_base_trains_exactly_as_its_rounded_checkpoint() {
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        if !dev.device.supports_dtype(FloatDType::BF16) {
            // wgpu: no bfloat16 storage. An error naming the key, not a float32 fallback.
            let config = TrainConfig {
                dtype: ModelDtype::Bfloat16,
                ..lora_config(tmp.path(), false)
            };
            let err = match Trainer::new(config, &dev.device, Start::Fresh, &mut SilentObserver) {
                Ok(_) => panic!("a backend without bfloat16 accepted dtype = bfloat16"),
                Err(e) => e,
            };
            assert!(err.to_string().contains("dtype"), "[{}] {err}", dev.name);
            continue;
        }
        for dora in [false, true] {
            let config = TrainConfig {
                dtype: ModelDtype::Bfloat16,
                output_dir: tmp.path().join(format!("bf16-{dora}")),
                ..lora_config(tmp.path(), dora)
            };
            let rounded = rounded_copy(&config.model_name_or_path, tmp.path().join("rounded"));
            let float = TrainConfig {
                dtype: ModelDtype::Float32,
                model_name_or_path: rounded,
                output_dir: tmp.path().join(format!("rounded-{dora}")),
                ..config.clone()
            };
            let what = format!("[{}] dora {dora}", dev.name);
            let held = run_losses(config.clone(), &dev.device);
            let reference = run_losses(float.clone(), &dev.device);
            // The same weights; a widened copy and a loaded tensor may take different matrix
            // kernels (memory layout), so agreement is to float rounding, not bit for bit.
            let tol = if dev.name == "flex" { 1e-6 } else { 1e-5 };
            assert_close(
                &format!("{what}: bf16 base vs rounded"),
                &held,
                &reference,
                tol,
            );
            let plain = run_losses(
                TrainConfig {
                    dtype: ModelDtype::Float32,
                    output_dir: tmp.path().join(format!("f32-{dora}")),
                    ..config.clone()
                },
                &dev.device,
            );
            // `held` is finite (assert_close above); so must `plain` be.
            assert!(plain.iter().all(|v| v.is_finite()), "{what}: {plain:?}");
            let moved = held
                .iter()
                .zip(&plain)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max); // nan-checked
            println!("{what}: rounding the base moved the losses by {moved:.3e}");
            assert!(
                moved > 10.0 * tol,
                "{what}: rounding the base moved the losses by {moved}"
            );

            // Only the adapters are float32; the base's matrices are bfloat16.
            let trainer = Trainer::new(
                config.clone(),
                &dev.device,
                Start::Fresh,
                &mut SilentObserver,
            )
            .unwrap();
            let policy = trainer.policy().valid();
            let base = matrix_dtypes(&policy.without_adapters());
            assert!(
                base.iter().all(|d| *d == DType::BF16),
                "{what}: base {base:?}"
            );
            for (name, branch) in policy.lora_branches() {
                assert_eq!(branch.lora_a.val().dtype(), DType::F32, "{what}: {name}");
            }
        }
    }
}

/// The merged model of a bfloat16 base is a float32 checkpoint that evaluates as the adapter.
#[test]
fn a_bfloat16_base_merges_into_a_float32_model_equal_to_the_adapter() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        dtype: ModelDtype::Bfloat16,
        merge_adapter_at_end: true,
        eval_file: Some(tmp.path().join("train.jsonl")),
        ..lora_config(tmp.path(), true)
    };
    let mut trainer =
        Trainer::new(config.clone(), &device, Start::Fresh, &mut SilentObserver).unwrap();
    trainer.train(None, &mut SilentObserver).unwrap();
    let adapter = eval_loss(config.clone(), &device, &config.output_dir);
    // Full fine-tuning from the merged model, against the same rounded reference: a frozen
    // copy of the initial model with its matrices in bfloat16 (`ref_dtype`).
    let plain = TrainConfig {
        use_peft: false,
        use_dora: false,
        dtype: ModelDtype::Float32,
        ref_dtype: Some(RefDtype::Bfloat16),
        lora_r: 16,
        lora_alpha: 32.0,
        lora_dropout: 0.05,
        lora_target_modules: None,
        merge_adapter_at_end: false,
        output_dir: tmp.path().join("eval-merged"),
        ..config.clone()
    };
    let merged_dir = config.output_dir.join(MERGED_DIR);
    let merged = eval_loss(plain, &device, &merged_dir);
    assert_close("merged vs adapter", &[merged], &[adapter], 1e-5);
    let model = CausalLm::from_pretrained(&merged_dir, &device).unwrap();
    let text = std::fs::read(merged_dir.join("model.safetensors")).unwrap();
    let header = safetensors::SafeTensors::deserialize(&text).unwrap();
    for (name, t) in header.tensors() {
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    }
    assert!(matrix_dtypes(&model).iter().all(|d| *d == DType::F32));
}

#[test]
fn auto_reads_the_checkpoint_dtype_and_bad_values_name_the_key() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let config = lora_config(tmp.path(), false);
    let path = config.model_name_or_path.join("config.json");
    let mut hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // transformers 4's key (transformers 5 writes `dtype`, which would win).
    hf.as_object_mut().unwrap().remove("dtype");
    hf["torch_dtype"] = "bfloat16".into();
    std::fs::write(&path, hf.to_string()).unwrap();
    let auto = run_losses(
        TrainConfig {
            dtype: ModelDtype::Auto,
            output_dir: tmp.path().join("auto"),
            ..config.clone()
        },
        &device,
    );
    let explicit = run_losses(
        TrainConfig {
            dtype: ModelDtype::Bfloat16,
            output_dir: tmp.path().join("explicit"),
            ..config.clone()
        },
        &device,
    );
    assert_eq!(auto, explicit, "auto with torch_dtype bfloat16");

    hf["torch_dtype"] = "int8".into();
    std::fs::write(&path, hf.to_string()).unwrap();
    let (key, reason) = config_error_key(TrainConfig {
        dtype: ModelDtype::Auto,
        ..config
    });
    assert_eq!(key, "dtype", "{reason}");
    assert!(
        reason.contains("int8") && reason.contains("config.json"),
        "{reason}"
    );
}

#[test]
fn full_fine_tuning_in_bfloat16_trains_bfloat16_weights_close_to_float32() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        eval_file: None,
        ..tiny_config(tmp.path())
    };
    let mut messages = Messages(Vec::new());
    let mut trainer = Trainer::new(
        TrainConfig {
            dtype: ModelDtype::Bfloat16,
            output_dir: tmp.path().join("bf16"),
            ..config.clone()
        },
        &device,
        Start::Fresh,
        &mut messages,
    )
    .unwrap();
    assert!(
        !messages.0.iter().any(|m| m.contains("dtype")),
        "flex holds bfloat16: no warning expected, got {:?}",
        messages.0
    );
    let bf16 = trainer.train(None, &mut SilentObserver).unwrap();
    assert_eq!(
        sdpo_models::matrix_dtype(trainer.policy()),
        FloatDType::BF16,
        "the trained matrices stay bfloat16"
    );
    let plain = {
        let mut t = Trainer::new(config, &device, Start::Fresh, &mut SilentObserver).unwrap();
        t.train(None, &mut SilentObserver).unwrap()
    };
    // The same run on rounded weights with rounded updates: the losses within bfloat16's
    // rounding of the log-probs (2^-8 relative to each sequence's log-prob, which the loss
    // sees through beta), not equal.
    let losses = |records: &[sdpo_train::MetricsRecord]| {
        common::series(records, "loss")
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    };
    let (ours, float32) = (losses(&bf16), losses(&plain));
    assert!(!ours.is_empty());
    assert_close("bfloat16 against float32 losses", &ours, &float32, 2e-2);
    assert_ne!(ours, float32, "bfloat16 weights change the numbers");
}
