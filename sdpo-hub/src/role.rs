//! What a resolved directory is for, which of a repository's files that needs (a model needs
//! its configuration, weights and tokenizer, not its ONNX or GGUF copies), and when a cached
//! snapshot already has them.

use std::path::Path;

/// What the resolved directory will be read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A full model: `config.json`, safetensors weights (one file or an index and its shards),
    /// the tokenizer and generation files next to them.
    Model,
    /// A PEFT adapter: `adapter_config.json` and `adapter_model.safetensors`.
    Adapter,
    /// A tokenizer: `tokenizer.json` and its configuration files.
    Tokenizer,
    /// A dataset repository: every file (its README's `configs:` block says which are data).
    Dataset,
}

/// The weights index of a sharded model.
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// Tokenizer files transformers' `AutoTokenizer` reads.
const TOKENIZER_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
];

impl Role {
    /// Whether a repository file (its `/`-separated path) is fetched for this role, before a
    /// weights index narrows the shards.
    pub fn wants(self, path: &str) -> bool {
        let top_level = !path.contains('/');
        let ext = Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        match self {
            Role::Model => {
                top_level && matches!(ext, "json" | "safetensors" | "jinja" | "txt" | "model")
            }
            Role::Adapter => top_level && matches!(ext, "json" | "safetensors"),
            Role::Tokenizer => top_level && TOKENIZER_FILES.contains(&path),
            Role::Dataset => path != ".gitattributes",
        }
    }

    /// The files a snapshot directory must hold before it is used as it is; a missing one is
    /// named. A model's weights are `model.safetensors`, or the index and every shard it names.
    pub fn missing_in(self, dir: &Path) -> Option<String> {
        let need = |file: &str| (!dir.join(file).is_file()).then(|| file.to_string());
        match self {
            Role::Model => need("config.json").or_else(|| missing_weights(dir)),
            Role::Adapter => {
                need("adapter_config.json").or_else(|| need("adapter_model.safetensors"))
            }
            Role::Tokenizer => need("tokenizer.json"),
            Role::Dataset => {
                let has_any = std::fs::read_dir(dir)
                    .map(|mut entries| entries.next().is_some())
                    .unwrap_or(false);
                (!has_any).then(|| "any file".to_string())
            }
        }
    }
}

/// The shards a weights index names (its `weight_map` values), sorted and deduplicated.
pub fn indexed_shards(index: &serde_json::Value) -> Option<Vec<String>> {
    let map = index.get("weight_map")?.as_object()?;
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    shards.sort();
    shards.dedup();
    Some(shards)
}

fn missing_weights(dir: &Path) -> Option<String> {
    if dir.join("model.safetensors").is_file() {
        return None;
    }
    let index = dir.join(WEIGHTS_INDEX);
    let Ok(text) = std::fs::read_to_string(&index) else {
        return Some("model.safetensors (or model.safetensors.index.json)".into());
    };
    let shards = serde_json::from_str(&text)
        .ok()
        .and_then(|v: serde_json::Value| indexed_shards(&v));
    match shards {
        None => Some(format!("a valid {WEIGHTS_INDEX}")),
        Some(shards) => shards.into_iter().find(|s| !dir.join(s).is_file()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_want_their_files_and_name_what_is_missing() {
        assert!(Role::Model.wants("model-00001-of-00002.safetensors"));
        assert!(Role::Model.wants("tokenizer.json"));
        assert!(!Role::Model.wants("onnx/model.onnx"));
        assert!(!Role::Model.wants("model.gguf"));
        assert!(!Role::Model.wants("pytorch_model.bin"));
        assert!(Role::Adapter.wants("adapter_model.safetensors"));
        assert!(!Role::Tokenizer.wants("model.safetensors"));
        assert!(Role::Dataset.wants("data/train-00000-of-00001.parquet"));
        assert!(!Role::Dataset.wants(".gitattributes"));

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Role::Model.missing_in(dir.path()).as_deref(),
            Some("config.json")
        );
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let index = r#"{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}"#;
        std::fs::write(dir.path().join(WEIGHTS_INDEX), index).unwrap();
        std::fs::write(dir.path().join("s1.safetensors"), "x").unwrap();
        assert_eq!(
            Role::Model.missing_in(dir.path()).as_deref(),
            Some("s2.safetensors")
        );
        std::fs::write(dir.path().join("s2.safetensors"), "x").unwrap();
        assert_eq!(Role::Model.missing_in(dir.path()), None);
        assert_eq!(
            Role::Tokenizer.missing_in(dir.path()).as_deref(),
            Some("tokenizer.json")
        );
    }
}
