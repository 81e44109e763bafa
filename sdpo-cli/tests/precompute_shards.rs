//! `sdpo precompute-ref --shard K/N`: shards computed in separate processes (one of them killed
//! and restarted) give the one-process cache bit for bit, training reads a complete set
//! directly, `--merge` writes the one-process file byte for byte, and a set with a missing,
//! duplicated or foreign shard is refused with the shard named.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{sdpo, text, write_tiny_run};

fn write_run(root: &Path) {
    write_tiny_run(
        root,
        2,
        22,
        r#"loss_type = "sdpo"
precompute_ref_log_probs = true
per_device_train_batch_size = 2
per_device_eval_batch_size = 3
max_steps = 1
max_length = 64
"#,
    );
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
        &output_dir,
    ];
    args.extend(extra);
    sdpo(&args, root)
}

/// The cache files of `split` under `root/out`, by name.
fn cache_files(root: &Path, out: &str, split: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(out).join("ref_logps_cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&format!("{split}-")) && name.ends_with(".safetensors")
        })
        .collect();
    files.sort();
    files
}

/// Runs shard `shard` in `out`, killing it once at a moment that depends on `attempt` (maybe
/// before it computed anything, maybe after some batches, maybe never), then to the end.
fn shard_killed_once(root: &Path, out: &str, shard: &str, attempt: u64) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sdpo"))
        .current_dir(root)
        .env_remove("BURN_DEVICE")
        .args(["precompute-ref", "--config", "run.toml", "--device", "flex"])
        .args(["--set", &format!("output_dir=\"{out}\"")])
        .args(["--shard", shard])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = root.join(out).join("ref_logps_cache");
    let start = Instant::now();
    let partial_seen = || {
        std::fs::read_dir(&dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".partial")
                    && e.metadata().is_ok_and(|m| m.len() > 200 + 40 * attempt)
            })
        })
    };
    while child.try_wait().unwrap().is_none() {
        if partial_seen() || start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.wait().unwrap();
    let again = precompute(root, out, &["--shard", shard]);
    assert!(again.status.success(), "{}", text(&again));
    eprintln!(
        "shard {shard}, kill {attempt}: restarted {}",
        if text(&again).contains("resuming after pair") {
            "after some batches"
        } else {
            "from the start or had finished"
        }
    );
    text(&again)
}

#[test]
fn shards_in_separate_processes_give_the_one_process_cache_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_run(root);
    let one = precompute(root, "one", &[]);
    assert!(one.status.success(), "{}", text(&one));
    let whole: Vec<Vec<u8>> = ["train", "eval"]
        .iter()
        .map(|split| {
            let files = cache_files(root, "one", split);
            assert_eq!(files.len(), 1, "{files:?}");
            std::fs::read(&files[0]).unwrap()
        })
        .collect();

    // Four shards at once, in four processes; shard 1 is killed once and restarted.
    let children: Vec<_> = ["0/4", "2/4", "3/4"]
        .iter()
        .map(|shard| {
            Command::new(env!("CARGO_BIN_EXE_sdpo"))
                .current_dir(root)
                .env_remove("BURN_DEVICE")
                .args(["precompute-ref", "--config", "run.toml", "--device", "flex"])
                .args(["--set", "output_dir=\"four\"", "--shard", shard])
                .output()
        })
        .collect();
    let restarted = shard_killed_once(root, "four", "1/4", 0);
    for child in children {
        let out = child.unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(
        !restarted.contains("progress of another computation"),
        "{restarted}"
    );
    for split in ["train", "eval"] {
        let shards = cache_files(root, "four", split);
        assert_eq!(shards.len(), 4, "{shards:?}");
    }

    // Training reads the complete set as it is.
    let train = sdpo(
        &[
            "train",
            "--config",
            "run.toml",
            "--device",
            "flex",
            "--set",
            "output_dir=\"four\"",
        ],
        root,
    );
    assert!(train.status.success(), "{}", text(&train));
    assert!(text(&train).contains("from shards"), "{}", text(&train));
    assert!(!text(&train).contains("precomputing"), "{}", text(&train));
    assert!(
        !text(&train).contains("loading the reference model"),
        "{}",
        text(&train)
    );

    // The merged file is the one-process file, byte for byte.
    let merged = precompute(root, "four", &["--merge"]);
    assert!(merged.status.success(), "{}", text(&merged));
    for (split, whole) in ["train", "eval"].iter().zip(&whole) {
        let merged = cache_files(root, "four", split)
            .into_iter()
            .find(|p| !p.to_string_lossy().contains("-shard-"))
            .expect("merged file");
        assert!(
            std::fs::read(&merged).unwrap() == *whole,
            "{split}: merged file differs"
        );
    }

    // Kills at other moments change nothing either.
    for attempt in 1..4 {
        let out = format!("again{attempt}");
        for shard in ["0/2", "1/2"] {
            shard_killed_once(root, &out, shard, attempt);
        }
        let merged = precompute(root, &out, &["--merge"]);
        assert!(merged.status.success(), "{}", text(&merged));
        let file = cache_files(root, &out, "train")
            .into_iter()
            .find(|p| !p.to_string_lossy().contains("-shard-"))
            .unwrap();
        assert!(
            std::fs::read(&file).unwrap() == whole[0],
            "attempt {attempt}"
        );
    }
}

#[test]
fn a_set_with_a_missing_duplicated_or_foreign_shard_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_run(root);
    for shard in ["0/3", "1/3", "2/3"] {
        let out = precompute(root, "three", &["--shard", shard]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let shards = cache_files(root, "three", "train");
    assert_eq!(shards.len(), 3);
    let train = || {
        sdpo(
            &[
                "train",
                "--config",
                "run.toml",
                "--device",
                "flex",
                "--set",
                "output_dir=\"three\"",
            ],
            root,
        )
    };
    let refused = |what: &str, names: &str| {
        let out = train();
        assert!(!out.status.success(), "{what}: {}", text(&out));
        assert!(text(&out).contains(names), "{what}: {}", text(&out));
    };

    // Missing: the error says which shard and how to compute it.
    let hidden = shards[1].with_extension("hidden");
    std::fs::rename(&shards[1], &hidden).unwrap();
    refused("missing", "--shard 1/3");
    let merge = precompute(root, "three", &["--merge"]);
    assert!(!merge.status.success() && text(&merge).contains("shard 1/3"));

    // Duplicated: shard 2's file copied under shard 1's name.
    std::fs::copy(&shards[2], &shards[1]).unwrap();
    refused(
        "duplicated",
        &shards[1].file_name().unwrap().to_string_lossy(),
    );

    // Foreign: a shard of another reference under this set's name.
    std::fs::rename(&hidden, &shards[1]).unwrap();
    let real = std::fs::read(&shards[1]).unwrap();
    let other = precompute(root, "other", &["--shard", "1/3", "--set", "seed=7"]);
    assert!(other.status.success(), "{}", text(&other));
    let foreign = cache_files(root, "other", "train");
    std::fs::copy(&foreign[0], &shards[1]).unwrap();
    refused("foreign", "foreign shard");
    refused("foreign", &shards[1].file_name().unwrap().to_string_lossy());

    // The set restored trains; a shard of another count beside it is refused.
    std::fs::write(&shards[1], real).unwrap();
    let out = train();
    assert!(out.status.success(), "{}", text(&out));
    let extra = precompute(root, "three", &["--shard", "0/2"]);
    assert!(extra.status.success(), "{}", text(&extra));
    refused("another count", "mixes shards of");
}

/// A key's parts as a header's map.
fn parts_of(
    key: &sdpo_train::reference::cache::CacheKey,
) -> std::collections::HashMap<String, String> {
    key.parts()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn another_programs_cache_is_read_when_its_content_key_matches_and_refused_otherwise() {
    use sdpo_train::reference::cache::{self, CacheKey};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_run(root);
    let own = precompute(root, "own", &[]);
    assert!(own.status.success(), "{}", text(&own));
    let exported = sdpo(
        &[
            "export-pairs",
            "--config",
            "run.toml",
            "--device",
            "flex",
            "--out",
            "pairs",
        ],
        root,
    );
    assert!(exported.status.success(), "{}", text(&exported));
    for split in ["train", "eval"] {
        let lines = std::fs::read_to_string(root.join(format!("pairs/{split}.jsonl"))).unwrap();
        let mut lines = lines.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        let (own_header, pairs) = cache::read(&cache_files(root, "own", split)[0]).unwrap();
        // The export names the rows and content key the run's own cache has.
        assert_eq!(header["rows"], own_header.key.part("rows").unwrap());
        assert_eq!(header["content_key"], own_header.key.content_key().as_str());
        assert_eq!(lines.count(), pairs.len());
        // "Another engine": the same numbers under its own path and precision.
        let mut parts = parts_of(&own_header.key);
        parts.insert("logps_path".into(), "other-engine".into());
        parts.insert("matmul_precision".into(), "bf16".into());
        let mut header = own_header.clone();
        header.key = CacheKey::from_metadata(&parts).unwrap();
        header.producer = "another engine 1.0".into();
        let dir = root.join("ext/ref_logps_cache");
        let path = dir.join(cache::external_file_name(split, &header.key));
        cache::write(&path, &header, &pairs).unwrap();
    }
    let train = |out: &str| {
        let output_dir = format!("output_dir=\"{out}\"");
        sdpo(
            &[
                "train",
                "--config",
                "run.toml",
                "--device",
                "flex",
                "--set",
                &output_dir,
            ],
            root,
        )
    };
    let out = train("ext");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("written by `another engine 1.0`")
            && text(&out).contains("logps_path = other-engine")
            && !text(&out).contains("precomputing"),
        "{}",
        text(&out)
    );
    // Another engine's file of other rows is refused, naming the part.
    let file = cache_files(root, "ext", "train")
        .into_iter()
        .find(|p| p.to_string_lossy().contains("-content-"))
        .unwrap();
    let (mut header, pairs) = cache::read(&file).unwrap();
    let mut parts = parts_of(&header.key);
    parts.insert("rows".into(), "0".repeat(64));
    header.key = CacheKey::from_metadata(&parts).unwrap();
    cache::write(&file, &header, &pairs).unwrap();
    std::fs::create_dir_all(root.join("ext3/ref_logps_cache")).unwrap();
    let own_key = cache::read(&cache_files(root, "own", "train")[0])
        .unwrap()
        .0
        .key;
    let renamed = root
        .join("ext3/ref_logps_cache")
        .join(cache::external_file_name("train", &own_key));
    std::fs::copy(&file, &renamed).unwrap();
    let out = train("ext3");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("`rows`"), "{}", text(&out));
}
