//! The trainer's saving strategies on a tiny model, checked by invariants of the run itself:
//! the best checkpoint is the evaluation with the lowest `eval_loss`, it survives
//! `save_total_limit`, `load_best_model_at_end` makes its weights the final model; checkpoints
//! and the final model carry `generation_config.json` and the model card; TR-DPO with α = 1
//! and a synchronisation every step makes the reference the policy (so every later step starts
//! at rewards 0 and the sigmoid loss ln 2), and a resumed TR-DPO run continues from the
//! checkpointed reference. (TRL's own trajectory with `sync_ref_model` is checked in
//! `sync_ref_model.rs`; transformers' decisions, case by case, in `flow.rs`.)

mod common;

use std::path::Path;

use common::{interrupted_run, resume_to_end, series, tiny_config, without_timing};
use sdpo_train::best::BestState;
use sdpo_train::checkpoint::{list_checkpoints, read_trainer_state};
use sdpo_train::{IntervalStrategy, SaveStrategy, SilentObserver, Start, TrainConfig, Trainer};

fn run(config: TrainConfig) -> Vec<sdpo_train::MetricsRecord> {
    let device = burn::tensor::Device::flex();
    let mut trainer =
        Trainer::new(config, &device, Start::Fresh, &mut SilentObserver).expect("trainer");
    trainer.train(None, &mut SilentObserver).expect("train")
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_best_checkpoint_survives_rotation_and_becomes_the_final_model() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    config.max_steps = 6;
    // A large step makes the eval loss move both ways over six steps.
    config.learning_rate = 0.2;
    config.eval_strategy = Some(IntervalStrategy::Steps);
    config.eval_steps = Some(1.into());
    config.save_steps = 1.into();
    config.save_total_limit = Some(2);
    config.load_best_model_at_end = true;
    std::fs::write(
        config.model_name_or_path.join("generation_config.json"),
        "{\"bos_token_id\": 1, \"eos_token_id\": 2, \"max_new_tokens\": 7}\n",
    )
    .unwrap();
    let out = config.output_dir.clone();
    let records = run(config);

    let evals = series(&records, "eval_loss");
    assert_eq!(evals.len(), 6, "{evals:?}");
    let (best_step, best_loss) = evals
        .iter()
        .copied()
        .fold(
            None,
            |best: Option<(usize, f64)>, (step, loss)| match best {
                Some((_, b)) if loss >= b => best,
                _ => Some((step, loss)),
            },
        )
        .expect("an evaluation");
    assert!(best_loss.is_finite());
    let kept: Vec<usize> = list_checkpoints(&out)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert!(
        kept.contains(&best_step),
        "{kept:?} lacks the best {best_step}"
    );
    assert!(kept.contains(&6), "{kept:?} lacks the newest");
    assert_eq!(kept.len(), 2, "{kept:?}");
    println!("eval_loss by step {evals:?}: best step {best_step}, checkpoints kept {kept:?}");

    let state = read_trainer_state(&out.join("checkpoint-6")).unwrap();
    assert_eq!(
        state.best,
        BestState {
            best_metric: Some(best_loss),
            best_global_step: Some(best_step),
            best_model_checkpoint: Some(out.join(format!("checkpoint-{best_step}"))),
        }
    );
    // The final model is the best checkpoint's weights, bit for bit.
    let best_dir = out.join(format!("checkpoint-{best_step}"));
    assert_eq!(
        bytes(&out.join("model.safetensors")),
        bytes(&best_dir.join("model.safetensors")),
        "the final model is not checkpoint-{best_step}"
    );
    for dir in [&out, &best_dir] {
        assert!(
            String::from_utf8(bytes(&dir.join("generation_config.json")))
                .unwrap()
                .contains("max_new_tokens"),
            "{} lacks the base's generation_config.json",
            dir.display()
        );
    }
    let card = String::from_utf8(bytes(&out.join("README.md"))).unwrap();
    for needle in [
        "# Model Card for out",
        "https://huggingface.co/papers/2507.07725",
        &format!("`checkpoint-{best_step}`"),
        "| `eval_loss` |",
    ] {
        assert!(
            card.contains(needle),
            "the model card lacks {needle:?}:\n{card}"
        );
    }
}

#[test]
fn save_strategy_best_saves_only_improvements_and_limit_one_keeps_only_the_best() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    config.max_steps = 6;
    config.learning_rate = 0.2;
    config.eval_strategy = Some(IntervalStrategy::Steps);
    config.eval_steps = Some(1.into());
    config.save_strategy = SaveStrategy::Best;
    config.metric_for_best_model = Some("rewards/accuracies".into());
    config.save_total_limit = Some(1);
    let out = config.output_dir.clone();
    let records = run(config);
    // Saved exactly where the accuracy strictly improved on every earlier evaluation.
    let accuracies = series(&records, "eval_rewards/accuracies");
    let mut best = f64::NEG_INFINITY;
    let mut best_step = None;
    for (step, value) in &accuracies {
        if *value > best {
            best = *value;
            best_step = Some(*step);
        }
    }
    let best_step = best_step.expect("an improvement");
    let kept: Vec<usize> = list_checkpoints(&out)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(kept, vec![best_step], "{accuracies:?}");
}

#[test]
fn tr_dpo_with_alpha_one_makes_the_reference_the_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny_config(tmp.path());
    config.max_steps = 3;
    config.eval_file = None;
    config.sync_ref_model = true;
    config.ref_model_mixup_alpha = 1.0;
    config.ref_model_sync_steps = 1;
    let records = run(config.clone());
    // Step 1 starts from reference = initial policy; each later step starts from reference =
    // the policy after the previous step: rewards exactly 0, SDPO's loss ln 2.
    let losses = series(&records, "loss");
    let margins = series(&records, "rewards/margins");
    assert_eq!(losses.len(), 3);
    for (step, loss) in &losses {
        assert!(
            (loss - std::f64::consts::LN_2).abs() < 1e-6,
            "step {step}: loss {loss} is not ln 2"
        );
    }
    for (step, margin) in margins {
        assert!(margin.abs() < 1e-6, "step {step}: margin {margin}");
    }
    // Without the synchronisation, the later steps move away from ln 2: the check above can
    // fail.
    let mut plain = config;
    plain.sync_ref_model = false;
    plain.output_dir = tmp.path().join("out-plain");
    let plain = series(&run(plain), "loss");
    assert!(
        plain[1..]
            .iter()
            .any(|(_, l)| (l - std::f64::consts::LN_2).abs() > 1e-4),
        "{plain:?}"
    );
}

#[test]
fn a_resumed_tr_dpo_run_continues_from_the_checkpointed_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let device = burn::tensor::Device::flex();
    let mut config = tiny_config(tmp.path());
    config.max_steps = 4;
    config.save_steps = 2.into();
    config.sync_ref_model = true;
    config.ref_model_mixup_alpha = 0.5;
    config.ref_model_sync_steps = 1;
    let full = run(config.clone());

    let (interrupted, checkpoint) = interrupted_run(&config, &device, 2);
    for file in ["model.safetensors", "config.json", "manifest.json"] {
        assert!(
            checkpoint.join("reference").join(file).is_file(),
            "checkpoint-2/reference lacks {file}"
        );
    }
    let after = resume_to_end(&interrupted, &device, &checkpoint);
    assert_eq!(
        without_timing(&full),
        without_timing(&after),
        "the resumed TR-DPO run differs from the uninterrupted one"
    );
    assert_eq!(
        bytes(
            &config
                .output_dir
                .join("checkpoint-4/reference/model.safetensors")
        ),
        bytes(
            &interrupted
                .output_dir
                .join("checkpoint-4/reference/model.safetensors")
        ),
    );

    // Resuming without the moving reference is refused by name.
    let mut changed = interrupted;
    changed.sync_ref_model = false;
    let err = Trainer::new(
        changed,
        &device,
        Start::Resume(&checkpoint),
        &mut SilentObserver,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sync_ref_model"), "{err}");
}

#[test]
fn tr_dpo_refuses_what_it_cannot_move() {
    let tmp = tempfile::tempdir().unwrap();
    let device = burn::tensor::Device::flex();
    let mut base = tiny_config(tmp.path());
    base.sync_ref_model = true;
    let cases: Vec<(TrainConfig, &str)> = vec![
        (
            TrainConfig {
                precompute_ref_log_probs: true,
                ..base.clone()
            },
            "precompute_ref_log_probs",
        ),
        (
            TrainConfig {
                use_peft: true,
                ..base.clone()
            },
            "ref_model_name_or_path",
        ),
        (
            TrainConfig {
                ref_model_mixup_alpha: 1.5,
                ..base.clone()
            },
            "ref_model_mixup_alpha",
        ),
        (
            TrainConfig {
                ref_model_sync_steps: 0,
                ..base.clone()
            },
            "ref_model_sync_steps",
        ),
    ];
    for (config, needle) in cases {
        let err = Trainer::new(config, &device, Start::Fresh, &mut SilentObserver)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // A reference of another size cannot be mixed in.
    let other = tmp.path().join("bigger");
    common::write_tiny_model_config(&other);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(other.join("config.json")).unwrap()).unwrap();
    json["intermediate_size"] = 48.into();
    std::fs::write(other.join("config.json"), json.to_string()).unwrap();
    let model_config = sdpo_models::ModelConfig::from_pretrained_dir(&other).unwrap();
    sdpo_models::CausalLm::from_config(&model_config, 3, &device)
        .save_pretrained(&other)
        .unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(common::tokenizer_dir().join(f), other.join(f)).unwrap();
    }
    base.ref_model_name_or_path = Some(other);
    let err = Trainer::new(base, &device, Start::Fresh, &mut SilentObserver)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sync_ref_model") && err.contains("shapes"),
        "{err}"
    );
}

#[test]
fn load_best_model_at_end_needs_a_checkpoint_at_every_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let device = burn::tensor::Device::flex();
    let mut base = tiny_config(tmp.path());
    base.load_best_model_at_end = true;
    base.eval_strategy = Some(IntervalStrategy::Steps);
    base.eval_steps = Some(2.into());
    for (config, needle) in [
        (
            TrainConfig {
                save_steps: 3.into(),
                ..base.clone()
            },
            "save_steps",
        ),
        (
            TrainConfig {
                save_strategy: SaveStrategy::Epoch,
                ..base.clone()
            },
            "load_best_model_at_end",
        ),
        (
            TrainConfig {
                load_best_model_at_end: false,
                save_strategy: SaveStrategy::Best,
                ..base.clone()
            },
            "metric_for_best_model",
        ),
    ] {
        let err = Trainer::new(config, &device, Start::Fresh, &mut SilentObserver)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // An unknown metric is named with what the evaluation reports.
    let config = TrainConfig {
        save_steps: 2.into(),
        metric_for_best_model: Some("rewards/accuracy".into()),
        ..base
    };
    let mut trainer = Trainer::new(config, &device, Start::Fresh, &mut SilentObserver).unwrap();
    let err = trainer
        .train(None, &mut SilentObserver)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("eval_rewards/accuracy") && err.contains("eval_rewards/accuracies"),
        "{err}"
    );
}
