//! Where the cache is, which endpoint and token to use, whether the run is offline: read from
//! the same environment variables, in the same order, as Python's `huggingface_hub`
//! (`huggingface_hub/constants.py`), so Rust and Python share one cache.

use std::path::PathBuf;

/// The Hub endpoint when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Seconds to wait for the Hub to answer a request (`HF_HUB_ETAG_TIMEOUT`'s default, 10 s, is
/// `huggingface_hub`'s; a stalled transfer fails after `HF_HUB_DOWNLOAD_TIMEOUT`, also 10 s).
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// The Hub settings of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// The cache directory (`.../huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Which variable chose `cache_dir` (`HF_HUB_CACHE`, `HF_HOME`, ...), for messages.
    pub cache_dir_from: &'static str,
    /// The Hub's base URL, without a trailing `/`.
    pub endpoint: String,
    /// The token sent as `Authorization: Bearer`, if any.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is true: only local paths and the cache.
    pub offline: bool,
    /// Seconds to wait for an answer (metadata requests).
    pub metadata_timeout_secs: u64,
    /// Seconds a transfer may stall before it is abandoned (and resumed on the next try).
    pub download_timeout_secs: u64,
}

/// `huggingface_hub`'s `_is_true`: `1`, `ON`, `YES`, `TRUE` in any case.
fn is_true(value: Option<&str>) -> bool {
    value.is_some_and(|v| ["1", "ON", "YES", "TRUE"].contains(&v.to_ascii_uppercase().as_str()))
}

/// `os.path.expanduser` for a leading `~` (`$VAR`s are left as written).
fn expand_home(path: &str, home: Option<&str>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(format!("{home}{rest}"))
        }
        _ => PathBuf::from(path),
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

impl HubSettings {
    /// The settings of this process's environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings `lookup` (a variable name to its value) describes, in `huggingface_hub`'s
    /// order:
    ///
    /// - cache: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`, else
    ///   `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`;
    /// - endpoint: `HF_ENDPOINT`, else `https://huggingface.co`;
    /// - token: `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the file `HF_TOKEN_PATH`
    ///   (default `HF_HOME/token`, as `huggingface-cli login` writes it), none with
    ///   `HF_HUB_DISABLE_IMPLICIT_TOKEN`;
    /// - offline: `HF_HUB_OFFLINE`, else `TRANSFORMERS_OFFLINE`;
    /// - timeouts: `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT` (seconds).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| non_empty(lookup(name));
        let home = get("HOME").or_else(|| get("USERPROFILE"));
        let home = home.as_deref();
        let (hf_home, hf_home_from) = match get("HF_HOME") {
            Some(dir) => (expand_home(&dir, home), "HF_HOME"),
            None => match get("XDG_CACHE_HOME") {
                Some(dir) => (
                    expand_home(&dir, home).join("huggingface"),
                    "XDG_CACHE_HOME",
                ),
                None => (
                    expand_home("~/.cache", home).join("huggingface"),
                    "the default ~/.cache/huggingface",
                ),
            },
        };
        let (cache_dir, cache_dir_from) = match get("HF_HUB_CACHE") {
            Some(dir) => (expand_home(&dir, home), "HF_HUB_CACHE"),
            None => match get("HUGGINGFACE_HUB_CACHE") {
                Some(dir) => (expand_home(&dir, home), "HUGGINGFACE_HUB_CACHE"),
                None => (hf_home.join("hub"), hf_home_from),
            },
        };
        let endpoint = get("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        let token = if is_true(lookup("HF_HUB_DISABLE_IMPLICIT_TOKEN").as_deref()) {
            None
        } else {
            get("HF_TOKEN")
                .or_else(|| get("HUGGING_FACE_HUB_TOKEN"))
                .or_else(|| {
                    let file = get("HF_TOKEN_PATH")
                        .map(|p| expand_home(&p, home))
                        .unwrap_or_else(|| hf_home.join("token"));
                    non_empty(std::fs::read_to_string(file).ok())
                })
                .map(|t| t.trim().to_string())
        };
        let offline = is_true(
            get("HF_HUB_OFFLINE")
                .or_else(|| get("TRANSFORMERS_OFFLINE"))
                .as_deref(),
        );
        let secs = |name: &str| {
            get(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0)
                .map_or(DEFAULT_TIMEOUT_SECS, |v| v.ceil() as u64)
        };
        Self {
            cache_dir,
            cache_dir_from,
            endpoint,
            token,
            offline,
            metadata_timeout_secs: secs("HF_HUB_ETAG_TIMEOUT"),
            download_timeout_secs: secs("HF_HUB_DOWNLOAD_TIMEOUT"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> HubSettings {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubSettings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn the_cache_is_found_in_huggingface_hubs_order() {
        let base = [("HOME", "/home/u")];
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[], "/home/u/.cache/huggingface/hub"),
            (&[("XDG_CACHE_HOME", "/x")], "/x/huggingface/hub"),
            (
                &[("XDG_CACHE_HOME", "/x"), ("HF_HOME", "~/hf")],
                "/home/u/hf/hub",
            ),
            (
                &[("HF_HOME", "/h"), ("HUGGINGFACE_HUB_CACHE", "/legacy")],
                "/legacy",
            ),
            (
                &[("HUGGINGFACE_HUB_CACHE", "/legacy"), ("HF_HUB_CACHE", "/c")],
                "/c",
            ),
        ];
        for (vars, expected) in cases {
            let all: Vec<(&str, &str)> = base.iter().chain(vars.iter()).copied().collect();
            assert_eq!(
                settings(&all).cache_dir,
                PathBuf::from(expected),
                "{vars:?}"
            );
        }
    }

    #[test]
    fn offline_endpoint_and_token() {
        let s = settings(&[
            ("HOME", "/nonexistent-home"),
            ("HF_HUB_OFFLINE", "yes"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HUGGING_FACE_HUB_TOKEN", "legacy"),
        ]);
        assert!(s.offline);
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert_eq!(s.token.as_deref(), Some("legacy"));
        let s = settings(&[
            ("HOME", "/nonexistent-home"),
            ("TRANSFORMERS_OFFLINE", "0"),
            ("HF_TOKEN", " t "),
            ("HUGGING_FACE_HUB_TOKEN", "legacy"),
        ]);
        assert!(!s.offline);
        assert_eq!(s.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(s.token.as_deref(), Some("t"));
        let s = settings(&[
            ("HOME", "/nonexistent-home"),
            ("HF_TOKEN", "t"),
            ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
        ]);
        assert_eq!(s.token, None);
    }

    #[test]
    fn the_token_file_is_read_from_hf_home() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file_token\n").unwrap();
        let home = dir.path().to_string_lossy().into_owned();
        let s = settings(&[("HF_HOME", &home)]);
        assert_eq!(s.token.as_deref(), Some("hf_file_token"));
        assert_eq!(s.cache_dir, dir.path().join("hub"));
    }
}
