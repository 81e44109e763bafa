//! Shared test helpers: fixture paths, the SmolLM2 tokenizer, temporary files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use sdpo_data::{DataConfig, PreferenceProcessor, PreferenceTokenizer};

/// `$SDPO_FIXTURES`, or the repository's `fixtures/` (same rule as `sdpo-testkit`, copied here
/// so this crate's tests do not compile burn).
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("SDPO_FIXTURES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"),
    }
}

pub fn smollm2_dir() -> PathBuf {
    fixtures_dir().join("smollm2")
}

pub fn smollm2() -> PreferenceTokenizer {
    PreferenceTokenizer::from_dir(smollm2_dir()).expect("load smollm2 tokenizer")
}

pub fn processor(config: DataConfig) -> PreferenceProcessor {
    PreferenceProcessor::new(smollm2(), config).expect("processor")
}

/// A processor on the SmolLM2 tokenizer with `template` as its chat template, if given.
pub fn processor_with(config: DataConfig, template: Option<&str>) -> PreferenceProcessor {
    let mut tokenizer = smollm2();
    if let Some(template) = template {
        tokenizer = tokenizer.with_chat_template(template).expect("template");
    }
    PreferenceProcessor::new(tokenizer, config).expect("processor")
}

/// A JSON file, parsed (panics naming the file).
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A TRL 0.28 config with no length limits.
pub fn unlimited() -> DataConfig {
    DataConfig {
        max_length: None,
        max_prompt_length: Some(None),
        ..DataConfig::v0_28()
    }
}

pub fn bad_inputs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs")
}

/// A fresh directory under the system temp dir, unique per call.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sdpo-data-{}-{tag}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `contents` to a fresh temp file named `name`.
pub fn write_temp(name: &str, contents: &[u8]) -> PathBuf {
    let path = temp_dir("file").join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

pub fn encode(tok: &PreferenceTokenizer, text: &str) -> Vec<u32> {
    tok.encode(text).expect("encode")
}
