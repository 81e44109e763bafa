//! The study's results as a Markdown table and JSON, and its sanity conditions.

use std::fmt::Write as _;

use serde_json::{Value, json};

use sdpo_core::LossType;

use crate::data::{COMPLETION_LEN, DECISIVE, DISTRACTORS};
use crate::study::{Options, RunResult, Study};

/// Mean and sample standard deviation.
fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// An arm: `(method label, reference, epochs)`.
type Arm = (String, &'static str, f64);

/// The method column of a run: `sigmoid` (DPO) at q = 0, `sdpo` with its q, or the method.
pub fn method_label(run: &RunResult) -> String {
    match run.method {
        LossType::Sigmoid => "DPO (q = 0)".to_string(),
        LossType::Sdpo => format!("SDPO q = {}", run.threshold),
        method => method.name().to_string(),
    }
}

fn arm_of(run: &RunResult) -> Arm {
    (method_label(run), run.reference, run.epochs)
}

/// The arms in run order.
fn arms(study: &Study) -> Vec<Arm> {
    let mut arms: Vec<Arm> = Vec::new();
    for run in &study.runs {
        let arm = arm_of(run);
        if !arms.contains(&arm) {
            arms.push(arm);
        }
    }
    arms
}

fn runs_of<'a>(study: &'a Study, arm: &Arm) -> Vec<&'a RunResult> {
    study.runs.iter().filter(|r| arm_of(r) == *arm).collect()
}

fn cell(runs: &[&RunResult], value: impl Fn(&RunResult) -> f64) -> String {
    let values: Vec<f64> = runs.iter().map(|r| value(r)).collect();
    let (mean, sd) = mean_sd(&values);
    if values.len() > 1 {
        format!("{mean:.3} ± {sd:.3}")
    } else {
        format!("{mean:.3}")
    }
}

/// The results table and the setup, as Markdown.
pub fn markdown(study: &Study, options: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "SDPO and token-level methods ablation: {} seed(s) per arm, training for {:?} epoch(s), {} decisive + {} distractor differences \
         per {}-word completion (decisive share of scored tokens {:.3}); whole study {:.0} s.\n",
        options.seeds,
        options.epochs,
        DECISIVE,
        DISTRACTORS,
        COMPLETION_LEN,
        study.decisive_share,
        study.seconds
    );
    let _ = writeln!(
        out,
        "Clean-pair likelihood accuracy: initial policy {:.3}, stronger reference {:.3} \
         (its implicit-reward accuracy against the initial policy {:.3}).\n",
        study.initial.likelihood_accuracy,
        study.reference.likelihood_accuracy,
        study.reference.clean_accuracy
    );
    out.push_str(
        "| epochs | method | reference (scoring models) | clean accuracy | clean margin | distractor \\|margin\\| | precision (start → end) | recall (end) | kept (end) | s/run |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for arm in arms(study) {
        let runs = runs_of(study, &arm);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} → {} | {} | {} | {} |",
            arm.2,
            arm.0,
            arm.1,
            cell(&runs, |r| r.scores.clean_accuracy),
            cell(&runs, |r| r.scores.clean_margin),
            cell(&runs, |r| r.scores.distractor_margin),
            cell(&runs, |r| r.selection_start.precision),
            cell(&runs, |r| r.selection_end.precision),
            cell(&runs, |r| r.selection_end.recall),
            cell(&runs, |r| r.selection_end.kept),
            cell(&runs, |r| r.seconds),
        );
    }
    out
}

/// Every number of the study as JSON.
pub fn json(study: &Study, options: &Options) -> Value {
    let scores = |s: &crate::study::Scores| {
        json!({
            "clean_accuracy": s.clean_accuracy,
            "clean_margin": s.clean_margin,
            "distractor_abs_margin": s.distractor_margin,
            "likelihood_accuracy": s.likelihood_accuracy,
        })
    };
    let selection = |s: &crate::study::Selection| json!({"precision": s.precision, "recall": s.recall, "kept": s.kept});
    json!({
        "options": {
            "seeds": options.seeds,
            "epochs": options.epochs,
            "reference_epochs": options.reference_epochs,
            "thresholds": options.thresholds,
            "methods": options.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
        },
        "decisive_share": study.decisive_share,
        "initial_policy": scores(&study.initial),
        "stronger_reference": scores(&study.reference),
        "seconds": study.seconds,
        "reverse_reference": scores(&study.reverse),
        "runs": study.runs.iter().map(|r| json!({
            "method": r.method.name(),
            "reference": r.reference,
            "sdpo_threshold": r.threshold,
            "epochs": r.epochs,
            "seed": r.seed,
            "scores": scores(&r.scores),
            "selection_start": selection(&r.selection_start),
            "selection_end": selection(&r.selection_end),
            "final_loss": r.final_loss,
            "seconds": r.seconds,
        })).collect::<Vec<_>>(),
    })
}

/// The conditions the study must satisfy to be meaningful; each failure in words.
pub fn sanity_failures(study: &Study) -> Vec<String> {
    let mut failures = Vec::new();
    if study.reference.likelihood_accuracy <= study.initial.likelihood_accuracy {
        failures.push(format!(
            "the stronger reference ({:.3}) is not more accurate on clean pairs than the initial policy ({:.3})",
            study.reference.likelihood_accuracy, study.initial.likelihood_accuracy
        ));
    }
    for run in &study.runs {
        let name = format!(
            "{} ({}) epochs={} seed {}",
            method_label(run),
            run.reference,
            run.epochs,
            run.seed
        );
        let numbers = [
            run.final_loss,
            run.scores.clean_accuracy,
            run.scores.clean_margin,
            run.scores.distractor_margin,
        ];
        if numbers.iter().any(|v| !v.is_finite()) {
            failures.push(format!("{name}: a non-finite result {numbers:?}"));
        }
        if run.method == LossType::Sigmoid {
            for (when, s) in [("start", run.selection_start), ("end", run.selection_end)] {
                if (s.precision - study.decisive_share).abs() > 1e-12 || s.kept != 1.0 {
                    failures.push(format!(
                        "{name}: at q = 0 every token is kept, so the precision at the {when} must \
                         be the decisive share {:.4}; got {:.4} (kept {:.4})",
                        study.decisive_share, s.precision, s.kept
                    ));
                }
            }
        }
        // SePO keeps exactly floor(sepo_ratio * (n - 1)) of the n tokens of every completion.
        let sepo_kept = (0.3 * COMPLETION_LEN as f64).floor() / (COMPLETION_LEN + 1) as f64;
        if run.method == LossType::Sepo
            && [run.selection_start.kept, run.selection_end.kept]
                .iter()
                .any(|k| (k - sepo_kept).abs() > 1e-12)
        {
            failures.push(format!(
                "{name}: SePO keeps {sepo_kept:.4} of the tokens of every completion; kept {:.4} \
                 at the start, {:.4} at the end",
                run.selection_start.kept, run.selection_end.kept
            ));
        }
        if matches!(run.method, LossType::Sigmoid | LossType::Sdpo)
            && run.reference == "initial policy"
            && run.selection_start.kept != 1.0
        {
            failures.push(format!(
                "{name}: with the initial policy as reference every score is 0 before the first \
                 step, so every token is kept; kept {:.4}",
                run.selection_start.kept
            ));
        }
    }
    failures
}
