//! Talking to the Hub: the repository listing through hf-hub's `Api::info`, a file's metadata
//! from a `HEAD` of its resolve URL (following only relative redirects, as `huggingface_hub`
//! does, so an LFS file's `X-Linked-Etag` and `X-Linked-Size` are read from the redirect), and
//! ranged `GET`s of its bytes.

use std::time::Duration;

use crate::error::HubError;
use crate::repo::RepoRef;
use crate::settings::HubSettings;

/// A repository at one commit: its commit id and every file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The commit the asked revision points at.
    pub commit: String,
    /// Every file of the repository at that commit, `/`-separated.
    pub files: Vec<String>,
}

/// What the Hub says about one file before it is downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// The ETag (an LFS file's SHA-256, a git file's blob id), quotes removed.
    pub etag: String,
    /// The size in bytes.
    pub size: u64,
    /// The commit the file was resolved at.
    pub commit: Option<String>,
    /// Where the bytes are: the resolve URL, or the CDN URL an LFS file redirects to.
    pub data_url: String,
}

/// Redirects followed when looking up a file's metadata (relative ones only).
const MAX_RELATIVE_REDIRECTS: usize = 10;

/// An HTTP client for one Hub endpoint and token.
pub struct HubClient {
    settings: HubSettings,
    api: hf_hub::api::sync::Api,
    metadata_agent: ureq::Agent,
    data_agent: ureq::Agent,
}

impl HubClient {
    /// A client for `settings`' endpoint and token.
    pub fn new(settings: &HubSettings) -> Result<Self, HubError> {
        let api = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(
            settings.cache_dir.clone(),
        ))
        .with_endpoint(settings.endpoint.clone())
        .with_token(settings.token.clone())
        .with_progress(false)
        .with_user_agent("sdpo-rs", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| HubError::Unreachable {
            url: settings.endpoint.clone(),
            reason: e.to_string(),
        })?;
        let agent = |redirects: u32, read_secs: u64| {
            ureq::AgentBuilder::new()
                .redirects(redirects)
                .timeout_connect(Duration::from_secs(settings.metadata_timeout_secs))
                .timeout_read(Duration::from_secs(read_secs))
                .try_proxy_from_env(true)
                .user_agent(concat!("sdpo-rs/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Ok(Self {
            settings: settings.clone(),
            api,
            metadata_agent: agent(0, settings.metadata_timeout_secs),
            data_agent: agent(5, settings.download_timeout_secs),
        })
    }

    fn host_of(url: &str) -> &str {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }

    /// Adds the token when `url` is on the endpoint's host (never on a CDN URL).
    fn authorize(&self, request: ureq::Request, url: &str) -> ureq::Request {
        match &self.settings.token {
            Some(token) if Self::host_of(url) == Self::host_of(&self.settings.endpoint) => {
                request.set("Authorization", &format!("Bearer {token}"))
            }
            _ => request,
        }
    }

    /// The commit `repo`'s revision points at and the files there (hf-hub's `Api::info`:
    /// `GET /api/{models|datasets}/<id>/revision/<rev>`).
    pub fn listing(&self, repo: &RepoRef) -> Result<Listing, HubError> {
        let hf = self.api.repo(repo.hf());
        let url = hf.info_request().url().to_string();
        match hf.info() {
            Ok(info) => Ok(Listing {
                commit: info.sha,
                files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
            }),
            Err(hf_hub::api::sync::ApiError::RequestError(err)) => {
                Err(self.request_error(*err, &url, repo, None))
            }
            Err(other) => Err(HubError::Malformed {
                url,
                reason: other.to_string(),
            }),
        }
    }

    /// The resolve URL of `file` at `commit` (hf-hub's URL scheme).
    pub fn resolve_url(&self, repo: &RepoRef, commit: &str, file: &str) -> String {
        let pinned = RepoRef {
            revision: commit.to_string(),
            ..repo.clone()
        };
        self.api.repo(pinned.hf()).url(file)
    }

    /// `HEAD` of `file`'s resolve URL at `commit`.
    pub fn file_meta(
        &self,
        repo: &RepoRef,
        commit: &str,
        file: &str,
    ) -> Result<FileMeta, HubError> {
        let mut url = self.resolve_url(repo, commit, file);
        for _ in 0..=MAX_RELATIVE_REDIRECTS {
            let request = self
                .metadata_agent
                .head(&url)
                .set("Accept-Encoding", "identity");
            let response = match self.authorize(request, &url).call() {
                Ok(response) => response,
                Err(err) => return Err(self.request_error(err, &url, repo, Some(file))),
            };
            let location = response.header("Location").map(str::to_string);
            if (300..400).contains(&response.status())
                && let Some(location) = &location
                && location.starts_with('/')
            {
                let scheme_host = url.split('/').take(3).collect::<Vec<_>>().join("/");
                url = format!("{scheme_host}{location}");
                continue;
            }
            let malformed = |reason: &str| HubError::Malformed {
                url: url.clone(),
                reason: reason.to_string(),
            };
            let etag = response
                .header("X-Linked-Etag")
                .or_else(|| response.header("ETag"))
                .map(normalize_etag)
                .filter(|e| !e.is_empty())
                .ok_or_else(|| malformed("no ETag header"))?;
            let size = response
                .header("X-Linked-Size")
                .or_else(|| response.header("Content-Length"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| malformed("no X-Linked-Size or Content-Length header"))?;
            let commit = response.header("X-Repo-Commit").map(str::to_string);
            let data_url = match location {
                Some(location) if (300..400).contains(&response.status()) => location,
                _ => url.clone(),
            };
            return Ok(FileMeta {
                etag,
                size,
                commit,
                data_url,
            });
        }
        Err(HubError::Malformed {
            url,
            reason: format!("more than {MAX_RELATIVE_REDIRECTS} redirects"),
        })
    }

    /// `GET` of `url` from byte `start` (a `Range` request when `start > 0`).
    pub fn get_from(
        &self,
        url: &str,
        start: u64,
        repo: &RepoRef,
        file: &str,
    ) -> Result<ureq::Response, HubError> {
        let mut request = self.data_agent.get(url).set("Accept-Encoding", "identity");
        if start > 0 {
            request = request.set("Range", &format!("bytes={start}-"));
        }
        self.authorize(request, url)
            .call()
            .map_err(|err| self.request_error(err, url, repo, Some(file)))
    }

    /// A ureq error as a [`HubError`], with a hint for the Hub's usual refusals.
    fn request_error(
        &self,
        err: ureq::Error,
        url: &str,
        repo: &RepoRef,
        file: Option<&str>,
    ) -> HubError {
        match err {
            ureq::Error::Status(status, response) => {
                let code = response.header("X-Error-Code").map(str::to_string);
                let message = response
                    .header("X-Error-Message")
                    .map(str::to_string)
                    .unwrap_or_else(|| response.status_text().to_string());
                let hint = self.hint(status, code.as_deref(), repo, file);
                HubError::Http {
                    url: url.to_string(),
                    status,
                    code,
                    message,
                    hint,
                }
            }
            ureq::Error::Transport(transport) => HubError::Unreachable {
                url: url.to_string(),
                reason: transport.to_string(),
            },
        }
    }

    fn hint(
        &self,
        status: u16,
        code: Option<&str>,
        repo: &RepoRef,
        file: Option<&str>,
    ) -> Option<String> {
        let has_token = self.settings.token.is_some();
        Some(match (status, code) {
            (401 | 403, _) if has_token => format!(
                "the token (HF_TOKEN, or the token file under HF_HOME) has no access to {repo}: \
                 accept its terms on the Hub or use a token with access"
            ),
            (401 | 403, _) => format!(
                "{repo} is gated or private: set HF_TOKEN to a token with access (or log in \
                 with `hf auth login`)"
            ),
            (404, Some("RevisionNotFound")) => {
                format!("{repo} has no revision `{}`", repo.revision)
            }
            (404, Some("EntryNotFound")) => {
                format!("{repo} has no file `{}`", file.unwrap_or("(unknown)"))
            }
            (404, _) => format!(
                "no {repo} on {} (check the id{})",
                self.settings.endpoint,
                if has_token {
                    ""
                } else {
                    "; a private repository needs HF_TOKEN"
                }
            ),
            _ => return None,
        })
    }
}

/// An ETag without `W/` and quotes.
fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}
