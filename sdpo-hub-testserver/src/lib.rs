//! A local stand-in for the Hugging Face Hub's file protocol, for tests and CI: nothing here
//! reaches the real Hub.
//!
//! [`HubServer::start`] serves the repositories under a root directory
//! (`models/<owner>/<name>/...`, `datasets/<owner>/<name>/...`) on `127.0.0.1`:
//!
//! - `GET /api/{models|datasets}/<id>/revision/<rev>`: `{"id", "sha", "siblings": [{"rfilename"}]}`;
//! - `HEAD|GET /[datasets/]<id>/resolve/<rev>/<file>`: a git file answers with its bytes, its
//!   git blob id as `ETag` and `X-Repo-Commit`; an LFS file (`*.safetensors`, `*.parquet`, ...)
//!   answers `302` to an absolute CDN URL (a second port: another origin) with `X-Linked-Etag`
//!   (its SHA-256) and
//!   `X-Linked-Size`, as the Hub does; `Range` is honoured (`206`, `416`);
//! - a renamed repository answers `307` with a relative `Location` ([`HubServer::rename`]);
//! - a repository can require a token ([`HubServer::require_token`]: `401` with
//!   `X-Error-Code: GatedRepo` without it); unknown repositories, revisions and files answer
//!   `404` with `X-Error-Code` `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`.
//!
//! The commit id of a repository is a hash of its files, and `main` is its only branch.
//! [`HubServer::inject`] makes the next requests for a file fail in a chosen way ([`Fault`]),
//! and [`HubServer::requests`] shows what the client sent (ranges, tokens).

#![warn(missing_docs)]

mod http;
mod routes;
mod store;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

pub use store::{RepoKind, hex};

/// Which request about a file a [`Fault`] hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The `HEAD` of `resolve/<rev>/<file>` (and the redirect an LFS file's `GET` gets).
    Metadata,
    /// The request that carries the bytes: the `GET` of a git file's resolve URL, or of an LFS
    /// file's CDN URL.
    Data,
}

/// A way for the server to misbehave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with a Hub-style error (`401`, `404`, `500`, ...).
    Status(u16),
    /// Announce the whole body but send only its first `keep` bytes, then close.
    Truncate {
        /// Bytes of the body sent before the connection is closed.
        keep: usize,
    },
    /// Close the connection without answering.
    Drop,
    /// Answer `200` with the whole file even when a `Range` was asked (a server without range
    /// support).
    IgnoreRange,
    /// Send the right length with one byte changed (a checksum failure).
    Corrupt,
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The decoded path.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

struct FaultRule {
    file: String,
    phase: Phase,
    fault: Fault,
    remaining: usize,
}

/// Shared state of a running server: tokens, renames, faults, the request log.
#[derive(Default)]
pub(crate) struct ServerState {
    /// `http://127.0.0.1:<port>` of the second listener, which stands in for the CDN host an
    /// LFS file redirects to (another origin: clients must not send it the token).
    cdn_base: Mutex<String>,
    tokens: Mutex<BTreeMap<String, String>>,
    renames: Mutex<BTreeMap<String, String>>,
    faults: Mutex<Vec<FaultRule>>,
    log: Mutex<Vec<LoggedRequest>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ServerState {
    pub(crate) fn token_for(&self, id: &str) -> Option<String> {
        lock(&self.tokens).get(id).cloned()
    }

    pub(crate) fn cdn_base(&self) -> String {
        lock(&self.cdn_base).clone()
    }

    pub(crate) fn renamed(&self, id: &str) -> Option<String> {
        lock(&self.renames).get(id).cloned()
    }

    /// The fault for `file` in `phase`, if one is armed (and counts it down).
    fn take_fault(&self, file: &str, phase: Phase) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let index = faults
            .iter()
            .position(|r| r.file == file && r.phase == phase && r.remaining > 0)?;
        faults[index].remaining -= 1;
        let fault = faults[index].fault.clone();
        faults.retain(|r| r.remaining > 0);
        Some(fault)
    }
}

/// The server; stops when dropped.
pub struct HubServer {
    addr: SocketAddr,
    cdn_addr: SocketAddr,
    state: Arc<ServerState>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Accepts connections on `listener` until `stop`, one thread per connection.
fn accept_loop(
    listener: TcpListener,
    state: Arc<ServerState>,
    store: store::Store,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let (state, store) = (Arc::clone(&state), store.clone());
            std::thread::spawn(move || serve(&state, &store, stream));
        }
    })
}

impl HubServer {
    /// Serves the repositories under `root` on `127.0.0.1` at a free port.
    ///
    /// # Errors
    /// When no local port can be bound.
    pub fn start(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        Self::bind(root, "127.0.0.1:0")
    }

    /// Serves the repositories under `root` at `addr` (a loopback address).
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub fn bind(root: impl Into<PathBuf>, addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let cdn = TcpListener::bind((addr.ip(), 0))?;
        let cdn_addr = cdn.local_addr()?;
        let state = Arc::new(ServerState::default());
        *lock(&state.cdn_base) = format!("http://{cdn_addr}");
        let stop = Arc::new(AtomicBool::new(false));
        let store = store::Store::new(root);
        let threads = [listener, cdn]
            .into_iter()
            .map(|l| accept_loop(l, Arc::clone(&state), store.clone(), Arc::clone(&stop)))
            .collect();
        Ok(Self {
            addr,
            cdn_addr,
            state,
            stop,
            threads,
        })
    }

    /// The endpoint to give clients (`HF_ENDPOINT`): `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requires `Authorization: Bearer <token>` for repository `id` (`owner/name`).
    pub fn require_token(&self, id: &str, token: &str) {
        lock(&self.state.tokens).insert(id.to_string(), token.to_string());
    }

    /// Answers requests for repository `old` with a relative redirect to `new` (a renamed
    /// repository).
    pub fn rename(&self, old: &str, new: &str) {
        lock(&self.state.renames).insert(old.to_string(), new.to_string());
    }

    /// Makes the next `times` requests for repository file `file` (its path in the repository)
    /// in `phase` fail with `fault`.
    pub fn inject(&self, file: &str, phase: Phase, fault: Fault, times: usize) {
        lock(&self.state.faults).push(FaultRule {
            file: file.to_string(),
            phase,
            fault,
            remaining: times,
        });
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.state.log).clone()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        let _ = TcpStream::connect(self.cdn_addr);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve(state: &ServerState, store: &store::Store, mut stream: TcpStream) {
    let Some(mut request) = http::Request::read(&stream) else {
        return;
    };
    lock(&state.log).push(LoggedRequest {
        method: request.method.clone(),
        path: request.path.clone(),
        range: request.header("range").map(str::to_string),
        authorization: request.header("authorization").map(str::to_string),
    });
    let head_only = request.method == "HEAD";
    let mut answer = routes::answer(state, store, &request);
    let fault = answer
        .target
        .as_ref()
        .and_then(|(file, phase)| state.take_fault(file, *phase));
    let mut keep = None;
    match fault {
        None => {}
        Some(Fault::Status(status)) => {
            answer.response =
                http::Response::hub_error(status, "InjectedFault", "injected by the test server");
        }
        Some(Fault::Drop) => {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        Some(Fault::Truncate { keep: k }) => keep = Some(k),
        Some(Fault::IgnoreRange) => {
            request.headers.remove("range");
            answer = routes::answer(state, store, &request);
        }
        Some(Fault::Corrupt) => {
            if let Some(byte) = answer.response.body.first_mut() {
                *byte ^= 0xFF;
            }
        }
    }
    answer.response.write(&mut stream, head_only, keep);
}
