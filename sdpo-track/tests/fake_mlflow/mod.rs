//! A local HTTP server on 127.0.0.1 that answers like an MLflow tracking server, or fails as
//! scripted: for the failure modes of the MLflow sink. It handles one connection at a time,
//! answers each request with `Connection: close`, records every request, and stops when
//! dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
pub enum Reply {
    /// Status and JSON body.
    Json(u16, Value),
    /// Close the connection without answering.
    Close,
    /// Keep the connection open, answer nothing, until the server is released or stopped.
    Hang,
}

/// Decides the reply to the `n`-th request (0-based).
pub type Script = Box<dyn FnMut(&Request, usize) -> Reply + Send>;

pub struct FakeServer {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(mut script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (reqs, stopping, released) = (requests.clone(), stop.clone(), release.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let n = {
                    let mut all = reqs.lock().unwrap();
                    all.push(request.clone());
                    all.len() - 1
                };
                match script(&request, n) {
                    Reply::Json(status, body) => write_json(stream, status, &body),
                    Reply::Close => drop(stream),
                    Reply::Hang => {
                        while !stopping.load(Ordering::SeqCst) && !released.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            }
        });
        Self {
            url,
            requests,
            stop,
            release,
            thread: Some(thread),
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Lets hanging requests go (their connections close unanswered).
    pub fn release(&self) {
        self.release.store(true, Ordering::SeqCst);
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn write_json(mut stream: TcpStream, status: u16, body: &Value) {
    let text = body.to_string();
    let reason = if status < 300 { "OK" } else { "Error" };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.flush();
}

/// What a healthy MLflow server answers: experiment `7` (created on first use), run `r1`
/// whose artifacts go to `artifact_uri`.
pub fn mlflow_answer(request: &Request, artifact_uri: &str) -> Reply {
    let path = request.path.as_str();
    match path {
        "/api/2.0/mlflow/experiments/get-by-name" => Reply::Json(
            404,
            json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no experiment"}),
        ),
        "/api/2.0/mlflow/experiments/create" => Reply::Json(200, json!({"experiment_id": "7"})),
        "/api/2.0/mlflow/runs/create" | "/api/2.0/mlflow/runs/get" => Reply::Json(
            200,
            json!({"run": {"info": {"run_id": "r1", "experiment_id": "7",
                                     "artifact_uri": artifact_uri}}}),
        ),
        "/api/2.0/mlflow/runs/log-batch" | "/api/2.0/mlflow/runs/update" => {
            Reply::Json(200, json!({}))
        }
        _ if path.starts_with("/api/2.0/mlflow-artifacts/artifacts/") => {
            Reply::Json(200, json!({}))
        }
        _ => Reply::Json(
            404,
            json!({"error_code": "ENDPOINT_NOT_FOUND", "message": path}),
        ),
    }
}
