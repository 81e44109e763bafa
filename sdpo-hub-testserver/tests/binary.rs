//! The `sdpo-hub-testserver` binary (what CI runs): it writes its URL, serves a repository's
//! listing and files, and refuses a gated repository without its token.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn the_binary_serves_a_root_until_killed() {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("models/org/tiny");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("config.json"), "{}").unwrap();
    std::fs::create_dir_all(root.path().join("models/org/gated")).unwrap();
    std::fs::write(root.path().join("models/org/gated/config.json"), "{}").unwrap();
    let url_file = root.path().join("url");
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_sdpo-hub-testserver"))
            .args(["--root", &root.path().display().to_string()])
            .args(["--url-file", &url_file.display().to_string()])
            .args(["--token", "org/gated=secret"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !url_file.is_file() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = std::fs::read_to_string(&url_file).expect("the server wrote its URL");
    let listing = get(&url, "/api/models/org/tiny/revision/main");
    assert!(
        listing.starts_with("HTTP/1.1 200") && listing.contains("config.json"),
        "{listing}"
    );
    let file = get(&url, "/org/tiny/resolve/main/config.json");
    assert!(
        file.contains("X-Repo-Commit") && file.ends_with("{}"),
        "{file}"
    );
    let gated = get(&url, "/org/gated/resolve/main/config.json");
    assert!(
        gated.starts_with("HTTP/1.1 401") && gated.contains("GatedRepo"),
        "{gated}"
    );
    let usage = Command::new(env!("CARGO_BIN_EXE_sdpo-hub-testserver"))
        .output()
        .unwrap();
    assert!(!usage.status.success());
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--root DIR is required"));
}
