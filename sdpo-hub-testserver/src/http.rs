//! Just enough HTTP/1.1 for the Hub's file protocol: one request per connection, headers read,
//! the answer written with `Connection: close` (or cut short, when a fault says so).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};

/// A parsed request line and its headers (names lowercased).
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// Header values by lowercase name.
    pub headers: BTreeMap<String, String>,
}

impl Request {
    /// Reads one request from `stream`; `None` when the client sent nothing usable.
    pub fn read(stream: &TcpStream) -> Option<Self> {
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let target = parts.next()?;
        let path = percent_decode(target.split('?').next().unwrap_or(target));
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).ok()? == 0 {
                break;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        Some(Self {
            method,
            path,
            headers,
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// `%2F` and friends back to bytes (revisions like `refs%2Fpr%2F1`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match escaped {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An answer: status, headers and body (a HEAD answer sends the headers only).
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers in the order given.
    pub headers: Vec<(String, String)>,
    /// The body; `Content-Length` is set from it unless a header already says it.
    pub body: Vec<u8>,
}

impl Response {
    /// An answer with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// A Hub-style error: `X-Error-Code` and `X-Error-Message` headers and a JSON body.
    pub fn hub_error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::json!({ "error": message }).to_string();
        Self::new(status, body)
            .header("Content-Type", "application/json")
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
    }

    /// Writes the answer; with `keep`, only the first `keep` body bytes before closing (the
    /// headers still announce the whole body: a truncated transfer).
    pub fn write(&self, stream: &mut TcpStream, head_only: bool, keep: Option<usize>) {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        let has_length = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if !has_length {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            let end = keep.unwrap_or(self.body.len()).min(self.body.len());
            bytes.extend_from_slice(&self.body[..end]);
        }
        let _ = stream.write_all(&bytes);
        let _ = stream.flush();
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// The byte range a `Range: bytes=a-` or `bytes=a-b` header asks for, clamped to `len`;
/// `Err(())` when it starts at or past the end.
pub fn parse_range(header: &str, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: usize = start.trim().parse().ok()?;
    if start >= len {
        return Some(Err(()));
    }
    let end = match end.trim() {
        "" => len - 1,
        e => e.parse::<usize>().ok()?.min(len - 1),
    };
    Some(Ok((start, end)))
}
