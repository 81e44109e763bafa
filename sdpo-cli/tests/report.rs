//! `sdpo report` and `sdpo inspect` end to end: a short real training run reported on (charts,
//! the configuration from its checkpoint or from `--config`, the data it read) and inspected
//! (HTML and text views of its token selection), and the errors a user sees.

use std::path::Path;

mod common;
use common::{sdpo, text, write_tiny_run};

/// A tiny SDPO run (1-layer Llama with SmolLM2's vocabulary, random init, 12 pairs, 4 steps,
/// evaluation every 2, checkpoints at steps 2 and 4). Returns the config path.
fn write_run(root: &Path) -> std::path::PathBuf {
    write_tiny_run(
        root,
        1,
        12,
        r#"output_dir = "out"
loss_type = "sdpo"
learning_rate = 0.01
per_device_train_batch_size = 4
per_device_eval_batch_size = 4
max_steps = 4
logging_steps = 1
eval_steps = 2
save_steps = 2
max_length = 64
"#,
    )
}

fn charts(html: &str) -> usize {
    html.matches("<figure class=\"chart\"").count()
}

#[test]
fn report_on_a_real_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_run(tmp.path());
    let config = config.to_str().unwrap();
    let out = sdpo(
        &["train", "--config", config, "--device", "flex"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));

    let out = sdpo(&["report", "out"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("report written to out/report.html"));
    let html = std::fs::read_to_string(tmp.path().join("out/report.html")).unwrap();
    // loss, accuracies, margins, rewards, kept fraction, threshold, learning rate, grad norm,
    // logps, logits, entropy, token accuracy, tokens: every metric the trainer logs, train and
    // eval on the same axes (the end-of-run record and eval speed are numbers, not charts).
    assert_eq!(charts(&html), 13, "{html}");
    assert!(html.contains("loss (eval)"));
    assert!(html.contains("step 4 of 4"));
    // The configuration and data summary `sdpo train` wrote at start-up.
    assert!(html.contains("run_config.json"), "{html}");
    assert!(html.contains("<tr><td>loss_type</td><td>sdpo</td></tr>"));
    assert!(html.contains("<td><code>train.jsonl</code></td><td class=\"num\">12</td>"));

    // --out elsewhere, with the configuration from --config and an override.
    let out = sdpo(
        &[
            "report",
            "out",
            "--out",
            "elsewhere.html",
            "--config",
            config,
            "--set",
            "beta=0.5",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let html = std::fs::read_to_string(tmp.path().join("elsewhere.html")).unwrap();
    assert!(html.contains("From <code>--config "));
    assert!(html.contains("<tr><td>beta</td><td>0.5</td></tr>"));
}

#[test]
fn report_errors_are_one_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sdpo(&["report", "missing"], tmp.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: cannot report on `missing`: run directory `missing` does not exist or is not a directory"
    );

    std::fs::create_dir(tmp.path().join("run")).unwrap();
    std::fs::write(tmp.path().join("run/metrics.jsonl"), "").unwrap();
    let out = sdpo(&["report", "run"], tmp.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no records"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    std::fs::write(
        tmp.path().join("run/metrics.jsonl"),
        "{\"step\":1,\"loss\":0.5}\nxx\n",
    )
    .unwrap();
    let out = sdpo(&["report", "run"], tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metrics.jsonl` line 2: not a JSON object"),
        "{stderr}"
    );
    assert!(!tmp.path().join("run/report.html").exists());
}

/// Token elements in an inspect page, as `sdpo inspect` counts them.
fn token_elements(html: &str) -> usize {
    html.matches("<span class=\"tok ").count()
}

#[test]
fn inspect_on_a_real_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_run(tmp.path());
    let config = config.to_str().unwrap();
    let out = sdpo(
        &["train", "--config", config, "--device", "flex"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));

    // HTML, two thresholds side by side, on the eval file.
    let out = sdpo(
        &[
            "inspect",
            "--config",
            config,
            "--checkpoint",
            "out/checkpoint-4",
            "--pairs",
            "3",
            "--threshold",
            "0.3",
            "--threshold",
            "0.6",
            "--out",
            "inspect.html",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let count: usize = stderr
        .split("inspected 3 pairs (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no token element count in {stderr}"));
    let html = std::fs::read_to_string(tmp.path().join("inspect.html")).unwrap();
    assert!(count > 0);
    assert_eq!(token_elements(&html), count, "token elements in the page");
    assert!(html.contains("q = 0.3") && html.contains("q = 0.6"));
    // Self-contained: no external script, stylesheet, image or import (the SVG namespace URI
    // is a name, not a fetch).
    for fetch in ["src=\"http", "href=\"http", "<link", "@import", "url(http"] {
        assert!(!html.contains(fetch), "the page fetches something: {fetch}");
    }

    // Text, pairs picked by index from the train file, no colours: kept tokens are bracketed.
    let out = sdpo(
        &[
            "inspect", "--config", config, "--file", "train", "--index", "1,3", "--format", "text",
            "--color", "never",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("=== pair 1 ") && stdout.contains("=== pair 3 "),
        "{stdout}"
    );
    assert!(!stdout.contains("=== pair 0 "), "{stdout}");
    assert!(
        stdout.contains('[') && !stdout.contains('\u{1b}'),
        "{stdout}"
    );
}

#[test]
fn inspect_compares_sdpo_with_token_level_methods_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_run(tmp.path());
    let config = config.to_str().unwrap();
    let out = sdpo(
        &["train", "--config", config, "--device", "flex"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    // TGDPO's reward model: the trained checkpoint (a DPO-trained model, with its tokenizer).
    let out = sdpo(
        &[
            "inspect",
            "--config",
            config,
            "--set",
            "tgdpo_reward_model_name_or_path=out/checkpoint-4",
            "--pairs",
            "2",
            "--threshold",
            "0.6",
            "--method",
            "tgdpo",
            "--method",
            "confpo",
            "--format",
            "text",
            "--color",
            "never",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("columns q = 0.6, tgdpo, confpo"),
        "{stdout}"
    );
    for heading in ["--- q = 0.6 ---", "--- tgdpo ---", "--- confpo ---"] {
        assert_eq!(stdout.matches(heading).count(), 2, "{heading}: {stdout}");
    }
    assert!(stdout.contains("sum weight"), "{stdout}");

    let out = sdpo(
        &[
            "inspect", "--config", config, "--method", "cdpo", "--format", "text",
        ],
        tmp.path(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--method cdpo") && stderr.contains("critical_token"),
        "{stderr}"
    );
}

#[test]
fn inspect_refuses_hostile_input_with_one_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_run(tmp.path());
    let config = config.to_str().unwrap();
    let inspect = |extra: &[&str]| {
        let mut args = vec!["inspect", "--config", config, "--format", "text"];
        args.extend_from_slice(extra);
        let out = sdpo(&args, tmp.path());
        assert!(!out.status.success(), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    };

    // A pair index past the end of the eval file (4 pairs).
    let stderr = inspect(&["--index", "2,99"]);
    assert!(stderr.contains("pair 99 is out of range"), "{stderr}");
    assert!(stderr.contains("has 4 pairs"), "{stderr}");

    // An empty data file.
    std::fs::write(tmp.path().join("empty.jsonl"), "").unwrap();
    let stderr = inspect(&["--file", "empty.jsonl"]);
    assert!(stderr.contains("empty.jsonl"), "{stderr}");

    // A checkpoint whose vocabulary (the tiny fixture Llama's) does not cover the tokenizer's.
    let other = sdpo_testkit::fixtures_dir().join("models/llama");
    let stderr = inspect(&["--checkpoint", other.to_str().unwrap()]);
    assert!(stderr.contains("vocab"), "{stderr}");

    // A threshold outside [0, 1].
    let stderr = inspect(&["--threshold", "1.5"]);
    assert!(stderr.contains("--threshold 1.5"), "{stderr}");
}
