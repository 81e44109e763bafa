//! [`Resolver`]: a configuration value (a path or a Hub id) to a local directory. A local path
//! of that name wins; else the Hugging Face cache; else (unless offline) the Hub, downloading
//! into the cache.

use std::path::{Path, PathBuf};

use crate::cache::RepoCache;
use crate::client::HubClient;
use crate::download::download_file;
use crate::error::{HubError, Looked};
use crate::progress::DownloadProgress;
use crate::repo::{RepoKind, RepoRef, is_commit_id};
use crate::role::{Role, WEIGHTS_INDEX, indexed_shards};
use crate::settings::HubSettings;

/// Where a resolved directory came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local path, used as written.
    Local,
    /// A snapshot already in the cache; nothing was downloaded.
    Cache {
        /// The repository.
        repo: RepoRef,
        /// The snapshot's commit.
        commit: String,
    },
    /// A snapshot completed from the Hub.
    Hub {
        /// The repository.
        repo: RepoRef,
        /// The snapshot's commit.
        commit: String,
        /// Files downloaded now (the others were in the cache).
        downloaded: usize,
    },
}

/// A resolved name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The directory (or, for a local dataset path, the file) to read.
    pub path: PathBuf,
    /// Where it came from.
    pub origin: Origin,
}

/// Resolves names with one set of [`HubSettings`].
pub struct Resolver {
    settings: HubSettings,
    client: Option<HubClient>,
}

impl Resolver {
    /// A resolver for `settings` (see [`HubSettings::from_env`]).
    pub fn new(settings: HubSettings) -> Self {
        Self {
            settings,
            client: None,
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    fn client(&mut self) -> Result<&HubClient, HubError> {
        Ok(match &mut self.client {
            Some(client) => client,
            slot @ None => slot.insert(HubClient::new(&self.settings)?),
        })
    }

    /// Resolves `spec` for `role`: a local path that exists wins (used as written); else
    /// `spec` must be a Hub id (`owner/name`, `owner/name@revision`; `revision` applies when
    /// the id has none), found in the cache (a complete snapshot for the revision) or, unless
    /// offline, completed from the Hub. Online, a branch or tag is first asked of the Hub (as
    /// `huggingface_hub` does, so a moved branch is followed); a Hub that cannot be reached
    /// falls back to the cached snapshot with a note.
    ///
    /// # Errors
    /// [`HubError::NotFound`] listing every place looked at and whether the run is offline;
    /// the download errors of [`crate::download`].
    pub fn resolve(
        &mut self,
        spec: &str,
        revision: Option<&str>,
        role: Role,
        progress: &mut dyn DownloadProgress,
    ) -> Result<Resolved, HubError> {
        let local = Path::new(spec);
        if local.exists() {
            return Ok(Resolved {
                path: local.to_path_buf(),
                origin: Origin::Local,
            });
        }
        let wanted = match role {
            Role::Model => "model",
            Role::Adapter => "PEFT adapter",
            Role::Tokenizer => "tokenizer",
            Role::Dataset => "dataset",
        };
        let offline = self.settings.offline;
        let mut looked = vec![Looked {
            place: format!("local path `{}`", absolute(local).display()),
            outcome: "does not exist".into(),
        }];
        let not_found = |looked: Vec<Looked>| HubError::NotFound {
            spec: spec.to_string(),
            wanted: wanted.to_string(),
            looked,
            offline,
        };
        let kind = if role == Role::Dataset {
            RepoKind::Dataset
        } else {
            RepoKind::Model
        };
        let repo = match RepoRef::parse(spec, revision, kind) {
            Ok(repo) => repo,
            Err(err) => {
                looked.push(Looked {
                    place: "the Hugging Face cache and the Hub".into(),
                    outcome: format!("not tried: {err}"),
                });
                return Err(not_found(looked));
            }
        };
        let cache = RepoCache::new(&self.settings.cache_dir, &repo);
        let (cached, cache_outcome) = cached_snapshot(&cache, &repo, role);
        looked.push(Looked {
            place: format!(
                "the Hugging Face cache `{}` (from {})",
                cache.dir().display(),
                self.settings.cache_dir_from
            ),
            outcome: cache_outcome,
        });
        let use_cached = |commit: String| Resolved {
            path: cache.snapshot_dir(&commit),
            origin: Origin::Cache {
                repo: repo.clone(),
                commit,
            },
        };
        if offline {
            looked.push(Looked {
                place: format!("the Hub at {}", self.settings.endpoint),
                outcome: "not asked: HF_HUB_OFFLINE=1".into(),
            });
            return cached.map(use_cached).ok_or_else(|| not_found(looked));
        }
        if let Some(commit) = cached.clone().filter(|_| is_commit_id(&repo.revision)) {
            return Ok(use_cached(commit));
        }
        let endpoint = self.settings.endpoint.clone();
        let client = self.client()?;
        let listing = match client.listing(&repo) {
            Ok(listing) => listing,
            Err(HubError::Unreachable { reason, .. }) if cached.is_some() => {
                let commit = cached.unwrap_or_default();
                progress.note(&format!(
                    "cannot reach the Hub at {endpoint} ({reason}); using the cached snapshot \
                     {commit} of {repo}"
                ));
                return Ok(use_cached(commit));
            }
            Err(err) => {
                looked.push(Looked {
                    place: format!("the Hub at {endpoint}"),
                    outcome: err.to_string(),
                });
                return Err(not_found(looked));
            }
        };
        let files = files_to_fetch(
            client,
            &cache,
            &repo,
            &listing.commit,
            &listing.files,
            role,
            progress,
        )?;
        let mut downloaded = 0;
        let snapshot = cache.snapshot_dir(&listing.commit);
        for file in &files {
            if !snapshot.join(file).is_file() {
                download_file(client, &cache, &repo, &listing.commit, file, progress)?;
                downloaded += 1;
            }
        }
        if let Some(missing) = role.missing_in(&snapshot) {
            looked.push(Looked {
                place: format!("the Hub at {endpoint}"),
                outcome: format!(
                    "{repo} (commit {}) has no `{missing}`, which a {wanted} needs",
                    listing.commit
                ),
            });
            return Err(not_found(looked));
        }
        cache.write_ref(&repo.revision, &listing.commit)?;
        Ok(Resolved {
            path: snapshot,
            origin: Origin::Hub {
                repo,
                commit: listing.commit,
                downloaded,
            },
        })
    }
}

/// The cached snapshot for `repo`'s revision when it holds what `role` needs, and what was
/// found there (for the error's list).
fn cached_snapshot(cache: &RepoCache, repo: &RepoRef, role: Role) -> (Option<String>, String) {
    let Some(commit) = cache.commit_of(&repo.revision) else {
        return (None, format!("no `refs/{}`", repo.revision));
    };
    let snapshot = cache.snapshot_dir(&commit);
    if !snapshot.is_dir() {
        return (None, format!("no snapshot {commit}"));
    }
    match role.missing_in(&snapshot) {
        Some(missing) => (None, format!("snapshot {commit} has no `{missing}`")),
        None => (Some(commit.clone()), format!("snapshot {commit}")),
    }
}

/// The repository files `role` needs. A sharded model's index is fetched first and only the
/// shards it names are kept (a repository may carry other safetensors, e.g. a consolidated
/// copy).
fn files_to_fetch(
    client: &HubClient,
    cache: &RepoCache,
    repo: &RepoRef,
    commit: &str,
    listed: &[String],
    role: Role,
    progress: &mut dyn DownloadProgress,
) -> Result<Vec<String>, HubError> {
    let mut files: Vec<String> = listed.iter().filter(|f| role.wants(f)).cloned().collect();
    if role == Role::Model && files.iter().any(|f| f == WEIGHTS_INDEX) {
        let index_path = cache.snapshot_dir(commit).join(WEIGHTS_INDEX);
        if !index_path.is_file() {
            download_file(client, cache, repo, commit, WEIGHTS_INDEX, progress)?;
        }
        let text =
            std::fs::read_to_string(&index_path).map_err(crate::error::io_error(&index_path))?;
        let shards = serde_json::from_str(&text)
            .ok()
            .and_then(|v: serde_json::Value| indexed_shards(&v))
            .ok_or_else(|| HubError::Malformed {
                url: client.resolve_url(repo, commit, WEIGHTS_INDEX),
                reason: "no `weight_map` of shard file names".into(),
            })?;
        files.retain(|f| !f.ends_with(".safetensors") || shards.contains(f));
    }
    Ok(files)
}

fn absolute(path: &Path) -> PathBuf {
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}
