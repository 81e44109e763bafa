//! `ref_layer_streaming`: the reference streamed one decoder layer at a time from its weight
//! files gives the cache of the reference held in memory byte for byte (two rows per pair and
//! the shared-prompt rows, one pass over the layers and several, a whole split and a shard),
//! and a configuration that cannot stream is refused naming the key.

use std::path::Path;

mod common;
use common::{sdpo, text, write_tiny_run};

/// A tiny run whose reference is the policy after one training step, saved as weight files.
fn write_run(root: &Path) {
    write_tiny_run(
        root,
        3,
        22,
        r#"loss_type = "sdpo"
per_device_train_batch_size = 2
per_device_eval_batch_size = 3
max_steps = 1
max_length = 64
gradient_checkpointing = true
"#,
    );
    // Wider than the default tiny model, so that a 1 MiB budget holds the hidden states of a
    // few batches only (several passes over the layers per split).
    let config = root.join("model/config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["hidden_size"] = 192.into();
    json["num_attention_heads"] = 3.into();
    json["head_dim"] = 64.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let saved = sdpo(
        &[
            "train",
            "--config",
            "run.toml",
            "--device",
            "flex",
            "--set",
            "output_dir=\"ref\"",
        ],
        root,
    );
    assert!(saved.status.success(), "{}", text(&saved));
    assert!(root.join("ref/model.safetensors").is_file());
}

fn precompute(root: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let output_dir = format!("output_dir=\"{out}\"");
    let mut args = vec![
        "precompute-ref",
        "--config",
        "run.toml",
        "--device",
        "flex",
        "--set",
        "precompute_ref_log_probs=true",
        "--set",
        "ref_model_name_or_path=\"ref\"",
        "--set",
        &output_dir,
    ];
    args.extend(extra);
    let output = sdpo(&args, root);
    assert!(output.status.success(), "{}", text(&output));
    output
}

/// Every cache file under `root/out`, by name, with its bytes.
fn cache_files(root: &Path, out: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> =
        std::fs::read_dir(root.join(out).join("ref_logps_cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
    files.sort();
    files
}

#[test]
fn a_streamed_reference_gives_the_in_memory_cache_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_run(root);
    let variants: [&[&str]; 4] = [
        &[],
        &["--set", "memory_budget_mib=1"],
        &[
            "--set",
            "shared_prompt_forward=true",
            "--set",
            "memory_budget_mib=1",
        ],
        &["--shard", "1/3"],
    ];
    for (i, variant) in variants.iter().enumerate() {
        let memory = format!("memory-{i}");
        let streamed = format!("streamed-{i}");
        precompute(root, &memory, variant);
        let mut args = variant.to_vec();
        args.extend(["--set", "ref_layer_streaming=true"]);
        let log = text(&precompute(root, &streamed, &args));
        assert!(
            log.contains("streaming the reference `") && !log.contains("loading the reference"),
            "{log}"
        );
        // The 1 MiB budget holds a few batches' hidden states: several passes over the layers.
        let passes = log
            .matches("train: streaming the reference's 3 layers")
            .count();
        let several = variant.contains(&"memory_budget_mib=1");
        assert!(
            if several { passes >= 2 } else { passes == 1 },
            "{passes} passes: {log}"
        );
        let (want, got) = (cache_files(root, &memory), cache_files(root, &streamed));
        assert_eq!(want.len(), 2, "train and eval files: {variant:?}");
        assert_eq!(
            want.iter().map(|f| &f.0).collect::<Vec<_>>(),
            got.iter().map(|f| &f.0).collect::<Vec<_>>(),
            "the same cache keys: {variant:?}"
        );
        for ((name, a), (_, b)) in want.iter().zip(&got) {
            assert!(a == b, "{name} differs when streamed: {variant:?}");
        }
    }
    // Training reads the streamed cache without loading the reference.
    let trained = sdpo(
        &[
            "train",
            "--config",
            "run.toml",
            "--device",
            "flex",
            "--set",
            "precompute_ref_log_probs=true",
            "--set",
            "ref_layer_streaming=true",
            "--set",
            "ref_model_name_or_path=\"ref\"",
            "--set",
            "output_dir=\"streamed-0\"",
        ],
        root,
    );
    let log = text(&trained);
    assert!(trained.status.success(), "{log}");
    assert!(
        log.contains("reusing precomputed reference log-probs"),
        "{log}"
    );
    assert!(!log.contains("streaming the reference"), "{log}");
}

#[test]
fn a_configuration_that_cannot_stream_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_tiny_run(root, 2, 6, "max_steps = 1\n");
    // Without precompute_ref_log_probs there is nothing to stream into.
    let out = sdpo(
        &[
            "train",
            "--config",
            "run.toml",
            "--device",
            "flex",
            "--set",
            "ref_layer_streaming=true",
        ],
        root,
    );
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("ref_layer_streaming") && log.contains("precompute_ref_log_probs"),
        "{log}"
    );
    // The reference is the policy's random initialisation: no weight files to stream.
    let out = sdpo(
        &[
            "precompute-ref",
            "--config",
            "run.toml",
            "--device",
            "flex",
            "--set",
            "precompute_ref_log_probs=true",
            "--set",
            "ref_layer_streaming=true",
        ],
        root,
    );
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("ref_layer_streaming") && log.contains("init_from_config"),
        "{log}"
    );
}
