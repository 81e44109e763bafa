//! Resolution against a test Hub server and caches laid out by the tests: the local path wins,
//! downloads land in `huggingface_hub`'s layout, the cache is used offline and when the Hub is
//! unreachable, revisions, datasets, sharded models, tokens and renamed repositories.

mod common;

use common::{Recorder, make_repo, pattern, settings, tiny_model_files, tree};
use sdpo_hub::{HubError, NoProgress, Origin, Resolver, Role};
use sdpo_hub_testserver::{HubServer, hex};
use sha2::{Digest, Sha256};
use std::path::Path;

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[test]
fn a_local_path_wins_over_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().to_string_lossy().into_owned();
    // An endpoint nothing listens on: the Hub must not be asked.
    let mut resolver = Resolver::new(settings(dir.path(), "http://127.0.0.1:9", None, false));
    let resolved = resolver
        .resolve(&spec, None, Role::Model, &mut NoProgress)
        .unwrap();
    assert_eq!(
        (resolved.path.as_path(), resolved.origin),
        (dir.path(), Origin::Local)
    );
}

#[test]
fn a_download_lands_in_huggingface_hubs_layout_and_is_then_read_from_the_cache() {
    let root = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let files = tiny_model_files();
    make_repo(root.path(), "models", "org/tiny", &files);
    let server = HubServer::start(root.path()).unwrap();
    let mut resolver = Resolver::new(settings(cache.path(), &server.url(), None, false));
    let mut progress = Recorder::default();
    let resolved = resolver
        .resolve("org/tiny", None, Role::Model, &mut progress)
        .unwrap();
    let Origin::Hub {
        commit, downloaded, ..
    } = resolved.origin.clone()
    else {
        panic!("expected a download, got {:?}", resolved.origin);
    };
    // The three files a model needs; not the ONNX export or the README.
    assert_eq!(downloaded, 3);
    let repo_dir = cache.path().join("models--org--tiny");
    assert_eq!(resolved.path, repo_dir.join("snapshots").join(&commit));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        commit
    );
    for (name, bytes) in files
        .iter()
        .filter(|(n, _)| !n.contains('/') && *n != "README.md")
    {
        let pointer = resolved.path.join(name);
        assert_eq!(&std::fs::read(&pointer).unwrap(), bytes, "{name}");
        let target = std::fs::read_link(&pointer).unwrap();
        assert!(target.starts_with("../../blobs"), "{name}: {target:?}");
    }
    // LFS blobs are named by their SHA-256, git files by their blob id.
    let weights = &files[1].1;
    assert!(repo_dir.join("blobs").join(sha256(weights)).is_file());
    assert!(
        !tree(&repo_dir)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".incomplete"))
    );
    assert_eq!(progress.done.len(), 3);
    assert_eq!(
        progress.bytes,
        files
            .iter()
            .take(3)
            .map(|(_, b)| b.len() as u64)
            .sum::<u64>()
    );

    // Online again: the listing is asked (a branch may move), no file is fetched again.
    let before = server.requests().len();
    let again = resolver
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert!(matches!(again.origin, Origin::Hub { downloaded: 0, .. }));
    let asked: Vec<_> = server.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(asked, ["/api/models/org/tiny/revision/main"]);

    // Offline: the cache alone, no request at all.
    let before = server.requests().len();
    let mut offline = Resolver::new(settings(cache.path(), &server.url(), None, true));
    let cached = offline
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert_eq!(cached.path, resolved.path);
    assert!(matches!(cached.origin, Origin::Cache { .. }));
    assert_eq!(server.requests().len(), before);
}

#[test]
fn a_cache_laid_out_by_python_is_read_offline_and_every_place_is_listed_when_it_is_not() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = cache.path().join("models--org--cached");
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    for (name, body) in [("config.json", "{}"), ("model.safetensors", "w")] {
        let etag = sha256(body.as_bytes());
        std::fs::write(repo_dir.join("blobs").join(&etag), body).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{etag}"), snapshot.join(name)).unwrap();
    }
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let mut offline = Resolver::new(settings(cache.path(), "http://127.0.0.1:9", None, true));
    let found = offline
        .resolve("org/cached", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert_eq!(found.path, snapshot);
    // By commit id too, without a ref.
    let pinned = offline
        .resolve(
            &format!("org/cached@{commit}"),
            None,
            Role::Model,
            &mut NoProgress,
        )
        .unwrap();
    assert_eq!(pinned.path, snapshot);
    // The snapshot has no tokenizer: as a tokenizer it is not found, and the error says where
    // it looked and that the run is offline.
    let err = offline
        .resolve("org/cached", None, Role::Tokenizer, &mut NoProgress)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, HubError::NotFound { offline: true, .. }),
        "{text}"
    );
    for needle in [
        "local path",
        "models--org--cached",
        "has no `tokenizer.json`",
        "HF_HUB_OFFLINE",
        "offline",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from: {text}");
    }
    let err = offline
        .resolve("org/absent", None, Role::Model, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no `refs/main`") && err.contains("not asked"),
        "{err}"
    );
    let err = offline
        .resolve("./not/a/valid/id", None, Role::Model, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not exist") && err.contains("not a valid"),
        "{err}"
    );
}

#[test]
fn an_unreachable_hub_falls_back_to_the_cached_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    make_repo(root.path(), "models", "org/tiny", &tiny_model_files());
    let url = {
        let server = HubServer::start(root.path()).unwrap();
        Resolver::new(settings(cache.path(), &server.url(), None, false))
            .resolve("org/tiny", None, Role::Model, &mut NoProgress)
            .unwrap();
        server.url()
    };
    // The server is gone: the same endpoint refuses connections.
    let mut progress = Recorder::default();
    let resolved = Resolver::new(settings(cache.path(), &url, None, false))
        .resolve("org/tiny", None, Role::Model, &mut progress)
        .unwrap();
    assert!(matches!(resolved.origin, Origin::Cache { .. }));
    assert!(
        progress.notes[0].contains("cannot reach the Hub"),
        "{:?}",
        progress.notes
    );
    // Nothing cached for this one: the error names the unreachable Hub and is not offline.
    let err = Resolver::new(settings(cache.path(), &url, None, false))
        .resolve("org/other", None, Role::Model, &mut NoProgress)
        .unwrap_err();
    assert!(matches!(err, HubError::NotFound { offline: false, .. }));
    assert!(err.to_string().contains("cannot reach"), "{err}");
}

#[test]
fn revisions_datasets_shards_tokens_and_renamed_repositories() {
    let root = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    make_repo(root.path(), "models", "org/tiny", &tiny_model_files());
    let index = r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
    make_repo(
        root.path(),
        "models",
        "org/sharded",
        &[
            ("config.json", b"{}".to_vec()),
            ("model.safetensors.index.json", index.as_bytes().to_vec()),
            ("model-00001-of-00002.safetensors", pattern(5000, 1)),
            ("model-00002-of-00002.safetensors", pattern(5000, 2)),
            ("consolidated.safetensors", pattern(10000, 3)),
        ],
    );
    make_repo(
        root.path(),
        "datasets",
        "org/prefs",
        &[
            ("README.md", b"---\nconfigs: []\n---\n".to_vec()),
            ("data/train-00000-of-00001.parquet", pattern(2000, 4)),
            ("data/test.jsonl", b"{}\n".to_vec()),
        ],
    );
    make_repo(root.path(), "models", "org/gated", &tiny_model_files());
    let server = HubServer::start(root.path()).unwrap();
    server.require_token("org/gated", "hf_secret");
    server.rename("old-org/tiny", "org/tiny");
    let mut resolver = Resolver::new(settings(cache.path(), &server.url(), None, false));

    // A commit id, and a revision that does not exist.
    let main = resolver
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap();
    let Origin::Hub { commit, .. } = main.origin else {
        panic!()
    };
    let pinned = resolver
        .resolve("org/tiny", Some(&commit), Role::Model, &mut NoProgress)
        .unwrap();
    assert_eq!(pinned.path, main.path);
    let err = resolver
        .resolve("org/tiny@v9", None, Role::Model, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("RevisionNotFound") && err.contains("no revision `v9`"),
        "{err}"
    );

    // Datasets live under `datasets--`, every file but `.gitattributes`.
    let data = resolver
        .resolve("org/prefs", None, Role::Dataset, &mut NoProgress)
        .unwrap();
    assert!(
        data.path
            .starts_with(cache.path().join("datasets--org--prefs"))
    );
    assert_eq!(
        tree(&data.path),
        [
            "README.md",
            "data/test.jsonl",
            "data/train-00000-of-00001.parquet"
        ]
        .map(std::path::PathBuf::from)
    );

    // A sharded model: the index's shards, not the consolidated copy.
    let sharded = resolver
        .resolve("org/sharded", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert!(
        sharded
            .path
            .join("model-00002-of-00002.safetensors")
            .is_file()
    );
    assert!(!sharded.path.join("consolidated.safetensors").exists());

    // A renamed repository: the relative redirect is followed.
    let renamed = resolver
        .resolve("old-org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert!(renamed.path.join("config.json").is_file());

    // A gated repository: 401 without a token, with a hint; the token works and never
    // travels to the CDN host's URLs.
    let err = resolver
        .resolve("org/gated", None, Role::Model, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") && err.contains("set HF_TOKEN"), "{err}");
    let mut with_token = Resolver::new(settings(
        cache.path(),
        &server.url(),
        Some("hf_secret"),
        false,
    ));
    let gated = with_token
        .resolve("org/gated", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert!(gated.path.join("model.safetensors").is_file());
    let log = server.requests();
    assert!(log.iter().any(|r| r.path.contains("org/gated/resolve")
        && r.authorization.as_deref() == Some("Bearer hf_secret")));
    assert!(
        log.iter()
            .filter(|r| r.path.starts_with("/cdn/"))
            .all(|r| r.authorization.is_none())
    );
    let mut wrong = Resolver::new(settings(
        cache.path(),
        &server.url(),
        Some("hf_wrong"),
        false,
    ));
    let err = wrong
        .resolve("org/gated@main", None, Role::Tokenizer, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no access"), "{err}");
    let err = resolver
        .resolve("org/nothing-here", None, Role::Model, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("404") && err.contains("RepoNotFound"), "{err}");
    assert!(Path::new(&cache.path().join("models--org--tiny/refs/main")).is_file());
}
