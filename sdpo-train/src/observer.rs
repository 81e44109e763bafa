//! What the trainer reports while it runs: a callback for user interfaces (the records it
//! logs are `sdpo-run`'s [`MetricsRecord`], appended to [`MetricsFile`]).

use std::path::Path;

pub use sdpo_run::{MetricsFile, MetricsRecord};

/// Progress of one optimizer step, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub struct StepProgress {
    /// Steps done.
    pub step: usize,
    /// Steps in the run.
    pub total_steps: usize,
    /// The step's loss.
    pub loss: f64,
    /// The step's `rewards/accuracies`.
    pub accuracy: f64,
    /// Real (non-padding) tokens per second through policy and reference.
    pub tokens_per_second: f64,
    /// Real (non-padding) tokens of the step.
    pub tokens: usize,
    /// Seconds the step took.
    pub seconds: f64,
}

/// Receives the trainer's reports. Every method has an empty default.
pub trait TrainObserver {
    /// Training starts (or resumes at `start_step`).
    fn on_start(&mut self, _start_step: usize, _total_steps: usize) {}
    /// An optimizer step finished.
    fn on_step(&mut self, _progress: &StepProgress) {}
    /// Training metrics were logged.
    fn on_log(&mut self, _record: &MetricsRecord) {}
    /// Evaluation metrics were computed.
    fn on_eval(&mut self, _record: &MetricsRecord) {}
    /// A checkpoint was written.
    fn on_checkpoint(&mut self, _dir: &Path) {}
    /// A notable event in words (data report, cache use, ...).
    fn on_message(&mut self, _message: &str) {}
    /// Training finished; the final model is in `dir`.
    fn on_finish(&mut self, _dir: &Path) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct SilentObserver;

impl TrainObserver for SilentObserver {}
