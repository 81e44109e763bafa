//! The reduced study (one seed, one epoch, every arm) runs and satisfies its own sanity
//! conditions (`--check`): the stronger reference is more accurate on clean pairs than the
//! initial policy, the selection at q = 0 keeps every token (precision = decisive share), the
//! initial policy as reference keeps every token before the first step, and every number is
//! finite; SePO keeps its exact share of every completion. The results files are written and
//! list every arm, the token-level methods included.

use std::process::Command;

#[test]
fn the_quick_study_runs_and_passes_its_sanity_checks() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_sdpo-ablation"))
        .args(["--quick", "--check", "--out"])
        .arg(out.path())
        .output()
        .expect("run sdpo-ablation");
    assert!(
        status.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        status.status,
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
    )
    .expect("valid JSON");
    let runs = results["runs"].as_array().expect("runs");
    // 2 references x 4 thresholds x 1 seed, and the five token-level methods x 1 seed.
    assert_eq!(runs.len(), 13);
    let table = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    assert_eq!(table.matches(" | initial policy |").count(), 4, "{table}");
    assert_eq!(
        table.matches(" | stronger reference |").count(),
        4,
        "{table}"
    );
    for method in ["confpo", "sepo", "tisdpo", "critical_token", "tgdpo"] {
        assert_eq!(
            table.matches(&format!(" | {method} | ")).count(),
            1,
            "{method}: {table}"
        );
        let run = runs
            .iter()
            .find(|r| r["method"] == method)
            .unwrap_or_else(|| panic!("no {method} run"));
        assert!(
            run["scores"]["clean_accuracy"]
                .as_f64()
                .is_some_and(f64::is_finite),
            "{method}: {run}"
        );
    }
}
