//! The terminal view of a run: an indicatif progress bar plus one line per log, eval and
//! checkpoint.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sdpo_train::{MetricsRecord, StepProgress, TrainObserver};

/// Draws the progress bar on stderr (hidden when stderr is not a terminal; the log lines are
/// printed either way).
pub struct TerminalProgress {
    bar: ProgressBar,
    /// Real tokens and seconds of the steps since the last logged record (its tokens/s).
    window: (usize, f64),
}

impl TerminalProgress {
    /// A progress view; nothing is drawn until training starts.
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:30}] {msg} · {elapsed} elapsed, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self {
            bar,
            window: (0, 0.0),
        }
    }

    fn line(&self, text: &str) {
        if self.bar.is_hidden() || self.bar.is_finished() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

/// `key=value` pairs of a record in a stable, readable order (loss and rewards first).
pub fn format_record(record: &MetricsRecord) -> String {
    let mut keys: Vec<&String> = record.values.keys().collect();
    keys.sort_by_key(|k| {
        let rank = [
            "loss",
            "eval_loss",
            "rewards/accuracies",
            "eval_rewards/accuracies",
        ]
        .iter()
        .position(|p| p == k)
        .unwrap_or(usize::MAX);
        (rank, (*k).clone())
    });
    let fields: Vec<String> = keys
        .into_iter()
        .map(|k| format!("{k}={:.4}", record.values[k]))
        .collect();
    format!(
        "step {} epoch {:.2}: {}",
        record.step,
        record.epoch,
        fields.join(" ")
    )
}

impl TrainObserver for TerminalProgress {
    fn on_start(&mut self, start_step: usize, total_steps: usize) {
        self.bar.set_length(total_steps as u64);
        self.bar.set_position(start_step as u64);
        self.bar.reset_eta();
        self.bar.enable_steady_tick(Duration::from_millis(250));
    }

    fn on_step(&mut self, p: &StepProgress) {
        self.bar.set_position(p.step as u64);
        self.bar.set_message(format!(
            "loss {:.4} · reward acc {:.2} · {:.0} tok/s",
            p.loss, p.accuracy, p.tokens_per_second
        ));
        self.window.0 += p.tokens;
        self.window.1 += p.seconds;
    }

    fn on_log(&mut self, record: &MetricsRecord) {
        let (tokens, seconds) = std::mem::take(&mut self.window);
        let mut line = format_record(record);
        if seconds > 0.0 {
            line.push_str(&format!(" | {:.0} tok/s", tokens as f64 / seconds));
        }
        self.line(&line);
    }

    fn on_eval(&mut self, record: &MetricsRecord) {
        self.line(&format_record(record));
    }

    fn on_checkpoint(&mut self, dir: &Path) {
        self.line(&format!("saved {}", dir.display()));
    }

    fn on_message(&mut self, message: &str) {
        self.line(message);
    }

    fn on_finish(&mut self, dir: &Path) {
        self.bar.finish_and_clear();
        eprintln!("final model written to {}", dir.display());
    }
}
