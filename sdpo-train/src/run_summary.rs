//! The metrics of a run as a whole, as transformers' `Trainer` and TRL log them besides the
//! per-batch ones: TRL's cumulative `num_tokens`, transformers' `total_flos`, the end-of-run
//! record (`train_runtime`, `train_samples_per_second`, `train_steps_per_second`,
//! `total_flos`, `train_loss`) and evaluation's speed (`eval_runtime`,
//! `eval_samples_per_second`, `eval_steps_per_second`).

use std::collections::BTreeMap;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use sdpo_models::CausalLm;

use crate::config::TrainConfig;

/// Tokens a run has trained on so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Real tokens of the `2B` rows (`attention_mask.sum()`), TRL's `num_tokens`.
    pub tokens: u64,
    /// Every position of the padded `2B` rows (`input_ids.numel()`), what transformers'
    /// `floating_point_ops` counts.
    pub padded: u64,
}

/// Counts the float parameters outside `Embedding` modules.
#[derive(Default)]
struct NonEmbedding {
    containers: Vec<bool>,
    count: u64,
}

impl ModuleVisitor for NonEmbedding {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.containers.push(container_type == "Struct:Embedding");
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.containers.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !self.containers.last().copied().unwrap_or(false) {
            self.count += param.shape().num_elements() as u64;
        }
    }
}

/// The policy's parameters without its embeddings (`num_parameters(exclude_embeddings=True)`
/// in transformers: every `nn.Embedding` left out, a tied output head counted once, i.e. not
/// at all).
pub fn non_embedding_params(model: &CausalLm) -> u64 {
    let mut visitor = NonEmbedding::default();
    model.visit(&mut visitor);
    visitor.count
}

/// transformers' `total_flos`: `6 × tokens × parameters` summed over the training batches,
/// with every padded position of the policy's `2B` rows counted (the reference's forward is
/// not).
pub fn total_flos(non_embedding_params: u64, padded_tokens: u64) -> f64 {
    6.0 * padded_tokens as f64 * non_embedding_params as f64
}

/// Rounds as Python's `round(value, digits)` does for the values `speed_metrics` writes.
fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// What one call of `Trainer::train` did, for its end-of-run record.
#[derive(Debug, Clone)]
pub struct Session {
    /// When training started.
    pub started: Instant,
    /// Optimizer steps done in this call.
    pub steps: usize,
    /// The sum of those steps' losses.
    pub loss_sum: f64,
}

impl Session {
    /// A session starting now.
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            steps: 0,
            loss_sum: 0.0,
        }
    }
}

/// The end-of-run record's values, as transformers' `_finalize_training` computes them: the
/// samples of the whole schedule (`max_steps × per_device_train_batch_size ×
/// gradient_accumulation_steps` with `max_steps`, else pairs × `num_train_epochs`) scaled to
/// the share of steps this session ran, rounded as `speed_metrics` rounds.
pub fn end_of_run(
    config: &TrainConfig,
    total_steps: usize,
    train_pairs: usize,
    session: &Session,
    flos: f64,
) -> BTreeMap<String, f64> {
    let runtime = session.started.elapsed().as_secs_f64();
    let samples = if config.max_steps > 0 {
        (config.max_steps as f64)
            * (config.per_device_train_batch_size * config.gradient_accumulation_steps) as f64
    } else {
        train_pairs as f64 * config.num_train_epochs
    };
    let samples = samples * session.steps as f64 / total_steps.max(1) as f64;
    let mut out = BTreeMap::from([
        ("train_runtime".to_string(), round(runtime, 4)),
        ("total_flos".to_string(), flos),
        (
            "train_loss".to_string(),
            session.loss_sum / (session.steps as f64).max(0.001),
        ),
    ]);
    if runtime > 0.0 {
        out.insert(
            "train_samples_per_second".into(),
            round(samples / runtime, 3),
        );
        out.insert(
            "train_steps_per_second".into(),
            round(session.steps as f64 / runtime, 3),
        );
    }
    out
}

/// Evaluation's speed, as transformers' `evaluate` logs it: `pairs` in `batches` took
/// `started.elapsed()`.
pub fn eval_speed(started: Instant, pairs: usize, batches: usize) -> [(&'static str, f64); 3] {
    let runtime = started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    [
        ("runtime", round(runtime, 4)),
        ("samples_per_second", round(pairs as f64 / runtime, 3)),
        ("steps_per_second", round(batches as f64 / runtime, 3)),
    ]
}

/// Metrics that depend on the clock: a rerun (or a resumed run) cannot reproduce them.
pub const TIMING_METRICS: [&str; 6] = [
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "eval_runtime",
    "eval_samples_per_second",
    "eval_steps_per_second",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_follow_transformers_rules() {
        let mut config = TrainConfig {
            max_steps: 10,
            per_device_train_batch_size: 4,
            gradient_accumulation_steps: 2,
            ..TrainConfig::default()
        };
        let session = Session {
            started: Instant::now() - std::time::Duration::from_secs(4),
            steps: 5,
            loss_sum: 3.0,
        };
        let v = end_of_run(&config, 10, 1000, &session, 12.0);
        // 10 × 4 × 2 samples in the schedule, half of the steps in this session, over ~4 s.
        assert!((v["train_samples_per_second"] - 40.0 / v["train_runtime"]).abs() < 1e-2);
        assert!((v["train_steps_per_second"] - 5.0 / v["train_runtime"]).abs() < 1e-2);
        assert_eq!(v["train_loss"], 0.6);
        assert_eq!(v["total_flos"], 12.0);
        config.max_steps = -1;
        config.num_train_epochs = 2.0;
        let v = end_of_run(&config, 10, 30, &session, 0.0);
        assert!((v["train_samples_per_second"] - 30.0 / v["train_runtime"]).abs() < 1e-2);
        assert_eq!(round(2.34567, 3), 2.346);
    }
}
