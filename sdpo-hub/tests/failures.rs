//! The test Hub server's failures: each ends in a clear error or a successful resumed
//! download, and the cache never holds a corrupt file (`blobs/` only ever holds verified
//! files; a partial one stays `*.incomplete` and is resumed by the next run).

mod common;

use std::path::{Path, PathBuf};

use common::{Recorder, make_repo, settings, tiny_model_files, tree};
use sdpo_hub::download::MAX_ATTEMPTS;
use sdpo_hub::{HubError, NoProgress, Origin, Resolver, Role};
use sdpo_hub_testserver::{Fault, HubServer, Phase};

const WEIGHTS: &str = "model.safetensors";

struct Setup {
    _root: tempfile::TempDir,
    cache: tempfile::TempDir,
    server: HubServer,
    weights: Vec<u8>,
}

fn setup() -> Setup {
    let root = tempfile::tempdir().unwrap();
    let files = tiny_model_files();
    let weights = files.iter().find(|(n, _)| *n == WEIGHTS).unwrap().1.clone();
    make_repo(root.path(), "models", "org/tiny", &files);
    let server = HubServer::start(root.path()).unwrap();
    Setup {
        _root: root,
        cache: tempfile::tempdir().unwrap(),
        server,
        weights,
    }
}

impl Setup {
    fn resolver(&self) -> Resolver {
        Resolver::new(settings(self.cache.path(), &self.server.url(), None, false))
    }

    fn repo_dir(&self) -> PathBuf {
        self.cache.path().join("models--org--tiny")
    }

    /// Every file in `blobs/` is a complete, verified file: its name is the SHA-256 or git id
    /// of its bytes. Returns the partial files.
    fn assert_blobs_verified(&self) -> Vec<PathBuf> {
        let mut partial = Vec::new();
        for entry in tree(&self.repo_dir().join("blobs")) {
            let name = entry.to_string_lossy().into_owned();
            if name.ends_with(".incomplete") {
                partial.push(self.repo_dir().join("blobs").join(entry));
                continue;
            }
            let bytes = std::fs::read(self.repo_dir().join("blobs").join(&entry)).unwrap();
            let sha = sdpo_hub_testserver::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            let mut git = <sha1::Sha1 as sha1::Digest>::new();
            sha1::Digest::update(&mut git, format!("blob {}\0", bytes.len()).as_bytes());
            sha1::Digest::update(&mut git, &bytes);
            let oid = sdpo_hub_testserver::hex(&sha1::Digest::finalize(git));
            assert!(
                name == sha || name == oid,
                "blob {name} does not hold its bytes"
            );
        }
        partial
    }

    fn weights_ranges(&self) -> Vec<Option<String>> {
        self.server
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/cdn/"))
            .map(|r| r.range.clone())
            .collect()
    }
}

fn weights_in(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(WEIGHTS)).unwrap()
}

#[test]
fn a_truncated_body_is_resumed_from_where_it_stopped() {
    let s = setup();
    s.server
        .inject(WEIGHTS, Phase::Data, Fault::Truncate { keep: 100_000 }, 1);
    let mut progress = Recorder::default();
    let resolved = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut progress)
        .unwrap();
    assert_eq!(weights_in(&resolved.path), s.weights);
    assert_eq!(
        s.weights_ranges(),
        [None, Some("bytes=100000-".to_string())]
    );
    assert_eq!(progress.retries.len(), 1, "{:?}", progress.retries);
    assert!(
        progress
            .started
            .contains(&(WEIGHTS.into(), 300_000, 100_000))
    );
    assert!(s.assert_blobs_verified().is_empty());
}

#[test]
fn dropped_connections_are_retried() {
    let s = setup();
    s.server.inject(WEIGHTS, Phase::Data, Fault::Drop, 2);
    let resolved = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert_eq!(weights_in(&resolved.path), s.weights);
    assert_eq!(s.weights_ranges().len(), 3);
    assert!(s.assert_blobs_verified().is_empty());
}

#[test]
fn a_transfer_that_keeps_breaking_leaves_a_partial_file_that_the_next_run_resumes() {
    let s = setup();
    // The first attempt breaks off at byte 120000, every retry is dropped: the run gives up,
    // as a killed run would leave it, with the bytes so far in `.incomplete` and nothing in the
    // snapshot.
    s.server
        .inject(WEIGHTS, Phase::Data, Fault::Truncate { keep: 120_000 }, 1);
    s.server
        .inject(WEIGHTS, Phase::Data, Fault::Drop, MAX_ATTEMPTS - 1);
    let err = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            HubError::Interrupted {
                received: 120_000,
                expected: 300_000,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("to resume"), "{text}");
    let partial = s.assert_blobs_verified();
    assert_eq!(partial.len(), 1);
    assert_eq!(std::fs::read(&partial[0]).unwrap(), s.weights[..120_000]);
    assert!(
        !tree(&s.repo_dir().join("snapshots"))
            .iter()
            .any(|p| p.ends_with(WEIGHTS))
    );

    // The next run resumes from byte 120000.
    let before = s.weights_ranges().len();
    let resolved = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert_eq!(weights_in(&resolved.path), s.weights);
    assert_eq!(
        s.weights_ranges()[before..],
        [Some("bytes=120000-".to_string())]
    );
    assert!(s.assert_blobs_verified().is_empty());
}

#[test]
fn a_partial_file_from_python_is_resumed_and_a_server_without_ranges_restarts_it() {
    let s = setup();
    // A partial download as huggingface_hub leaves it: `blobs/<sha256>.incomplete`.
    let etag = sdpo_hub_testserver::hex(&<sha2::Sha256 as sha2::Digest>::digest(&s.weights));
    let blobs = s.repo_dir().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(
        blobs.join(format!("{etag}.incomplete")),
        &s.weights[..50_000],
    )
    .unwrap();
    // The server answers the range with the whole file: the partial file is started over,
    // not appended to.
    s.server.inject(WEIGHTS, Phase::Data, Fault::IgnoreRange, 1);
    let resolved = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert_eq!(weights_in(&resolved.path), s.weights);
    assert_eq!(s.weights_ranges(), [Some("bytes=50000-".to_string())]);
    assert!(s.assert_blobs_verified().is_empty());
}

#[test]
fn a_corrupt_body_is_deleted_and_never_cached() {
    let s = setup();
    s.server.inject(WEIGHTS, Phase::Data, Fault::Corrupt, 1);
    let err = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, HubError::Corrupt { what: "sha256", .. }),
        "{text}"
    );
    assert!(text.contains(WEIGHTS) && text.contains("deleted"), "{text}");
    assert!(s.assert_blobs_verified().is_empty());
    assert!(!s.repo_dir().join("refs/main").exists());
    let resolved = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert_eq!(weights_in(&resolved.path), s.weights);
}

#[test]
fn error_statuses_and_a_dropped_metadata_request_are_clear_errors() {
    let s = setup();
    s.server
        .inject("config.json", Phase::Metadata, Fault::Status(404), 1);
    let err = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("404") && err.contains("config.json"), "{err}");
    s.server
        .inject("config.json", Phase::Metadata, Fault::Status(401), 1);
    let err = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");
    s.server
        .inject("config.json", Phase::Metadata, Fault::Drop, 1);
    let err = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot reach") && err.contains("config.json"),
        "{err}"
    );
    // A 500 on the bytes is retried.
    s.server.inject(WEIGHTS, Phase::Data, Fault::Status(500), 1);
    let resolved = s
        .resolver()
        .resolve("org/tiny", None, Role::Model, &mut NoProgress)
        .unwrap();
    assert!(matches!(resolved.origin, Origin::Hub { .. }));
    assert_eq!(weights_in(&resolved.path), s.weights);
    assert!(s.assert_blobs_verified().is_empty());
}
