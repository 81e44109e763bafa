//! DoRA runs (`use_dora` with `use_peft`) end to end on the tiny model: the magnitudes train
//! next to the low-rank factors and the base is untouched; the adapter is saved in PEFT's
//! layout with its `lora_magnitude_vector` tensors and evaluates (and merges) to the trained
//! policy; the memory-bounded engine and the precomputed reference give the whole-batch
//! numbers, on a float and on a 4-bit base (QDoRA); a resumed run equals the uninterrupted
//! one; `use_dora` without adapters is an error naming the key.

mod common;

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use common::{
    assert_close, config_error_key, eval_loss, interrupted_run, resume_to_end, run_losses, series,
    tiny_config, without_timing,
};
use sdpo_models::lora::TargetModules;
use sdpo_models::{CausalLm, ModelConfig};
use sdpo_train::{MERGED_DIR, SilentObserver, Start, TrainConfig, Trainer};

/// The tiny run with DoRA on every linear layer (no dropout, so runs are deterministic).
fn dora_config(root: &Path) -> TrainConfig {
    TrainConfig {
        use_peft: true,
        use_dora: true,
        lora_r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        lora_target_modules: Some(TargetModules::AllLinear),
        ..tiny_config(root)
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Every layer's magnitude, by layer name.
fn magnitudes(model: &CausalLm) -> Vec<(String, Vec<f32>)> {
    model
        .lora_branches()
        .into_iter()
        .map(|(name, b)| {
            (
                name,
                host(b.magnitude.as_ref().expect("a DoRA branch").val()),
            )
        })
        .collect()
}

#[test]
fn dora_trains_magnitudes_and_saves_a_peft_adapter_that_evaluates_and_merges_to_the_policy() {
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = dora_config(tmp.path());
        config.merge_adapter_at_end = true;
        let base = CausalLm::from_config(
            &ModelConfig::from_pretrained_dir(&config.model_name_or_path).unwrap(),
            config.seed,
            &dev.device,
        );
        let before = magnitudes(&base.clone().attach_lora(&config.lora_config(), 0).unwrap());

        let mut trainer = Trainer::new(
            config.clone(),
            &dev.device,
            Start::Fresh,
            &mut SilentObserver,
        )
        .unwrap();
        let records = trainer.train(None, &mut SilentObserver).unwrap();
        let trained = trainer.policy().valid();
        let after = magnitudes(&trained);
        assert_eq!(after.len(), before.len(), "[{}] adapted layers", dev.name);
        for ((name, m0), (_, m1)) in before.iter().zip(&after) {
            assert!(
                m0.iter().all(|v| v.is_finite() && *v > 0.0),
                "{name}: initial ‖W‖"
            );
            assert!(
                m0 != m1,
                "[{}] {name}: the magnitude did not train",
                dev.name
            );
        }
        // The base is untouched: the adapter-disabled policy is the initial model.
        let ids = Tensor::<2, burn::tensor::Int>::from_data([[1, 5, 9, 2, 7]], &dev.device);
        let mask = Tensor::<2, burn::tensor::Int>::ones([1, 5], &dev.device);
        assert_eq!(
            host(
                trained
                    .without_adapters()
                    .forward(ids.clone(), mask.clone())
            ),
            host(base.forward(ids, mask)),
            "[{}] the base changed",
            dev.name
        );

        // PEFT's files: a magnitude per adapted layer and `use_dora: true`.
        let file = std::fs::read(config.output_dir.join("adapter_model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        let stored = st
            .names()
            .iter()
            .filter(|n| n.ends_with(".lora_magnitude_vector"))
            .count();
        assert_eq!(stored, after.len(), "[{}] saved magnitudes", dev.name);
        let adapter_config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(config.output_dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(adapter_config["use_dora"], true);

        // The saved adapter is the trained policy, and the merged model is the adapter.
        let last_eval = series(&records, "eval_loss").last().unwrap().1;
        let saved = eval_loss(config.clone(), &dev.device, &config.output_dir);
        assert_close("eval of the saved adapter", &[saved], &[last_eval], 1e-5);
        let plain = TrainConfig {
            use_peft: false,
            use_dora: false,
            lora_r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            lora_target_modules: None,
            merge_adapter_at_end: false,
            output_dir: tmp.path().join("eval-merged"),
            ..config.clone()
        };
        let merged = eval_loss(plain, &dev.device, &config.output_dir.join(MERGED_DIR));
        assert_close("merged vs adapter", &[merged], &[saved], 1e-5);
    }
}

/// Plain DPO (every token kept), as in qlora_training.rs: the paths must agree to rounding at
/// every step, on a float base and on a 4-bit one.
#[test]
fn the_engine_and_the_precomputed_reference_give_the_whole_batch_numbers_with_dora() {
    for dev in sdpo_testkit::test_devices!() {
        for load_in_4bit in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let mut config = TrainConfig {
                eval_file: None,
                load_in_4bit,
                bnb_4bit_use_double_quant: load_in_4bit,
                ..dora_config(tmp.path())
            };
            config.loss.sdpo_threshold = 0.0;
            let what = |path: &str| format!("[{}] load_in_4bit {load_in_4bit}: {path}", dev.name);
            let tol = if dev.name == "flex" { 1e-5 } else { 1e-4 };
            let whole = run_losses(config.clone(), &dev.device);
            let engine = run_losses(
                TrainConfig {
                    gradient_checkpointing: true,
                    output_dir: tmp.path().join("engine"),
                    ..config.clone()
                },
                &dev.device,
            );
            assert_close(&what("gradient_checkpointing"), &engine, &whole, 1e-4);
            let precomputed = run_losses(
                TrainConfig {
                    precompute_ref_log_probs: true,
                    output_dir: tmp.path().join("precomputed"),
                    ..config
                },
                &dev.device,
            );
            assert_close(&what("precompute_ref_log_probs"), &precomputed, &whole, tol);
        }
    }
}

#[test]
fn resumed_dora_run_equals_the_uninterrupted_run() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = dora_config(tmp.path());
    config.max_steps = 4;
    config.save_steps = 2.into();
    config.lora_dropout = 0.1; // DoRA's dropout path recomputes the base product
    config.loss.sdpo_threshold = 0.6;
    let mut full =
        Trainer::new(config.clone(), &device, Start::Fresh, &mut SilentObserver).unwrap();
    let full = full.train(None, &mut SilentObserver).unwrap();

    let (interrupted, checkpoint) = interrupted_run(&config, &device, 2);
    let after = resume_to_end(&interrupted, &device, &checkpoint);
    assert_eq!(
        without_timing(&full),
        without_timing(&after),
        "resumed DoRA run differs"
    );
    let a = std::fs::read(config.output_dir.join("adapter_model.safetensors")).unwrap();
    let b = std::fs::read(interrupted.output_dir.join("adapter_model.safetensors")).unwrap();
    assert_eq!(a, b, "final adapters differ");
}

#[test]
fn use_dora_without_adapters_is_an_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        use_dora: true,
        ..tiny_config(tmp.path())
    };
    let (key, reason) = config_error_key(config);
    assert_eq!(key, "use_dora", "{reason}");
    assert!(reason.contains("use_peft"), "{reason}");
}
