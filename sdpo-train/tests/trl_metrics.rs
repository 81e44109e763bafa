//! The trainer's metrics of one step against what TRL 1.16's `DPOTrainer` logged on the same
//! batch (`dpo_metrics_v1.json`: the sdpo_e2e pairs, policy `models/llama`, reference
//! `models/llama_tied`, sigmoid loss): every metric `_compute_loss` logs (`loss`, the rewards,
//! `logps/*`, `logits/*`, `entropy`, `mean_token_accuracy`) within 1e-5 relative, the gradient
//! norm, `num_tokens` and `total_flos`, for training and evaluation, on the whole-graph and
//! the memory-bounded engine, with two rows per pair and with the shared prompt, on every
//! compiled backend.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use sdpo_core::{LossConfig, LossType, LossTypes, PreferenceLoss, read_metrics};
use sdpo_data::PreferenceBatch;
use sdpo_models::CausalLm;
use sdpo_testkit::{Tolerance, assert_close};
use sdpo_train::ScoringModels;
use sdpo_train::clip::global_grad_norm;
use sdpo_train::logps::{DeviceBatch, LogpsPath, MemoryBudget, RowLayout};
use sdpo_train::objective::{FrozenModels, batch_objective, micro_step};
use sdpo_train::reference::{Reference, Split};
use sdpo_train::run_summary::{non_embedding_params, total_flos};
use serde_json::Value;

/// The metrics `_compute_loss` logs, besides `num_tokens` (checked on its own).
const COMPUTE_LOSS_METRICS: [&str; 11] = [
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
    "entropy",
    "mean_token_accuracy",
];

fn fixture() -> Value {
    serde_json::from_str(&sdpo_testkit::read_fixture("dpo_metrics_v1.json"))
        .expect("dpo_metrics_v1.json")
}

/// TRL's collated batch (`[2B][T]`, chosen rows first) as a preference batch.
fn batch(fixture: &Value) -> PreferenceBatch {
    let rows = |key: &str| -> Vec<Vec<i64>> {
        fixture["batch"][key]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("a row")
                    .iter()
                    .map(|x| x.as_i64().expect("an id"))
                    .collect()
            })
            .collect()
    };
    let ids = rows("input_ids");
    let (rows_n, t) = (ids.len(), ids[0].len());
    PreferenceBatch {
        batch_size: rows_n / 2,
        seq_len: t,
        input_ids: ids.into_iter().flatten().collect(),
        attention_mask: rows("attention_mask").into_iter().flatten().collect(),
        completion_mask: rows("completion_mask").into_iter().flatten().collect(),
        pair_indices: (0..rows_n / 2).collect(),
        truncated: vec![false; rows_n],
    }
}

fn models(dir: &std::path::Path, fixture: &Value, device: &Device) -> (CausalLm, Reference) {
    let policy = CausalLm::from_pretrained(
        dir.join(fixture["policy_model"].as_str().unwrap()),
        &device.clone().autodiff(),
    )
    .unwrap()
    .train();
    let reference = Reference::Model(Box::new(
        CausalLm::from_pretrained(dir.join(fixture["ref_model"].as_str().unwrap()), device)
            .unwrap(),
    ));
    (policy, reference)
}

fn objective(fixture: &Value) -> PreferenceLoss {
    let config = &fixture["config"];
    assert_eq!(config["loss_type"], serde_json::json!(["sigmoid"]));
    PreferenceLoss::new(LossConfig {
        loss_type: LossTypes::One(LossType::Sigmoid),
        beta: config["beta"].as_f64().unwrap(),
        label_smoothing: config["label_smoothing"].as_f64().unwrap(),
        ..LossConfig::default()
    })
    .unwrap()
}

/// One training micro-step on `path`: the metrics read back and the gradients.
fn train_step(
    policy: &CausalLm,
    reference: &Reference,
    fixture: &Value,
    host: &PreferenceBatch,
    path: LogpsPath,
    device: &Device,
) -> (BTreeMap<String, f64>, GradientsParams) {
    let mut loss = objective(fixture);
    let batch = DeviceBatch::new(host, device);
    let scoring = ScoringModels::none();
    let frozen = FrozenModels {
        reference,
        scoring: &scoring,
    };
    let out = micro_step(policy, frozen, &path, host, &batch, &mut loss, 1.0).unwrap();
    let (metrics, grads) = (out.metrics, out.grads);
    let values = read_metrics(metrics)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    (values, grads)
}

fn compare(ours: &BTreeMap<String, f64>, log: &Value, prefix: &str, what: &str) -> usize {
    for name in COMPUTE_LOSS_METRICS {
        let expected = log[format!("{prefix}{name}")]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: TRL logged no {prefix}{name}"));
        let actual = *ours
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no {name} among {:?}", ours.keys()));
        assert_close(
            &[actual],
            &[expected],
            Tolerance::relative(1e-5),
            &format!("{what} {name}"),
        );
    }
    COMPUTE_LOSS_METRICS.len()
}

#[test]
fn one_step_logs_what_trl_logs_on_every_engine_path() {
    let fixture = fixture();
    let host = batch(&fixture);
    let dir = sdpo_testkit::fixtures_dir();
    let train_log = &fixture["train_log"];
    let mut checked = 0;
    for dev in sdpo_testkit::test_devices!() {
        let tiny = MemoryBudget {
            bytes: 1,
            max_buffer_bytes: 1,
        };
        for path in [LogpsPath::WHOLE, LogpsPath::bounded(tiny)]
            .into_iter()
            .flat_map(|p| [p, p.with_layout(RowLayout::SharedPrompt)])
        {
            let what = format!("[{} {path:?}]", dev.name);
            let (policy, reference) = models(&dir, &fixture, &dev.device);
            let (metrics, grads) =
                train_step(&policy, &reference, &fixture, &host, path, &dev.device);
            checked += compare(&metrics, train_log, "", &format!("{what} train"));
            let norm = global_grad_norm(&policy, &grads)
                .expect("gradients")
                .into_scalar::<f64>();
            // Gradients: the fixture README's 1e-4.
            assert_close(
                &[norm],
                &[train_log["grad_norm"].as_f64().unwrap()],
                Tolerance::relative(1e-4),
                &format!("{what} grad_norm"),
            );

            // Evaluation: the same batch through the eval path (no graph).
            let mut loss = objective(&fixture);
            let batch = DeviceBatch::new(&host, &dev.device);
            let scoring = ScoringModels::none();
            let out = batch_objective(
                &policy.valid(),
                FrozenModels {
                    reference: &reference,
                    scoring: &scoring,
                },
                &path,
                Split::Eval,
                &host,
                &batch,
                &mut loss,
            )
            .unwrap();
            let eval: BTreeMap<String, f64> = read_metrics(out.metrics)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            checked += compare(
                &eval,
                &fixture["eval_log"],
                "eval_",
                &format!("{what} eval"),
            );
            println!("{what}: train and eval metrics match TRL 1.16");
        }
    }
    // TRL's `num_tokens` counts the real tokens of the 2B rows; `total_flos` is 6 × padded
    // positions × non-embedding parameters of the policy.
    assert_eq!(
        DeviceBatch::num_tokens(&host) as f64,
        train_log["num_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        fixture["eval_log"]["eval_num_tokens"], train_log["num_tokens"],
        "TRL logs the training token count with the evaluation"
    );
    let policy = CausalLm::from_pretrained(
        dir.join(fixture["policy_model"].as_str().unwrap()),
        &Device::flex(),
    )
    .unwrap();
    assert_eq!(
        total_flos(non_embedding_params(&policy), host.input_ids.len() as u64),
        fixture["end_log"]["total_flos"].as_f64().unwrap()
    );
    println!("TRL 1.16 metrics: {checked} values checked, plus num_tokens and total_flos");
}
