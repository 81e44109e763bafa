//! SIGKILL at any moment: `sdpo train` killed at pseudo-random moments (during start-up, mid
//! step, mid save) and restarted each time with `--resume-from-checkpoint latest` (or from
//! scratch in the same `output_dir` when it died before its first checkpoint) ends with final
//! weights bit-identical to an uninterrupted run.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

mod common;
use common::write_tiny_run;

/// A tiny run: a 2-layer Llama with SmolLM2's vocabulary, random init, a checkpoint every step.
fn write_run(root: &Path) -> std::path::PathBuf {
    write_tiny_run(
        root,
        2,
        16,
        r#"loss_type = ["sdpo", "bco_pair"]
learning_rate = 0.01
per_device_train_batch_size = 4
per_device_eval_batch_size = 4
max_steps = 12
logging_steps = 1
eval_steps = 3
save_steps = 1
save_total_limit = 2
max_length = 64
"#,
    )
}

fn train(root: &Path, output_dir: &str, resume: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sdpo"));
    cmd.current_dir(root)
        .env_remove("BURN_DEVICE")
        .args(["train", "--config", "run.toml", "--device", "flex", "--set"])
        .arg(format!("output_dir=\"{output_dir}\""))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if resume {
        cmd.args(["--resume-from-checkpoint", "latest"]);
    }
    cmd.spawn().expect("spawn sdpo")
}

fn finish(child: Child) -> (ExitStatus, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until `child` exits or `limit` passes; `None` if it is still running.
fn wait_at_most(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn has_checkpoint(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("checkpoint-")
                && e.path().join("trainer_state.json").is_file()
        })
    })
}

#[test]
fn killed_at_random_moments_and_resumed_the_final_weights_are_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    write_run(tmp.path());

    let started = Instant::now();
    let (status, stderr) = finish(train(tmp.path(), "full", false));
    assert!(status.success(), "uninterrupted run failed:\n{stderr}");
    let full_time = started.elapsed();
    let expected = std::fs::read(tmp.path().join("full/model.safetensors")).unwrap();

    // A fixed-seed LCG: the kill moments are arbitrary but the same on every run of the test.
    let mut state: u64 = 0x5eed_1234_abcd_0001;
    let mut next_fraction = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let killed_dir = tmp.path().join("killed");
    let mut kills = 0;
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts < 40, "the interrupted run never finished");
        let resume = has_checkpoint(&killed_dir);
        let mut child = train(tmp.path(), "killed", resume);
        if kills < 6 {
            // Anywhere from start-up to half a whole run: a restarted run has fewer steps left,
            // so later delays would mostly miss.
            let delay = full_time.mul_f64(0.5 * next_fraction());
            if wait_at_most(&mut child, delay).is_none() {
                child.kill().unwrap(); // SIGKILL on Unix: no clean-up runs.
                child.wait().unwrap();
                kills += 1;
                continue;
            }
        }
        let (status, stderr) = finish(child);
        assert!(
            status.success(),
            "restarted run failed (resume = {resume}):\n{stderr}"
        );
        break;
    }
    assert!(kills >= 3, "only {kills} kills landed");
    let actual = std::fs::read(killed_dir.join("model.safetensors")).unwrap();
    assert!(
        actual == expected,
        "final weights after {kills} kills differ from the uninterrupted run"
    );
    println!("{kills} kills, {attempts} starts, final weights bit-identical");
}
