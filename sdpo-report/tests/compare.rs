//! `sdpo report RUN_A RUN_B ...`: several hand-written runs in one page, one line per run in
//! each chart, the configuration keys that differ, and the errors.

use std::fmt::Write as _;
use std::path::Path;

use sdpo_report::{ReportError, RunComparison};

/// A run of `steps` train records (eval every 5) with `names`, and a `run_config.json`.
fn write_run(dir: &Path, names: &[&str], steps: usize, config: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for step in 1..=steps {
        let _ = write!(text, "{{\"step\":{step},\"epoch\":{}", step as f64 / 10.0);
        for name in names {
            let _ = write!(text, ",\"{name}\":{}", 0.5 + step as f64 * 0.01);
        }
        text.push_str("}\n");
        if step % 5 == 0 {
            let _ = write!(text, "{{\"step\":{step},\"epoch\":{}", step as f64 / 10.0);
            for name in names {
                let _ = write!(text, ",\"eval_{name}\":{}", 0.4 + step as f64 * 0.01);
            }
            text.push_str("}\n");
        }
    }
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    std::fs::write(dir.join("run_config.json"), config).unwrap();
}

const DPO: &[&str] = &["loss", "rewards/chosen", "rewards/rejected", "entropy"];

#[test]
fn each_chart_has_one_line_per_run_and_the_differences_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("sdpo"), tmp.path().join("dpo"));
    let mut sdpo: Vec<&str> = DPO.to_vec();
    sdpo.push("sdpo/chosen_kept_fraction");
    write_run(
        &a,
        &sdpo,
        10,
        r#"{"beta": 0.1, "loss_type": ["sdpo"], "seed": 42}"#,
    );
    write_run(
        &b,
        DPO,
        6,
        r#"{"beta": 0.2, "loss_type": ["sigmoid"], "seed": 42}"#,
    );
    let comparison = RunComparison::load(&[a.clone(), b.clone()]).unwrap();
    let html = comparison.to_html().unwrap();
    let charts = html.matches("<figure class=\"chart\"").count();
    // loss, rewards/chosen, rewards/rejected, the kept fraction (run `sdpo` only), entropy.
    assert_eq!(charts, 5, "{html}");
    for line in ["sdpo (train)", "sdpo (eval)", "dpo (train)", "dpo (eval)"] {
        assert!(html.contains(line), "legend lacks {line}");
    }
    // The kept fraction chart has only the SDPO run's lines.
    let kept = html
        .split("<figure class=\"chart\"")
        .find(|f| f.contains("data-metrics=\"sdpo/chosen_kept_fraction\""))
        .unwrap();
    assert!(kept.contains("</span>sdpo (train)") && !kept.contains("</span>dpo (train)"));
    // Differences: beta and loss_type, not seed.
    let config = html.split("id=\"config\"").nth(1).unwrap();
    assert!(
        config.contains("<code>beta</code></td><td>0.1</td><td>0.2</td>"),
        "{config}"
    );
    assert!(config.contains("<code>loss_type</code>"));
    assert!(!config.contains("<code>seed</code>"));
    // Latest values side by side.
    assert!(html.contains("<code>loss</code></td><td class=\"num\">0.6000"));
    let out = tmp.path().join("compare.html");
    comparison.write_html(&out).unwrap();
    assert!(
        std::fs::read_to_string(out)
            .unwrap()
            .contains("Run comparison: 2 runs")
    );
}

#[test]
fn fewer_than_two_runs_or_an_unreadable_run_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    write_run(&a, DPO, 3, "{}");
    assert!(matches!(
        RunComparison::load(std::slice::from_ref(&a)),
        Err(ReportError::TooFewRuns { count: 1 })
    ));
    let missing = tmp.path().join("nope");
    let err = RunComparison::load(&[a, missing.clone()])
        .unwrap_err()
        .to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
}
