//! What a run directory holds and a later run, `sdpo report` or a resume reads back:
//! `trainer_state.json`, `manifest.json`, `metrics.jsonl`, the reference-log-prob cache, and the
//! Hub cache's `refs/` that resolves a Hub id offline.

use std::path::Path;

use arbitrary::{Result, Unstructured};
use serde_json::json;

use crate::structured::{number, perturb, string, to_json, value};
use crate::{Rejection, workspace_root};

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

fn trainer_state(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    sdpo_train::checkpoint::read_trainer_state(parent(path))?;
    Ok(())
}

fn json_object(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let keys = [
        "global_step",
        "epoch",
        "max_steps",
        "running_moments",
        "param_ids",
        "config",
        "best",
        "files",
        "format",
        "size",
        "sha256",
    ];
    let object = crate::structured::object(u, &keys, 3)?;
    to_json(u, &object)
}

/// `manifest.json` over two real files of the checkpoint directory.
fn manifest(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    let dir = parent(path);
    std::fs::write(dir.join("trainer_state.json"), b"{}")?;
    std::fs::write(dir.join("model.safetensors"), b"0123456789")?;
    sdpo_train::checkpoint::manifest::verify_manifest(dir)?;
    Ok(())
}

fn manifest_json(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    const DIGEST_OF_BRACES: &str =
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    let names = [
        "trainer_state.json",
        "model.safetensors",
        "../x",
        "/etc/passwd",
        "missing",
        "",
    ];
    let mut files = serde_json::Map::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let name = *u.choose(&names)?;
        let size = number(u)?;
        let sha256 = if u.arbitrary()? {
            DIGEST_OF_BRACES.to_string()
        } else {
            string(u, &[])?
        };
        let digest = perturb(
            u,
            json!({"size": size, "sha256": sha256}),
            &["size", "sha256"],
        )?;
        files.insert(name.into(), digest);
    }
    let manifest = json!({"format": u.choose(&["sdpo-rs-manifest-1", "x"])?, "files": files});
    let manifest = perturb(u, manifest, &["format", "files"])?;
    to_json(u, &manifest)
}

fn metrics(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    sdpo_train::read_metrics_records(path)?;
    Ok(())
}

fn metrics_jsonl(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let keys = [
        "step",
        "epoch",
        "loss",
        "learning_rate",
        "rewards/accuracies",
        "eval_loss",
        "grad_norm",
        "train_runtime",
    ];
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(0..=5)? {
        let line = json!({"step": value(u, &keys, 0)?, "epoch": number(u)?, "loss": number(u)?});
        let line = perturb(u, line, &keys)?;
        out.extend(serde_json::to_vec(&line).unwrap_or_default());
        if u.ratio(1, 8)? {
            out.extend(b"NaN Infinity");
        }
        out.push(b'\n');
    }
    Ok(out)
}

fn reference_cache(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    sdpo_train::reference::cache::read(path)?;
    Ok(())
}

fn cache_file(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    crate::structured::safetensors(
        u,
        &[
            "chosen_logps",
            "rejected_logps",
            "chosen_lengths",
            "rejected_lengths",
            "pair_index",
        ],
    )
}

/// `refs/main` of a cached model repository, resolved offline as `sdpo train` resolves a Hub id.
fn hub_ref(path: &Path, bytes: &[u8]) -> std::result::Result<(), Rejection> {
    let cache = parent(path);
    let repo = cache.join("models--fuzz--tiny");
    std::fs::create_dir_all(repo.join("refs"))?;
    std::fs::write(repo.join("refs/main"), bytes)?;
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snapshot)?;
    let fixture = workspace_root().join("fixtures/models/llama");
    for name in ["config.json", "model.safetensors"] {
        std::os::unix::fs::symlink(fixture.join(name), snapshot.join(name))?;
    }
    let cache_dir = cache.to_string_lossy().into_owned();
    let settings = sdpo_hub::HubSettings::from_lookup(|name| match name {
        "HF_HUB_CACHE" => Some(cache_dir.clone()),
        "HF_HUB_OFFLINE" => Some("1".into()),
        _ => None,
    });
    sdpo_hub::Resolver::new(settings).resolve(
        "fuzz/tiny",
        None,
        sdpo_hub::Role::Model,
        &mut sdpo_hub::NoProgress,
    )?;
    Ok(())
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn ref_text(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=3)? {
        0 => format!("{COMMIT}\n").into_bytes(),
        1 => format!("{}\n", &COMMIT[..u.int_in_range(0..=40)?]).into_bytes(),
        2 => format!("../../{COMMIT}").into_bytes(),
        _ => string(u, &[COMMIT, "main", "/", "..", ""])?.into_bytes(),
    })
}

const RUN_LOCATORS: &[&str] = &["step", "pair", "manifest", "is missing", "SHA-256", "bytes"];

/// The run-directory and Hub-cache targets.
pub(crate) static TARGETS: [crate::Target; 5] = [
    crate::Target {
        name: "trainer_state",
        about: "trainer_state.json through checkpoint::read_trainer_state (resume)",
        file_name: "trainer_state.json",
        names: &[],
        seeds: &["fixtures/fuzz/seeds/trainer_state.json"],
        generate: json_object,
        run: trainer_state,
        locators: RUN_LOCATORS,
    },
    crate::Target {
        name: "manifest",
        about: "a checkpoint's manifest.json through checkpoint::verify_manifest",
        file_name: "manifest.json",
        names: &[],
        seeds: &["fixtures/fuzz/seeds/manifest.json"],
        generate: manifest_json,
        run: manifest,
        locators: RUN_LOCATORS,
    },
    crate::Target {
        name: "metrics_jsonl",
        about: "a run's metrics.jsonl through read_metrics_records (sdpo report, resume)",
        file_name: "metrics.jsonl",
        names: &[],
        seeds: &["fixtures/fuzz/seeds/metrics.jsonl"],
        generate: metrics_jsonl,
        run: metrics,
        locators: RUN_LOCATORS,
    },
    crate::Target {
        name: "reference_cache",
        about: "a reference-log-prob cache file through reference::cache::read",
        file_name: "ref_logps.safetensors",
        names: &[],
        seeds: &["fixtures/fuzz/seeds/*.ref_logps.safetensors"],
        generate: cache_file,
        run: reference_cache,
        locators: RUN_LOCATORS,
    },
    crate::Target {
        name: "hub_ref",
        about: "the Hub cache's refs/main, resolved offline by sdpo_hub::Resolver",
        file_name: "main",
        names: &["refs/main", "fuzz/tiny"],
        seeds: &[],
        generate: ref_text,
        run: hub_ref,
        locators: &["refs/main", "snapshot"],
    },
];
