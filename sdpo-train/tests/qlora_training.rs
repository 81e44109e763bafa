//! QLoRA runs (`load_in_4bit` with `use_peft`) end to end on the tiny model: the base stays in
//! 4 bits and untouched while every adapter trains, the memory-bounded engine and the
//! precomputed reference give the whole-batch run's numbers, the saved adapter evaluates to the
//! trained policy on the 4-bit base, the merged model is the adapter on the float base, and bad
//! 4-bit keys are configuration errors naming the key.

mod common;

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use common::{
    assert_close, config_error_key, eval_loss, run_losses as losses, series, tiny_config,
    write_reference_model,
};
use sdpo_models::lora::TargetModules;
use sdpo_models::{CausalLm, ModelConfig};
use sdpo_train::{MERGED_DIR, SilentObserver, Start, TrainConfig, Trainer};

/// The tiny run with LoRA on every linear layer of an NF4 double-quantized base.
fn qlora_config(root: &Path) -> TrainConfig {
    TrainConfig {
        use_peft: true,
        lora_r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        lora_target_modules: Some(TargetModules::AllLinear),
        load_in_4bit: true,
        bnb_4bit_use_double_quant: true,
        ..tiny_config(root)
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The dequantized weight of every 4-bit layer.
fn base_weights(model: &CausalLm) -> Vec<Vec<f32>> {
    model
        .quantized_layers()
        .into_iter()
        .map(|(_, q)| host(q.dequantize()))
        .collect()
}

#[test]
fn qlora_trains_the_adapters_on_an_untouched_4bit_base() {
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = qlora_config(tmp.path());
        config.merge_adapter_at_end = true;
        let bnb = config.bnb_4bit_config().unwrap().unwrap();
        let base = CausalLm::from_config(
            &ModelConfig::from_pretrained_dir(&config.model_name_or_path).unwrap(),
            config.seed,
            &dev.device,
        )
        .quantize_4bit(&bnb)
        .unwrap();
        let before = base_weights(&base);
        assert_eq!(before.len(), 7, "[{}] 4-bit layers", dev.name);

        let mut trainer = Trainer::new(
            config.clone(),
            &dev.device,
            Start::Fresh,
            &mut SilentObserver,
        )
        .unwrap();
        let records = trainer.train(None, &mut SilentObserver).unwrap();
        let trained = trainer.policy().valid();
        assert_eq!(
            base_weights(&trained),
            before,
            "[{}] the 4-bit base changed",
            dev.name
        );
        for (name, branch) in trained.lora_branches() {
            assert!(
                host(branch.lora_b.val()).iter().any(|&v| v != 0.0),
                "[{}] {name}: lora_B did not train",
                dev.name
            );
        }

        // The saved adapter on the 4-bit base is the trained policy.
        let last_eval = series(&records, "eval_loss").last().unwrap().1;
        let final_eval = eval_loss(config.clone(), &dev.device, &config.output_dir);
        assert_close(
            "eval of the saved adapter",
            &[final_eval],
            &[last_eval],
            1e-5,
        );

        // The merged model is the adapter on the float base (not on its 4-bit rounding).
        let float_config = TrainConfig {
            use_peft: false,
            lora_r: 16,
            lora_alpha: 32.0,
            lora_target_modules: None,
            lora_dropout: 0.05,
            load_in_4bit: false,
            bnb_4bit_use_double_quant: false,
            merge_adapter_at_end: false,
            output_dir: tmp.path().join("eval-float"),
            ..config.clone()
        };
        let on_float = eval_loss(float_config.clone(), &dev.device, &config.output_dir);
        let merged = eval_loss(
            float_config,
            &dev.device,
            &config.output_dir.join(MERGED_DIR),
        );
        assert_close(
            "merged vs adapter on the float base",
            &[merged],
            &[on_float],
            1e-5,
        );
        assert!(
            (on_float - final_eval).abs() > 1e-6,
            "[{}] the 4-bit and float bases evaluate alike ({on_float}): quantization did nothing",
            dev.name
        );
        println!(
            "[{}] base unchanged, adapters trained, eval {final_eval:.6} on 4 bits, {on_float:.6} on float",
            dev.name
        );
    }
}

/// Plain DPO (every token kept): at the first step the policy equals the reference, and an
/// SDPO selection would be decided by rounding noise that differs between paths on GPU
/// backends (see lora_training.rs); here the paths must agree to rounding at every step.
#[test]
fn the_engine_and_the_precomputed_reference_give_the_whole_batch_numbers() {
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = TrainConfig {
            eval_file: None,
            ..qlora_config(tmp.path())
        };
        config.loss.sdpo_threshold = 0.0;
        let tol = if dev.name == "flex" { 1e-5 } else { 1e-4 };
        let whole = losses(config.clone(), &dev.device);
        let engine = losses(
            TrainConfig {
                gradient_checkpointing: true,
                output_dir: tmp.path().join("engine"),
                ..config.clone()
            },
            &dev.device,
        );
        assert_close(
            &format!("[{}] gradient_checkpointing", dev.name),
            &engine,
            &whole,
            1e-4,
        );
        let precomputed = losses(
            TrainConfig {
                precompute_ref_log_probs: true,
                output_dir: tmp.path().join("precomputed"),
                ..config
            },
            &dev.device,
        );
        assert_close(
            &format!("[{}] precompute_ref_log_probs", dev.name),
            &precomputed,
            &whole,
            tol,
        );
    }
}

/// A base read from its checkpoint is quantized layer by layer as it is read; the run equals
/// the one on the same weights built from the config and quantized whole.
#[test]
fn a_checkpoint_read_layer_by_layer_into_4_bits_trains_as_the_whole_model() {
    let tmp = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        eval_file: None,
        seed: 5,
        ..qlora_config(tmp.path())
    };
    let saved = write_reference_model(tmp.path(), config.seed);
    let built = losses(config.clone(), &Device::flex());
    let read = losses(
        TrainConfig {
            model_name_or_path: saved,
            init_from_config: false,
            output_dir: tmp.path().join("read"),
            ..config
        },
        &Device::flex(),
    );
    assert_eq!(read, built, "losses of the read and the built base");
}

#[test]
fn bad_4bit_keys_are_errors_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let good = qlora_config(tmp.path());
    let plain = tiny_config(tmp.path());
    let cases: Vec<(&str, &str, TrainConfig)> = vec![
        (
            "load_in_4bit",
            "use_peft",
            TrainConfig {
                load_in_4bit: true,
                ..plain.clone()
            },
        ),
        (
            "bnb_4bit_use_double_quant",
            "load_in_4bit",
            TrainConfig {
                bnb_4bit_use_double_quant: true,
                ..plain.clone()
            },
        ),
        (
            "bnb_4bit_quant_type",
            "int4",
            TrainConfig {
                bnb_4bit_quant_type: "int4".into(),
                ..good.clone()
            },
        ),
        (
            "bnb_4bit_compute_dtype",
            "int8",
            TrainConfig {
                bnb_4bit_compute_dtype: Some("int8".into()),
                ..good.clone()
            },
        ),
        (
            "bnb_4bit_quant_storage",
            "int3",
            TrainConfig {
                bnb_4bit_quant_storage: Some("int3".into()),
                ..good.clone()
            },
        ),
        (
            "load_in_8bit",
            "LLM.int8",
            TrainConfig {
                load_in_8bit: true,
                ..good.clone()
            },
        ),
        (
            "ref_layer_streaming",
            "4-bit base",
            TrainConfig {
                precompute_ref_log_probs: true,
                ref_layer_streaming: true,
                ..good.clone()
            },
        ),
        (
            "lora_modules_to_save",
            "4 bits",
            TrainConfig {
                lora_target_modules: Some(TargetModules::Names(vec!["q_proj".into()])),
                lora_modules_to_save: Some(vec!["o_proj".into()]),
                ..good.clone()
            },
        ),
    ];
    for (key, says, config) in cases {
        let (got, reason) = config_error_key(config);
        assert_eq!(got, key, "{reason}");
        assert!(reason.contains(says), "{key}: {reason}");
    }
}
