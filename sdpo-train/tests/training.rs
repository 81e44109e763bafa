//! End-to-end trainer behaviour on a tiny model: accumulation, resume, precompute, errors.

mod common;

use common::{
    Messages, interrupted_run, resume_to_end, series, tiny_config, tokenizer_dir, without_timing,
    write_pairs, write_reference_model,
};
use sdpo_testkit::{Tolerance, assert_close};
use sdpo_train::{SilentObserver, Start, TrainConfig, TrainError, Trainer, read_metrics_records};

fn run(config: TrainConfig, device: &burn::tensor::Device) -> Vec<sdpo_train::MetricsRecord> {
    let mut trainer =
        Trainer::new(config, device, Start::Fresh, &mut SilentObserver).expect("trainer");
    trainer.train(None, &mut SilentObserver).expect("train")
}

/// Same steps, and values within `tol * (1 + |b|)` (NaN fails).
fn assert_series_close(what: &str, a: &[(usize, f64)], b: &[(usize, f64)], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: number of records");
    assert!(!a.is_empty(), "{what}: no records");
    let steps = |s: &[(usize, f64)]| s.iter().map(|(step, _)| *step).collect::<Vec<_>>();
    assert_eq!(steps(a), steps(b), "{what}: steps");
    let values = |s: &[(usize, f64)]| s.iter().map(|(_, v)| *v).collect::<Vec<_>>();
    assert_close(
        &values(a),
        &values(b),
        Tolerance::elementwise(tol, tol),
        &format!("{what} (steps {:?})", steps(a)),
    );
}

#[test]
fn gradient_accumulation_equals_one_big_batch() {
    // One step over 4 pairs, as one batch of 4 or as 2 micro-batches of 2: the same loss, the
    // same gradient norm, and the same policy afterwards (eval loss).
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut big = tiny_config(tmp.path());
        big.max_steps = 1;
        big.loss.sdpo_threshold = 0.6;
        let mut small = big.clone();
        small.output_dir = tmp.path().join("out-accum");
        small.per_device_train_batch_size = 2;
        small.gradient_accumulation_steps = 2;
        // Same pairs in the first step: both samplers shuffle with the same seed.
        let a = run(big, &dev.device);
        let b = run(small, &dev.device);
        for key in [
            "loss",
            "grad_norm",
            "rewards/margins",
            "eval_loss",
            "eval_rewards/margins",
        ] {
            assert_series_close(
                &format!("[{}] {key}", dev.name),
                &series(&a, key),
                &series(&b, key),
                1e-5,
            );
        }
        println!("[{}] accumulation equivalence checked", dev.name);
    }
}

#[test]
fn resumed_run_equals_the_uninterrupted_run() {
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = tiny_config(tmp.path());
        config.max_steps = 4;
        config.save_steps = 2.into();
        config.loss.loss_type = sdpo_core::LossTypes::Many(vec![
            sdpo_core::LossType::Sdpo,
            sdpo_core::LossType::BcoPair,
        ]);
        config.loss.loss_weights = Some(vec![1.0, 0.5]);
        let full = run(config.clone(), &dev.device);

        let (interrupted, checkpoint) = interrupted_run(&config, &dev.device, 2);
        for file in [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "optimizer.bpk",
            "trainer_state.json",
            "manifest.json",
        ] {
            assert!(checkpoint.join(file).is_file(), "checkpoint-2 lacks {file}");
        }
        let after = resume_to_end(&interrupted, &dev.device, &checkpoint);
        let before = read_metrics_records(&config.output_dir.join("metrics.jsonl")).unwrap();
        assert_eq!(full, before, "the returned records are the file's records");
        // Bit-exact on flex: every metric of every step, including eval (not the clock).
        if dev.name == "flex" {
            assert_eq!(
                without_timing(&before),
                without_timing(&after),
                "[flex] resumed metrics differ from the uninterrupted run"
            );
        } else {
            for key in ["loss", "grad_norm", "eval_loss"] {
                assert_series_close(
                    &format!("[{}] {key}", dev.name),
                    &series(&before, key),
                    &series(&after, key),
                    1e-5,
                );
            }
        }
        println!(
            "[{}] resume equivalence checked over {} records",
            dev.name,
            after.len()
        );
    }
}

#[test]
fn precomputed_reference_gives_the_same_sdpo_losses() {
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut live = tiny_config(tmp.path());
        live.ref_model_name_or_path = Some(write_reference_model(tmp.path(), 7));
        live.loss.sdpo_threshold = 0.6;
        let mut cached = live.clone();
        cached.output_dir = tmp.path().join("out-precomputed");
        cached.precompute_ref_log_probs = true;
        let a = run(live, &dev.device);
        let b = run(cached.clone(), &dev.device);
        for key in [
            "loss",
            "rewards/chosen",
            "rewards/rejected",
            "sdpo/chosen_kept_fraction",
            "eval_loss",
            "eval_rewards/margins",
        ] {
            assert_series_close(
                &format!("[{}] {key}", dev.name),
                &series(&a, key),
                &series(&b, key),
                1e-5,
            );
        }
        // SDPO really selected tokens (the fork silently fell back to plain DPO here).
        let kept = series(&b, "sdpo/chosen_kept_fraction");
        assert!(
            kept.iter().all(|(_, f)| *f < 0.8),
            "kept fractions {kept:?}"
        );
        let cache_dir = cached.output_dir.join("ref_logps_cache");
        let files: Vec<_> = std::fs::read_dir(&cache_dir).unwrap().collect();
        assert_eq!(files.len(), 2, "a train and an eval cache");
        // A second run reuses the cache.
        let mut messages = Messages(Vec::new());
        Trainer::new(cached.clone(), &dev.device, Start::Fresh, &mut messages).unwrap();
        assert!(
            messages.0.iter().any(|m| m.contains("reusing")),
            "{:?}",
            messages.0
        );
        // The engine's forward (gradient_checkpointing) gets its own cache: it agrees with the
        // whole-batch forward to rounding only.
        cached.gradient_checkpointing = true;
        let mut messages = Messages(Vec::new());
        Trainer::new(cached.clone(), &dev.device, Start::Fresh, &mut messages).unwrap();
        assert!(
            !messages.0.iter().any(|m| m.contains("reusing")),
            "{:?}",
            messages.0
        );
        let files: Vec<_> = std::fs::read_dir(&cache_dir).unwrap().collect();
        assert_eq!(files.len(), 4, "train and eval caches for both paths");
        println!("[{}] precompute equivalence checked", dev.name);
    }
}

#[test]
fn with_the_initial_policy_as_reference_sdpo_keeps_every_token_at_the_first_step() {
    // Every score ref - policy is exactly 0 before the policy moves, so the q-quantile is 0
    // and every valid token is kept: SDPO starts as plain DPO (docs/sdpo.md).
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = tiny_config(tmp.path());
        config.max_steps = 1;
        let records = run(config, &dev.device);
        for key in ["sdpo/chosen_kept_fraction", "sdpo/rejected_kept_fraction"] {
            assert_eq!(
                series(&records, key),
                vec![(1, 1.0)],
                "[{}] {key}",
                dev.name
            );
        }
        assert_eq!(
            series(&records, "rewards/margins"),
            vec![(1, 0.0)],
            "[{}]",
            dev.name
        );
    }
}

#[test]
fn a_larger_reference_of_another_architecture_works() {
    // The seed paper's "stronger reference": here a wider, deeper Qwen2 for a Llama policy,
    // sharing the tokenizer.
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    let dir = tmp.path().join("qwen2-ref");
    std::fs::create_dir_all(&dir).unwrap();
    let qwen = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 49152,
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
        "max_position_embeddings": 128, "initializer_range": 0.5, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": false, "use_sliding_window": false,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), qwen.to_string()).unwrap();
    let model_config = sdpo_models::ModelConfig::from_pretrained_dir(&dir).unwrap();
    sdpo_models::CausalLm::from_config(&model_config, 11, &burn::tensor::Device::flex())
        .save_pretrained(&dir)
        .unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tokenizer_dir().join(f), dir.join(f)).unwrap();
    }
    config.ref_model_name_or_path = Some(dir);
    let records = run(config, &burn::tensor::Device::flex());
    let kept = series(&records, "sdpo/chosen_kept_fraction");
    assert_eq!(kept.len(), 3);
    // A reference that differs from the policy gives real selection from the first step.
    assert!(kept[0].1 < 0.8, "{kept:?}");
    assert!(series(&records, "loss").iter().all(|(_, l)| l.is_finite()));
}

#[test]
fn a_reference_with_another_tokenizer_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    let reference = write_reference_model(tmp.path(), 3);
    let path = reference.join("tokenizer_config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["eos_token"] = serde_json::Value::String("<|endoftext|>".into());
    std::fs::write(&path, json.to_string()).unwrap();
    config.ref_model_name_or_path = Some(reference);
    let err = Trainer::new(
        config,
        &burn::tensor::Device::flex(),
        Start::Fresh,
        &mut SilentObserver,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::TokenizerMismatch { .. }), "{msg}");
    assert!(msg.contains("eos"), "{msg}");
}

#[test]
fn sequences_longer_than_learned_positions_are_refused() {
    // GPT-2 has a table of n_positions learned positions; longer rows cannot run.
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    let gpt2 = serde_json::json!({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 49152,
        "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 16, "n_inner": 32,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.5, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2
    });
    std::fs::write(
        config.model_name_or_path.join("config.json"),
        gpt2.to_string(),
    )
    .unwrap();
    let err = Trainer::new(
        config.clone(),
        &burn::tensor::Device::flex(),
        Start::Fresh,
        &mut SilentObserver,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("max_length") && err.to_string().contains("16"),
        "{err}"
    );
    config.data.max_length = Some(16);
    Trainer::new(
        config,
        &burn::tensor::Device::flex(),
        Start::Fresh,
        &mut SilentObserver,
    )
    .expect("rows cut to 16 tokens fit");
}

#[test]
fn unknown_config_keys_are_errors_naming_them() {
    let err = serde_json::from_str::<TrainConfig>(r#"{"lerning_rate": 1e-5}"#).unwrap_err();
    assert!(err.to_string().contains("lerning_rate"), "{err}");
    let ok: TrainConfig =
        serde_json::from_str(r#"{"learning_rate": 1e-5, "loss_type": ["sdpo", "sft"]}"#).unwrap();
    assert_eq!(ok.learning_rate, 1e-5);
}

#[test]
fn bad_values_and_a_bad_data_file_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    config.loss.sdpo_threshold = 1.5;
    let err = Trainer::new(
        config.clone(),
        &burn::tensor::Device::flex(),
        Start::Fresh,
        &mut SilentObserver,
    )
    .unwrap_err();
    assert!(format!("{err:?}").contains("sdpo_threshold"), "{err:?}");

    config.loss.sdpo_threshold = 0.6;
    let bad = tmp.path().join("bad.jsonl");
    write_pairs(&bad, 3, 0);
    let mut text = std::fs::read_to_string(&bad).unwrap();
    text.push_str("{\"prompt\": \"x\", \"chosen\": 3, \"rejected\": \"y\"}\n");
    std::fs::write(&bad, text).unwrap();
    config.train_file = bad.clone();
    let err = Trainer::new(
        config.clone(),
        &burn::tensor::Device::flex(),
        Start::Fresh,
        &mut SilentObserver,
    )
    .unwrap_err();
    let chain = error_chain(&err);
    assert!(
        chain.contains("bad.jsonl") && chain.contains("line 4") && chain.contains("chosen"),
        "{chain}"
    );

    config.train_file = tmp.path().join("missing.jsonl");
    let chain = error_chain(
        &Trainer::new(
            config,
            &burn::tensor::Device::flex(),
            Start::Fresh,
            &mut SilentObserver,
        )
        .unwrap_err(),
    );
    assert!(chain.contains("missing.jsonl"), "{chain}");
    let _ = tokenizer_dir();
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[test]
fn trl1_options_ld_dpo_and_wpo_train_end_to_end() {
    // WPO's log(sum p^2) comes from the policy forward of the trainer; LD-DPO from the masks.
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    config.max_steps = 2;
    config.loss.use_weighting = true;
    config.loss.ld_alpha = Some(0.5);
    let records = run(config.clone(), &burn::tensor::Device::flex());
    let losses = series(&records, "loss");
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|(_, v)| v.is_finite()), "{losses:?}");
    // Without its WPO inputs the loss refuses to run, so the trainer must have passed them.
    let eval = series(&records, "eval_loss");
    assert!(!eval.is_empty() && eval.iter().all(|(_, v)| v.is_finite()));
}

#[test]
fn the_quickstart_from_its_parquet_copy_trains_exactly_like_from_jsonl() {
    // The quickstart's pairs as JSONL and as a Hub-layout Parquet dataset written by `datasets`:
    // the same pairs, the same order, so every metric of every step is the same.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let tmp = tempfile::tempdir().unwrap();
    let mut jsonl = tiny_config(tmp.path());
    jsonl.max_steps = 2;
    jsonl.per_device_train_batch_size = 8;
    jsonl.train_file = root.join("train.jsonl");
    jsonl.eval_file = Some(root.join("eval.jsonl"));
    let mut parquet = jsonl.clone();
    parquet.output_dir = tmp.path().join("out-parquet");
    parquet.train_file = root.join("parquet");
    parquet.eval_file = Some(root.join("parquet"));
    let a = run(jsonl, &burn::tensor::Device::flex());
    let b = run(parquet, &burn::tensor::Device::flex());
    assert!(a.iter().any(|r| r.values.contains_key("eval_loss")));
    assert_eq!(
        without_timing(&a),
        without_timing(&b),
        "metrics from JSONL and from Parquet differ"
    );
}

#[test]
fn gradient_checkpointing_trains_exactly_like_the_whole_batch_path() {
    // The memory-bounded engine (per-layer recomputation, attention blocks and head chunks of a
    // few positions here) must give the same losses, metrics, gradient norms and evaluation as
    // autodiff through the whole forward, step after step: with accumulation, WPO's weights
    // (computed per head chunk) and LD-DPO, and with a precomputed reference.
    for dev in sdpo_testkit::test_devices!() {
        for precompute in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let mut whole = tiny_config(tmp.path());
            // A reference other than the initial policy: with it, the first step's scores are
            // exactly 0 only where two forwards give the same bits, and rounding noise would
            // decide the first selection (on tch and wgpu the cache's batches differ from the
            // training batches); with another model they are O(1) and the selection is the same
            // on both paths.
            whole.ref_model_name_or_path = Some(write_reference_model(tmp.path(), 7));
            whole.loss.sdpo_threshold = 0.6;
            whole.loss.use_weighting = true;
            whole.loss.ld_alpha = Some(0.5);
            whole.per_device_train_batch_size = 2;
            whole.gradient_accumulation_steps = 2;
            whole.precompute_ref_log_probs = precompute;
            let mut bounded = whole.clone();
            bounded.output_dir = tmp.path().join("out-bounded");
            bounded.gradient_checkpointing = true;
            // Head chunks of 5 positions (vocabulary 49152: 1 MiB / (4 B x 49152)), so every
            // step crosses chunk boundaries; attention blocks of one position are covered by the
            // e2e golden tests (sdpo_e2e_step.rs, inspect_e2e.rs).
            bounded.memory_budget_mib = 4;
            bounded.max_buffer_mib = 1;
            let a = run(whole, &dev.device);
            let b = run(bounded, &dev.device);
            for key in [
                "loss",
                "grad_norm",
                "rewards/margins",
                "logps/chosen",
                "logits/chosen",
                "sdpo/chosen_kept_fraction",
                "eval_loss",
                "eval_rewards/margins",
            ] {
                assert_series_close(
                    &format!("[{}] precompute={precompute} {key}", dev.name),
                    &series(&a, key),
                    &series(&b, key),
                    1e-4,
                );
            }
        }
        println!("[{}] gradient_checkpointing equivalence checked", dev.name);
    }
}

#[test]
fn group_by_length_batches_pairs_of_similar_length() {
    // The same pairs with and without length grouping: the grouped run is deterministic, and
    // its batches differ from the shuffled ones (the pairs' lengths vary), so its first step
    // differs; each run's losses are finite.
    let tmp = tempfile::tempdir().unwrap();
    let mut plain = tiny_config(tmp.path());
    plain.max_steps = 2;
    plain.per_device_train_batch_size = 3;
    let mut grouped = plain.clone();
    grouped.group_by_length = true;
    grouped.output_dir = tmp.path().join("out-grouped");
    let mut again = grouped.clone();
    again.output_dir = tmp.path().join("out-grouped-again");
    let device = burn::tensor::Device::flex();
    let (a, b, c) = (
        run(plain, &device),
        run(grouped, &device),
        run(again, &device),
    );
    for records in [&a, &b] {
        let losses = series(records, "loss");
        assert!(losses.iter().all(|(_, v)| v.is_finite()), "{losses:?}");
    }
    assert_eq!(
        series(&b, "loss"),
        series(&c, "loss"),
        "a grouped run is deterministic"
    );
    // The first step's loss is ln 2 whatever the batch (the reference is the initial policy);
    // the policy's mean log-prob of the batch's chosen completions tells the batches apart.
    let first = |records| series(records, "logps/chosen")[0];
    assert_ne!(first(&a), first(&b), "grouping changed no batch");
}

#[test]
fn bf16_and_fp16_train_where_the_backend_computes_in_them_and_fall_back_with_a_warning() {
    use burn::tensor::FloatDType;
    use sdpo_train::RefDtype;
    use sdpo_train::precision::computes_in;
    for dev in sdpo_testkit::test_devices!() {
        for (key, dtype) in [("bf16", FloatDType::BF16), ("fp16", FloatDType::F16)] {
            let tmp = tempfile::tempdir().unwrap();
            let mut config = tiny_config(tmp.path());
            config.max_steps = 12;
            config.logging_steps = 1.into();
            config.save_steps = 0.into();
            if key == "bf16" {
                config.bf16 = true;
            } else {
                config.fp16 = true;
                config.ref_dtype = Some(RefDtype::Float16);
            }
            let mut messages = Messages(Vec::new());
            let mut trainer =
                Trainer::new(config, &dev.device, Start::Fresh, &mut messages).expect("trainer");
            let records = trainer.train(None, &mut messages).expect("train");
            let native = computes_in(&dev.device, dtype);
            let fell_back = messages.0.iter().any(|m| m.contains("training in float32"));
            assert_eq!(fell_back, !native, "[{}] {key}: {:?}", dev.name, messages.0);
            let losses = series(&records, "loss");
            assert_eq!(losses.len(), 12, "[{}] {key}: a record per step", dev.name);
            assert!(
                losses.iter().all(|(_, l)| l.is_finite()),
                "[{}] {key}: {losses:?}",
                dev.name
            );
            let skipped = messages
                .0
                .iter()
                .filter(|m| m.contains("overflowed"))
                .count();
            if key == "bf16" || !native {
                assert_eq!(skipped, 0, "[{}] {key}: {:?}", dev.name, messages.0);
            }
            assert!(skipped < 12, "[{}] {key}: every step overflowed", dev.name);
            if native && key == "bf16" {
                // Policy and reference (without `ref_dtype`) round the same float32 weights for
                // their products: the same bits at the first step, every score exactly 0.
                assert_eq!(
                    series(&records, "sdpo/chosen_kept_fraction")[0],
                    (1, 1.0),
                    "[{}] {key}",
                    dev.name
                );
            }
            println!(
                "[{}] {key}: {} ({skipped} fp16 steps skipped for overflow)",
                dev.name,
                if native {
                    "trained in low precision"
                } else {
                    "fell back to float32"
                }
            );
        }
    }
}

#[test]
fn dataset_name_trains_and_evaluates_on_a_dataset_directory() {
    // TRL's `dataset_name`: a dataset in the Hub's layout gives the train split and, when
    // `eval_strategy` asks for evaluation and the dataset has one, the `dataset_test_split`
    // (as trl/scripts/dpo.py); no train_file or eval_file. TRL's default strategy reads none.
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let dataset = tmp.path().join("dataset");
        std::fs::create_dir_all(dataset.join("data")).unwrap();
        write_pairs(&dataset.join("data/train-00000-of-00001.jsonl"), 8, 0);
        write_pairs(&dataset.join("data/test-00000-of-00001.jsonl"), 4, 100);
        let mut config = tiny_config(tmp.path());
        config.train_file = std::path::PathBuf::new();
        config.eval_file = None;
        config.data.dataset_name = Some(dataset.to_string_lossy().into_owned());
        config.max_steps = 1;
        let without_strategy = Trainer::new(
            config.clone(),
            &dev.device,
            Start::Fresh,
            &mut SilentObserver,
        )
        .expect("trainer");
        let splits: Vec<&str> = without_strategy
            .data_reports()
            .into_iter()
            .map(|(split, _, _)| split)
            .collect();
        assert_eq!(splits, ["train"], "no eval_strategy: no eval split");
        drop(without_strategy);
        config.eval_strategy = Some(sdpo_train::IntervalStrategy::Epoch);
        let mut trainer =
            Trainer::new(config, &dev.device, Start::Fresh, &mut SilentObserver).expect("trainer");
        let reports: Vec<(String, std::path::PathBuf, usize)> = trainer
            .data_reports()
            .into_iter()
            .map(|(split, path, report)| (split.to_string(), path.to_path_buf(), report.pairs_kept))
            .collect();
        assert_eq!(
            reports,
            vec![
                ("train".to_string(), dataset.clone(), 8),
                ("eval".to_string(), dataset.clone(), 4)
            ]
        );
        let records = trainer.train(None, &mut SilentObserver).expect("train");
        assert!(
            !series(&records, "eval_loss").is_empty(),
            "[{}] evaluated",
            dev.name
        );
    }
}
