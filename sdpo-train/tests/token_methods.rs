//! The token-level methods end to end in the trainer: each trains with its scoring models,
//! the scoring models load and cache like the reference, the keys are checked against
//! `loss_type`, and two invariants tie the trainer's columns to the methods' definitions:
//! TGDPO whose reward model is the reference is plain DPO (every token reward is 0), and
//! TIS-DPO whose contrastive pair is one model weighs every token 0 under the `origin`
//! transform (the loss stays `log 2` and the policy never moves).

mod common;

use common::{Messages, config_error_key, series, tiny_config, write_reference_model};
use sdpo_core::{LossType, LossTypes, TisdpoTransformName};
use sdpo_testkit::{Tolerance, assert_close};
use sdpo_train::{Reference, SilentObserver, Start, TrainConfig, Trainer};

fn run(config: TrainConfig, device: &burn::tensor::Device) -> Vec<sdpo_train::MetricsRecord> {
    let mut trainer =
        Trainer::new(config, device, Start::Fresh, &mut SilentObserver).expect("trainer");
    trainer.train(None, &mut SilentObserver).expect("train")
}

fn values(records: &[sdpo_train::MetricsRecord], key: &str) -> Vec<f64> {
    series(records, key).into_iter().map(|(_, v)| v).collect()
}

fn with_method(mut config: TrainConfig, method: LossType) -> TrainConfig {
    config.loss.loss_type = LossTypes::One(method);
    config
}

/// Trains `live` and a copy with `precompute_ref_log_probs` (in `cached_dir`); their `keys`
/// must agree, and the cache directory must hold `files` files. Returns the cached
/// configuration.
fn assert_cached_like_live(
    live: TrainConfig,
    cached_dir: std::path::PathBuf,
    keys: &[&str],
    files: usize,
) -> TrainConfig {
    let mut cached = live.clone();
    cached.output_dir = cached_dir;
    cached.precompute_ref_log_probs = true;
    let device = burn::tensor::Device::flex();
    let a = run(live, &device);
    let b = run(cached.clone(), &device);
    for key in keys {
        assert_close(
            &values(&b, key),
            &values(&a, key),
            Tolerance::elementwise(1e-5, 1e-5),
            &format!("{key}: precomputed vs live"),
        );
    }
    let found = std::fs::read_dir(cached.output_dir.join("ref_logps_cache"))
        .unwrap()
        .count();
    assert_eq!(found, files, "cache files");
    cached
}

#[test]
fn tgdpo_with_the_reference_as_reward_model_is_plain_dpo() {
    for dev in sdpo_testkit::test_devices!() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dpo = tiny_config(tmp.path());
        let reference = write_reference_model(tmp.path(), 7);
        dpo.ref_model_name_or_path = Some(reference.clone());
        dpo.loss.loss_type = LossTypes::One(LossType::Sigmoid);
        let mut tgdpo = with_method(dpo.clone(), LossType::Tgdpo);
        tgdpo.output_dir = tmp.path().join("out-tgdpo");
        tgdpo.tgdpo_reward_model_name_or_path = Some(reference);
        tgdpo.loss.tgdpo_alpha = 3.0;
        let a = run(dpo, &dev.device);
        let b = run(tgdpo, &dev.device);
        for key in ["loss", "rewards/chosen", "rewards/margins", "eval_loss"] {
            let (a, b) = (values(&a, key), values(&b, key));
            assert!(!a.is_empty(), "[{}] no {key}", dev.name);
            assert_close(
                &b,
                &a,
                Tolerance::elementwise(1e-5, 1e-5),
                &format!("[{}] {key}: tgdpo vs sigmoid", dev.name),
            );
        }
        assert_eq!(
            values(&b, "tokens/chosen_weight_mean"),
            vec![1.0; 3],
            "[{}] every token's beta multiple is 1",
            dev.name
        );
    }
}

#[test]
fn tisdpo_with_one_model_as_both_contrastive_models_weighs_every_token_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = with_method(tiny_config(tmp.path()), LossType::Tisdpo);
    let model = write_reference_model(tmp.path(), 8);
    config.tisdpo_positive_model_name_or_path = Some(model.clone());
    config.tisdpo_negative_model_name_or_path = Some(model);
    config.loss.tisdpo_transform = TisdpoTransformName::Origin;
    let records = run(config, &burn::tensor::Device::flex());
    let losses = values(&records, "loss");
    assert_eq!(losses.len(), 3);
    for loss in losses {
        assert!((loss - std::f64::consts::LN_2).abs() < 1e-6, "{loss}");
    }
    assert_eq!(values(&records, "tokens/chosen_weight_mean"), vec![0.0; 3]);
}

#[test]
fn every_method_trains_with_its_scoring_models() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_reference_model(tmp.path(), 21);
    let b = write_reference_model(tmp.path(), 22);
    let base = tiny_config(tmp.path());
    let mut runs: Vec<(LossType, TrainConfig)> = Vec::new();
    let mut config = with_method(base.clone(), LossType::Confpo);
    config.ref_model_name_or_path = Some(a.clone());
    runs.push((LossType::Confpo, config));
    let mut config = with_method(base.clone(), LossType::Sepo);
    config.sepo_oracle_model_name_or_path = Some(a.clone());
    config.loss.sepo_ratio = 0.5;
    runs.push((LossType::Sepo, config));
    let mut config = with_method(base.clone(), LossType::Tisdpo);
    config.tisdpo_positive_model_name_or_path = Some(a.clone());
    config.tisdpo_negative_model_name_or_path = Some(b.clone());
    runs.push((LossType::Tisdpo, config));
    let mut config = with_method(base.clone(), LossType::CriticalToken);
    config.ct_positive_model_name_or_path = Some(a.clone());
    config.ct_negative_model_name_or_path = Some(b.clone());
    runs.push((LossType::CriticalToken, config));
    let mut config = with_method(base, LossType::Tgdpo);
    config.tgdpo_reward_model_name_or_path = Some(b);
    runs.push((LossType::Tgdpo, config));
    for (method, mut config) in runs {
        config.output_dir = tmp.path().join(format!("out-{method}"));
        let mut messages = Messages::default();
        let mut trainer = Trainer::new(
            config,
            &burn::tensor::Device::flex(),
            Start::Fresh,
            &mut messages,
        )
        .unwrap_or_else(|e| panic!("{method}: {e}"));
        if method == LossType::Confpo {
            assert!(
                matches!(trainer.reference(), Reference::None),
                "ConfPO loads no reference"
            );
            assert!(
                messages.0.iter().any(|m| m.contains("reads no reference")),
                "{:?}",
                messages.0
            );
        } else {
            assert!(!trainer.scoring().is_empty(), "{method}: no scoring models");
        }
        let records = trainer
            .train(None, &mut SilentObserver)
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        for key in [
            "loss",
            "tokens/chosen_weight_mean",
            "tokens/rejected_weight_mean",
            "eval_loss",
        ] {
            let got = values(&records, key);
            assert!(!got.is_empty(), "{method}: no {key}");
            assert!(got.iter().all(|v| v.is_finite()), "{method}: {key} {got:?}");
        }
        let losses = values(&records, "loss");
        assert!(
            losses.windows(2).any(|w| w[0] != w[1]),
            "{method}: the policy never moved: {losses:?}"
        );
    }
}

#[test]
fn scoring_models_are_precomputed_into_caches_of_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let mut live = with_method(tiny_config(tmp.path()), LossType::Tgdpo);
    live.ref_model_name_or_path = Some(write_reference_model(tmp.path(), 7));
    live.tgdpo_reward_model_name_or_path = Some(write_reference_model(tmp.path(), 9));
    // Train and eval caches of the reference and of the reward model.
    let cached = assert_cached_like_live(
        live,
        tmp.path().join("out-cached"),
        &[
            "loss",
            "rewards/margins",
            "tokens/chosen_weight_mean",
            "eval_loss",
        ],
        4,
    );
    let device = burn::tensor::Device::flex();
    let mut messages = Messages::default();
    Trainer::new(cached, &device, Start::Fresh, &mut messages).unwrap();
    let reused = messages.0.iter().filter(|m| m.contains("reusing")).count();
    assert_eq!(reused, 4, "{:?}", messages.0);
}

#[test]
fn scoring_model_keys_are_checked_against_the_loss_type() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_reference_model(tmp.path(), 7);
    let config = with_method(tiny_config(tmp.path()), LossType::Sepo);
    let (key, reason) = config_error_key(config);
    assert_eq!(key, "sepo_oracle_model_name_or_path", "{reason}");
    assert!(reason.contains("required"), "{reason}");
    let mut config = tiny_config(tmp.path());
    config.tgdpo_reward_model_name_or_path = Some(model.clone());
    let (key, reason) = config_error_key(config);
    assert_eq!(key, "tgdpo_reward_model_name_or_path", "{reason}");
    assert!(reason.contains("tgdpo"), "{reason}");
    let mut config = with_method(tiny_config(tmp.path()), LossType::CriticalToken);
    config.ct_positive_model_name_or_path = Some(model);
    let (key, _) = config_error_key(config);
    assert_eq!(key, "ct_negative_model_name_or_path");
}

#[test]
fn the_critical_token_pair_is_cached_as_log_p_ce() {
    let tmp = tempfile::tempdir().unwrap();
    let mut live = with_method(tiny_config(tmp.path()), LossType::CriticalToken);
    live.ct_positive_model_name_or_path = Some(write_reference_model(tmp.path(), 31));
    live.ct_negative_model_name_or_path = Some(write_reference_model(tmp.path(), 32));
    live.loss.ct_ce_gamma = 0.5;
    // Train and eval caches of the reference and of log p_CE.
    let mut cached = assert_cached_like_live(
        live,
        tmp.path().join("out-cached"),
        &[
            "loss",
            "rewards/margins",
            "tokens/rejected_weight_mean",
            "eval_loss",
        ],
        4,
    );
    let device = burn::tensor::Device::flex();
    let mut messages = Messages::default();
    let trainer = Trainer::new(cached.clone(), &device, Start::Fresh, &mut messages).unwrap();
    drop(trainer);
    let reused = messages.0.iter().filter(|m| m.contains("reusing")).count();
    assert_eq!(reused, 4, "{:?}", messages.0);
    assert!(
        !messages
            .0
            .iter()
            .any(|m| m.contains("ct_positive_model_name_or_path: loading")),
        "a run whose caches are on disk loads neither model: {:?}",
        messages.0
    );
    // Another gamma is another contrastive distribution: its own cache.
    cached.loss.ct_ce_gamma = 1.0;
    let mut messages = Messages::default();
    Trainer::new(cached, &device, Start::Fresh, &mut messages).unwrap();
    let reused = messages.0.iter().filter(|m| m.contains("reusing")).count();
    assert_eq!(reused, 2, "only the reference's caches: {:?}", messages.0);
}
