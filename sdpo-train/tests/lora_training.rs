//! LoRA runs (`use_peft`) end to end on the tiny model: only the adapters train and the base is
//! untouched, checkpoints hold the adapter in PEFT's layout, resume is bit-exact, the reference
//! is the adapter-disabled base (live or precomputed), saved adapters evaluate (and merge) to
//! the trained policy, and bad LoRA keys are configuration errors naming the key.

mod common;

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use common::{
    config_error_key, eval_loss, interrupted_run, resume_to_end, series, tiny_config,
    without_timing, write_reference_model,
};
use sdpo_models::lora::TargetModules;
use sdpo_models::{CausalLm, ModelConfig};
use sdpo_train::{MERGED_DIR, SilentObserver, Start, TrainConfig, TrainError, Trainer};

/// The tiny run with LoRA on every linear layer (no dropout, so runs are deterministic).
fn lora_config(root: &Path) -> TrainConfig {
    TrainConfig {
        use_peft: true,
        lora_r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        lora_target_modules: Some(TargetModules::AllLinear),
        ..tiny_config(root)
    }
}

fn run(config: TrainConfig, device: &Device) -> Vec<sdpo_train::MetricsRecord> {
    let mut trainer =
        Trainer::new(config, device, Start::Fresh, &mut SilentObserver).expect("trainer");
    trainer.train(None, &mut SilentObserver).expect("train")
}

/// Every parameter of `model`, in visiting order, on the host.
fn params(model: &CausalLm) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(
                param
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap(),
            );
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// The `lora_A` and `lora_B` factors of every adapted layer, on the host.
fn factors(model: &CausalLm) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    model
        .lora_branches()
        .into_iter()
        .map(|(name, branch)| {
            let host = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            (name, host(branch.lora_a.val()), host(branch.lora_b.val()))
        })
        .collect()
}

#[test]
fn lora_trains_only_the_adapters_and_saves_them_in_peft_layout() {
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = lora_config(tmp.path());
        config.save_steps = 2.into();
        config.merge_adapter_at_end = true;
        let base = CausalLm::from_config(
            &ModelConfig::from_pretrained_dir(&config.model_name_or_path).unwrap(),
            config.seed,
            &dev.device,
        );
        let base_before = params(&base);
        let initial = base
            .clone()
            .attach_lora(&config.lora_config(), config.seed)
            .unwrap();
        let before = factors(&initial);
        // all-linear on one Llama block: q, k, v, o, gate, up, down.
        assert_eq!(before.len(), 7, "[{}] adapted layers", dev.name);

        let mut trainer = Trainer::new(
            config.clone(),
            &dev.device,
            Start::Fresh,
            &mut SilentObserver,
        )
        .unwrap();
        let records = trainer.train(None, &mut SilentObserver).unwrap();
        let trained = trainer.policy().valid();

        // The base is bit-identical after three steps at learning rate 1e-2.
        assert_eq!(
            params(&trained.without_adapters()),
            base_before,
            "[{}] base weights changed",
            dev.name
        );
        // Every A and every B moved (B from exact zeros).
        let after = factors(&trained);
        for ((name, a0, b0), (_, a1, b1)) in before.iter().zip(&after) {
            assert!(b0.iter().all(|&v| v == 0.0), "{name}: B starts at zero");
            assert!(a0 != a1, "[{}] {name}: lora_A did not train", dev.name);
            assert!(
                b1.iter().any(|&v| v != 0.0),
                "[{}] {name}: lora_B",
                dev.name
            );
        }

        // Checkpoint and final output: the adapter in PEFT's layout, no full model.
        let checkpoint = config.output_dir.join("checkpoint-2");
        for dir in [&checkpoint, &config.output_dir] {
            for file in [
                "adapter_config.json",
                "adapter_model.safetensors",
                "tokenizer.json",
            ] {
                assert!(dir.join(file).is_file(), "{} lacks {file}", dir.display());
            }
            assert!(
                !dir.join("model.safetensors").exists(),
                "{} holds a full model",
                dir.display()
            );
        }
        for file in ["optimizer.bpk", "trainer_state.json", "manifest.json"] {
            assert!(checkpoint.join(file).is_file(), "checkpoint lacks {file}");
        }
        let adapter: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(config.output_dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(adapter["peft_type"], "LORA");
        assert_eq!(adapter["r"], 4);
        assert_eq!(
            adapter["base_model_name_or_path"],
            config.model_name_or_path.to_string_lossy().as_ref()
        );
        // AdamW holds state for the adapters only: two moments of the 49152 x 16 embedding
        // alone would take 6 MiB; the adapters' state is a few KiB.
        let optimizer_bytes = std::fs::metadata(checkpoint.join("optimizer.bpk"))
            .unwrap()
            .len();
        assert!(
            optimizer_bytes < 49152 * 16 * 4,
            "[{}] optimizer state of {optimizer_bytes} bytes: the base has state",
            dev.name
        );

        // The saved final adapter evaluates to the trained policy's eval loss: through a LoRA
        // config, through a plain config (the adapter is detected), merged, and as the
        // starting adapter of a new run (peft_adapter_path).
        let last_eval = *series(&records, "eval_loss")
            .last()
            .map(|(_, v)| v)
            .unwrap();
        let close = |what: &str, v: f64| {
            assert!(
                (v - last_eval).abs() <= 1e-5 * (1.0 + last_eval.abs()),
                "[{}] {what}: {v} vs {last_eval}",
                dev.name
            );
        };
        close(
            "eval of the final adapter",
            eval_loss(config.clone(), &dev.device, &config.output_dir),
        );
        let plain = TrainConfig {
            use_peft: false,
            lora_r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            lora_target_modules: None,
            merge_adapter_at_end: false,
            output_dir: tmp.path().join("eval-plain"),
            ..config.clone()
        };
        close(
            "eval of the final adapter, plain config",
            eval_loss(plain.clone(), &dev.device, &config.output_dir),
        );
        let merged = config.output_dir.join(MERGED_DIR);
        assert!(merged.join("model.safetensors").is_file(), "merged model");
        close(
            "eval of the merged model",
            eval_loss(plain, &dev.device, &merged),
        );
        let continued = TrainConfig {
            peft_adapter_path: Some(config.output_dir.clone()),
            lora_r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            lora_target_modules: None,
            merge_adapter_at_end: false,
            output_dir: tmp.path().join("continued"),
            ..config.clone()
        };
        let mut trainer =
            Trainer::new(continued, &dev.device, Start::Fresh, &mut SilentObserver).unwrap();
        close(
            "a run started from the adapter",
            trainer.evaluate().unwrap().unwrap().values["eval_loss"],
        );
        println!(
            "[{}] {} adapted layers, base unchanged, PEFT files, 4 evaluations checked",
            dev.name,
            after.len()
        );
    }
}

#[test]
fn resumed_lora_run_equals_the_uninterrupted_run() {
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = lora_config(tmp.path());
        config.max_steps = 4;
        config.save_steps = 2.into();
        config.lora_dropout = 0.1; // dropout masks too must continue exactly
        config.loss.sdpo_threshold = 0.6;
        let full = run(config.clone(), &dev.device);

        let (interrupted, checkpoint) = interrupted_run(&config, &dev.device, 2);
        let after = resume_to_end(&interrupted, &dev.device, &checkpoint);
        assert_eq!(full.len(), after.len(), "[{}] records", dev.name);
        if dev.name == "flex" {
            assert_eq!(
                without_timing(&full),
                without_timing(&after),
                "[flex] resumed LoRA run differs"
            );
        } else {
            for key in ["loss", "grad_norm", "eval_loss"] {
                for ((s, a), (_, b)) in series(&full, key).iter().zip(series(&after, key)) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "[{}] {key} at {s}: {a} vs {b}",
                        dev.name
                    );
                }
            }
        }
        // The same adapter at the end.
        let a = std::fs::read(config.output_dir.join("adapter_model.safetensors")).unwrap();
        let b = std::fs::read(interrupted.output_dir.join("adapter_model.safetensors")).unwrap();
        if dev.name == "flex" {
            assert_eq!(a, b, "[flex] final adapters differ");
        }

        // Changing a LoRA key on resume is refused: it changes the model.
        let mut changed = interrupted.clone();
        changed.lora_r = 8;
        let err = Trainer::new(
            changed,
            &dev.device,
            Start::Resume(&checkpoint),
            &mut SilentObserver,
        )
        .unwrap_err();
        assert!(
            matches!(&err, TrainError::ConfigChanged { differences, .. }
                if differences.iter().any(|d| d.contains("lora_r"))),
            "{err}"
        );
        println!(
            "[{}] LoRA resume checked over {} records",
            dev.name,
            after.len()
        );
    }
}

#[test]
fn the_reference_is_the_adapter_disabled_base_live_or_precomputed() {
    // At the first step B = 0, so the policy equals the base: every SDPO score is 0 and every
    // reward is 0. Where the policy's and the reference's log-probs are the same computation,
    // the scores are exactly 0, the q-quantile is 0 and every token is kept at any q: on flex
    // (its autodiff forward runs the plain kernels), and with `gradient_checkpointing` on every
    // backend (the engine's pass 1 runs the policy untracked, as the reference). wgpu's
    // autodiff forward fuses differently and may differ in the last bits.
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut live = lora_config(tmp.path());
        live.loss.sdpo_threshold = 0.6;
        let mut cached = live.clone();
        cached.output_dir = tmp.path().join("out-precomputed");
        cached.precompute_ref_log_probs = true;
        let mut bounded = live.clone();
        bounded.output_dir = tmp.path().join("out-bounded");
        bounded.gradient_checkpointing = true;
        let a = run(live.clone(), &dev.device);
        let b = run(cached, &dev.device);
        let c = run(bounded, &dev.device);
        let same_bits = [dev.name == "flex", dev.name == "flex", true];
        for (records, exact) in [&a, &b, &c].into_iter().zip(same_bits) {
            let margin = series(records, "rewards/margins")[0];
            assert_eq!(margin.0, 1);
            assert!(
                margin.1.abs() <= 1e-6,
                "[{}] first margin {margin:?}",
                dev.name
            );
            if exact {
                for key in ["sdpo/chosen_kept_fraction", "sdpo/rejected_kept_fraction"] {
                    assert_eq!(series(records, key)[0], (1, 1.0), "[{}] {key}", dev.name);
                }
                assert_eq!(margin, (1, 0.0), "[{}] first margin", dev.name);
            }
        }
        // Later steps select: the adapters moved the policy away from the base.
        let kept = series(&a, "sdpo/chosen_kept_fraction");
        assert!(kept[1..].iter().all(|(_, f)| *f < 1.0), "kept {kept:?}");
        // On flex the live, cached and engine references give the policy's log-probs bit for
        // bit (or differ by rounding once the policy has moved), and the runs agree at every
        // step. On a GPU backend the cache (other batch compositions) and autodiff's fused
        // kernels differ from the policy's forward in the last bits, so at the first step the
        // scores are rounding noise around 0 and the kept set is decided by it (the first
        // check above holds only where the bits agree); the runs then part. There only the
        // first step's loss (ln 2 up to rounding) is compared.
        let flex = dev.name == "flex";
        let steps = if flex { usize::MAX } else { 1 };
        let keys = |on_flex: [&'static str; 3]| if flex { on_flex.to_vec() } else { vec!["loss"] };
        let compare = |other: &[sdpo_train::MetricsRecord], keys: &[&str], tol: f64, what: &str| {
            for key in keys {
                let pairs = series(&a, key).into_iter().zip(series(other, key));
                for ((s, x), (_, y)) in pairs.filter(|((s, _), _)| *s <= steps) {
                    assert!(
                        (x - y).abs() <= tol * (1.0 + y.abs()),
                        "[{}] {key} at {s}: live {x} vs {what} {y}",
                        dev.name
                    );
                }
            }
        };
        compare(
            &b,
            &keys(["loss", "sdpo/chosen_kept_fraction", "eval_loss"]),
            1e-5,
            "precomputed",
        );
        // The memory-bounded engine trains the adapters as autodiff does (frozen base: no
        // gradient for the embedding or any base weight).
        compare(
            &c,
            &keys(["loss", "grad_norm", "eval_loss"]),
            1e-4,
            "gradient_checkpointing",
        );

        // With ref_model_name_or_path the reference is that model, live or precomputed.
        let mut other = live.clone();
        other.output_dir = tmp.path().join("out-ref");
        other.ref_model_name_or_path = Some(write_reference_model(tmp.path(), 7));
        let mut other_cached = other.clone();
        other_cached.output_dir = tmp.path().join("out-ref-precomputed");
        other_cached.precompute_ref_log_probs = true;
        let c = run(other, &dev.device);
        let d = run(other_cached, &dev.device);
        assert!(
            series(&c, "sdpo/chosen_kept_fraction")[0].1 < 1.0,
            "[{}] another reference selects at step 1",
            dev.name
        );
        for key in ["loss", "sdpo/chosen_kept_fraction"] {
            for ((s, x), (_, y)) in series(&c, key).iter().zip(series(&d, key)) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "[{}] {key} at {s}: live {x} vs precomputed {y}",
                    dev.name
                );
            }
        }
        println!("[{}] LoRA references checked (4 runs)", dev.name);
    }
}

#[test]
fn bad_lora_keys_are_errors_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let good = lora_config(tmp.path());
    let cases: Vec<(&str, TrainConfig)> = vec![
        (
            "lora_r",
            TrainConfig {
                use_peft: false,
                lora_target_modules: None,
                lora_dropout: 0.05,
                lora_alpha: 32.0,
                ..good.clone()
            },
        ),
        (
            "merge_adapter_at_end",
            TrainConfig {
                merge_adapter_at_end: true,
                ..tiny_config(tmp.path())
            },
        ),
        (
            "peft_adapter_path",
            TrainConfig {
                peft_adapter_path: Some(tmp.path().join("adapter")),
                ..tiny_config(tmp.path())
            },
        ),
        (
            "lora_r",
            TrainConfig {
                lora_r: 0,
                ..good.clone()
            },
        ),
        (
            "lora_alpha",
            TrainConfig {
                lora_alpha: f64::NAN,
                ..good.clone()
            },
        ),
        (
            "lora_dropout",
            TrainConfig {
                lora_dropout: 1.0,
                ..good.clone()
            },
        ),
        (
            "lora_target_modules",
            TrainConfig {
                lora_target_modules: Some(TargetModules::Names(vec!["qq_proj".into()])),
                ..good.clone()
            },
        ),
        (
            "lora_modules_to_save",
            TrainConfig {
                lora_modules_to_save: Some(vec!["lm_headd".into()]),
                ..good.clone()
            },
        ),
        (
            "lora_r",
            TrainConfig {
                peft_adapter_path: Some(tmp.path().join("adapter")),
                ..good.clone()
            },
        ),
    ];
    let count = cases.len();
    for (key, config) in cases {
        let (got, reason) = config_error_key(config);
        assert_eq!(got, key, "{reason}");
    }
    // An unknown target lists the model's linear layers.
    let (_, reason) = config_error_key(TrainConfig {
        lora_target_modules: Some(TargetModules::Names(vec!["qq_proj".into()])),
        ..good.clone()
    });
    assert!(
        reason.contains("q_proj") && reason.contains("down_proj"),
        "{reason}"
    );
    // A missing adapter directory is an error naming it.
    let missing = tmp.path().join("no-adapter-here");
    let err = Trainer::new(
        TrainConfig {
            peft_adapter_path: Some(missing.clone()),
            lora_r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            lora_target_modules: None,
            ..good.clone()
        },
        &Device::flex(),
        Start::Fresh,
        &mut SilentObserver,
    )
    .unwrap_err();
    assert!(format!("{err}").contains("no-adapter-here"), "{err}");
    // The keys parse from a configuration file with TRL's names and forms.
    let parsed: TrainConfig = serde_json::from_str(
        r#"{"use_peft": true, "lora_r": 8, "lora_target_modules": "all-linear",
            "lora_modules_to_save": ["lm_head"], "use_rslora": true}"#,
    )
    .unwrap();
    assert_eq!(parsed.lora_target_modules, Some(TargetModules::AllLinear));
    let lora = parsed.lora_config();
    assert_eq!((lora.r, lora.use_rslora), (8, true));
    println!(
        "{} bad LoRA configurations refused with their key",
        count + 2
    );
}

#[test]
fn the_smollm2_lora_example_is_a_valid_lora_configuration() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/smollm2-lora/sdpo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config: TrainConfig = toml::from_str(&text).unwrap();
    config.validate().unwrap();
    assert!(config.use_peft && config.merge_adapter_at_end);
    assert_eq!(config.lora_r, 16);
    assert_eq!(config.lora_target_modules, Some(TargetModules::AllLinear));
    assert_eq!(
        config.model_name_or_path,
        Path::new("models/SmolLM2-135M-Instruct")
    );
}
