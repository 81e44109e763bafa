//! The Hub's endpoints, answered from the [`Store`]: the repository listing
//! (`/api/{models|datasets}/<id>/revision/<rev>`), `resolve/<rev>/<file>` (with a redirect to a
//! CDN URL for LFS files, as the Hub does) and the CDN URLs themselves.

use crate::http::{Request, Response, parse_range};
use crate::store::{Repo, RepoFile, RepoKind, Store};
use crate::{Phase, ServerState};

/// What a request asks for, once routed.
enum Route {
    /// The repository listing at a revision (`revision/<rev>`, or `tree/<rev>` for the file
    /// tree `huggingface_hub`'s `snapshot_download` reads).
    Listing {
        kind: RepoKind,
        id: String,
        revision: String,
        tree: bool,
    },
    /// A file at a revision.
    Resolve {
        kind: RepoKind,
        id: String,
        revision: String,
        file: String,
    },
    /// An LFS file's bytes by SHA-256.
    Cdn { sha256: String },
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if parts.first() == Some(&"api") {
        let kind = match *parts.get(1)? {
            "models" => RepoKind::Model,
            "datasets" => RepoKind::Dataset,
            _ => return None,
        };
        let id = format!("{}/{}", parts.get(2)?, parts.get(3)?);
        let (revision, tree) = match (parts.get(4), parts.len()) {
            (None, _) => ("main".to_string(), false),
            (Some(&"revision"), n) if n >= 6 => (parts[5..].join("/"), false),
            (Some(&"tree"), n) if n >= 6 => (parts[5..].join("/"), true),
            _ => return None,
        };
        return Some(Route::Listing {
            kind,
            id,
            revision,
            tree,
        });
    }
    if parts.first() == Some(&"cdn") {
        return Some(Route::Cdn {
            sha256: parts.get(1)?.to_string(),
        });
    }
    let (kind, rest) = match parts.first() {
        Some(&"datasets") => (RepoKind::Dataset, &parts[1..]),
        _ => (RepoKind::Model, &parts[..]),
    };
    if rest.len() < 5 || rest[2] != "resolve" {
        return None;
    }
    Some(Route::Resolve {
        kind,
        id: format!("{}/{}", rest[0], rest[1]),
        revision: rest[3].to_string(),
        file: rest[4..].join("/"),
    })
}

/// How the server answers one request, before faults are applied: the response and the file
/// and phase it concerns (which faults match on).
pub struct Answer {
    /// The response.
    pub response: Response,
    /// The repository file and the phase, when the request is about one.
    pub target: Option<(String, Phase)>,
}

impl Answer {
    fn plain(response: Response) -> Self {
        Self {
            response,
            target: None,
        }
    }
}

/// Answers `request`.
pub fn answer(state: &ServerState, store: &Store, request: &Request) -> Answer {
    let Some(route) = route(&request.path) else {
        return Answer::plain(Response::hub_error(404, "NotFound", "no such endpoint"));
    };
    match route {
        Route::Cdn { sha256 } => match store.file_by_sha256(&sha256) {
            Some((_, file)) => Answer {
                response: file_body(&file, request),
                target: Some((file.path, Phase::Data)),
            },
            None => Answer::plain(Response::hub_error(404, "EntryNotFound", "no such blob")),
        },
        Route::Listing {
            kind,
            id,
            revision,
            tree,
        } => {
            if let Some(target) = state.renamed(&id) {
                let location = format!("/api/{}/{target}/revision/{revision}", kind.plural());
                return Answer::plain(Response::new(307, "").header("Location", location));
            }
            let repo = match checked_repo(state, store, kind, &id, &revision, request) {
                Ok(repo) => repo,
                Err(response) => return Answer::plain(response),
            };
            if tree {
                return Answer::plain(
                    Response::new(200, tree_json(&repo)).header("Content-Type", "application/json"),
                );
            }
            let siblings: Vec<_> = repo
                .files
                .iter()
                .map(|f| serde_json::json!({ "rfilename": f.path }))
                .collect();
            let body =
                serde_json::json!({ "id": repo.id, "sha": repo.commit, "siblings": siblings });
            Answer::plain(
                Response::new(200, body.to_string()).header("Content-Type", "application/json"),
            )
        }
        Route::Resolve {
            kind,
            id,
            revision,
            file,
        } => {
            if let Some(target) = state.renamed(&id) {
                let prefix = if kind == RepoKind::Dataset {
                    "/datasets"
                } else {
                    ""
                };
                let location = format!("{prefix}/{target}/resolve/{revision}/{file}");
                return Answer::plain(Response::new(307, "").header("Location", location));
            }
            let repo = match checked_repo(state, store, kind, &id, &revision, request) {
                Ok(repo) => repo,
                Err(response) => return Answer::plain(response),
            };
            let phase = if request.method == "HEAD" {
                Phase::Metadata
            } else {
                Phase::Data
            };
            let Some(entry) = repo.file(&file) else {
                let message = format!("{file} does not exist in {id} at {revision}");
                return Answer {
                    response: Response::hub_error(404, "EntryNotFound", &message)
                        .header("X-Repo-Commit", repo.commit.as_str()),
                    target: Some((file, phase)),
                };
            };
            let response = resolve_file(state, &repo, entry, request);
            // An LFS file's bytes come from the CDN URL: faults on its data apply there.
            let phase = if entry.lfs { Phase::Metadata } else { phase };
            Answer {
                response,
                target: Some((file, phase)),
            }
        }
    }
}

/// The repository, after the token and revision checks; else the Hub's error answer.
fn checked_repo(
    state: &ServerState,
    store: &Store,
    kind: RepoKind,
    id: &str,
    revision: &str,
    request: &Request,
) -> Result<Repo, Response> {
    if let Some(token) = state.token_for(id) {
        let sent = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "));
        if sent != Some(token.as_str()) {
            let message = format!(
                "Access to {} {id} is restricted. You must have access to it and be \
                 authenticated to access it. Please log in.",
                if kind == RepoKind::Model {
                    "model"
                } else {
                    "dataset"
                }
            );
            return Err(Response::hub_error(401, "GatedRepo", &message));
        }
    }
    let Some(repo) = store.repo(kind, id) else {
        return Err(Response::hub_error(
            404,
            "RepoNotFound",
            &format!("Repository not found: {id}"),
        ));
    };
    if revision != "main" && revision != repo.commit {
        return Err(Response::hub_error(
            404,
            "RevisionNotFound",
            &format!("Invalid rev id: {revision}"),
        ));
    }
    Ok(repo)
}

/// `resolve/<rev>/<file>`: an LFS file redirects to its CDN URL with `X-Linked-Etag` and
/// `X-Linked-Size`; a git file answers itself with its blob id as ETag.
fn resolve_file(state: &ServerState, repo: &Repo, file: &RepoFile, request: &Request) -> Response {
    if file.lfs {
        return Response::new(302, "")
            .header(
                "Location",
                format!("{}/cdn/{}", state.cdn_base(), file.sha256),
            )
            .header("X-Repo-Commit", repo.commit.as_str())
            .header("X-Linked-Etag", format!("\"{}\"", file.sha256))
            .header("X-Linked-Size", file.bytes.len().to_string())
            .header("ETag", format!("\"{}\"", file.git_oid));
    }
    file_body(file, request).header("X-Repo-Commit", repo.commit.as_str())
}

/// A file's bytes, honouring `Range`.
fn file_body(file: &RepoFile, request: &Request) -> Response {
    let len = file.bytes.len();
    let etag = format!("\"{}\"", file.etag());
    match request.header("range").and_then(|r| parse_range(r, len)) {
        Some(Ok((start, end))) => Response::new(206, file.bytes[start..=end].to_vec())
            .header("Content-Range", format!("bytes {start}-{end}/{len}"))
            .header("ETag", etag),
        Some(Err(())) => Response::new(416, "").header("Content-Range", format!("bytes */{len}")),
        None => Response::new(200, file.bytes.clone()).header("ETag", etag),
    }
}

/// `GET /api/<kind>/<id>/tree/<rev>?recursive=true`: every file with its size, git blob id and,
/// for LFS files, the LFS object id and size.
fn tree_json(repo: &Repo) -> String {
    let entries: Vec<_> = repo
        .files
        .iter()
        .map(|f| {
            let mut entry = serde_json::json!({
                "type": "file", "path": f.path, "size": f.bytes.len(), "oid": f.git_oid,
            });
            if f.lfs {
                entry["lfs"] = serde_json::json!({
                    "oid": f.sha256, "size": f.bytes.len(), "pointerSize": 134,
                });
            }
            entry
        })
        .collect();
    serde_json::Value::Array(entries).to_string()
}
