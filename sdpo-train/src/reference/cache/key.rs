//! The key of a reference cache: its parts in clear, and the SHA-256 digests over them that
//! another program can compute (docs/reference-cache.md specifies every part).
//!
//! The first five parts say *what* the log-probs are of (the rows the reference sees, their
//! truncation, the reference's weights): their digest is the content key. The last four say
//! *how* sdpo-rs computed them (the path, the rows' layout, the precision, the reference's
//! dtype): a run's own cache must match all nine, so that SDPO's first scores stay exactly 0
//! when the reference is the initial policy; a cache written by another engine need only match
//! the content key.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use sdpo_data::{Collator, TokenizedDataset};
use sdpo_models::MatmulPrecision;

use crate::config::TrainConfig;
use crate::error::{TrainError, io};

/// The first line of the text the key digests.
const KEY_PREAMBLE: &str = "sdpo-ref-logps/2 key\n";
/// The first line of the text the content key digests.
const CONTENT_PREAMBLE: &str = "sdpo-ref-logps/2 content\n";

/// The names of the key's parts, in the order they are digested; the first
/// [`CacheKey::CONTENT_PARTS`] make the content key.
pub const KEY_PART_NAMES: [&str; 9] = [
    "rows",
    "max_length",
    "max_prompt_length",
    "truncation_mode",
    "reference",
    "logps_path",
    "row_layout",
    "matmul_precision",
    "ref_dtype",
];

/// How sdpo-rs computes a reference's log-probs on the run's device: the products' precision
/// and the set of fused kernels the device runs ([`sdpo_models::kernel_set`]): both change the
/// bits, so both are in the key (a cache written before flex's fused kernels, or on another
/// backend, is recomputed rather than read as if the run had computed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Computation {
    /// The precision of the reference's products.
    pub precision: MatmulPrecision,
    /// [`sdpo_models::kernel_set`] of the run's device.
    pub kernels: &'static str,
}

/// The parts of a reference cache's key, each a short text (see [`KEY_PART_NAMES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// The values of [`KEY_PART_NAMES`], in that order.
    values: [String; 9],
}

impl CacheKey {
    /// How many leading parts make the content key.
    pub const CONTENT_PARTS: usize = 5;

    /// The key of `config`'s cache: `rows` is [`rows_sha256`] of the split, `computation` how
    /// the reference's log-probs are computed, `reference` [`reference_identity`].
    pub fn for_run(
        config: &TrainConfig,
        rows: String,
        computation: Computation,
        reference: String,
    ) -> Self {
        let or_none = |v: Option<usize>| v.map_or("none".to_string(), |v| v.to_string());
        let logps_path = if config.gradient_checkpointing || config.ref_layer_streaming {
            // The engine's chunked forward and the whole-batch forward agree to rounding only
            // (and the engine's blocks and chunks follow the budget). Layer streaming computes
            // the engine's forward, bit for bit.
            format!(
                "bounded;memory_budget_mib={};max_buffer_mib={};kernels={}",
                config.memory_budget_mib, config.max_buffer_mib, computation.kernels
            )
        } else {
            format!("whole;kernels={}", computation.kernels)
        };
        let row_layout = if config.uses_shared_prompt() {
            "shared_prompt"
        } else {
            "pairs"
        };
        Self {
            values: [
                rows,
                or_none(config.data.max_length),
                or_none(config.data.max_prompt_length()),
                config.data.truncation_mode().as_str().to_string(),
                reference,
                logps_path,
                row_layout.to_string(),
                computation.precision.name().to_string(),
                config
                    .ref_dtype
                    .map_or("none".to_string(), |d| d.as_str().to_string()),
            ],
        }
    }

    /// Reads the parts from a cache file's metadata; names the first missing part.
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Result<Self, String> {
        let mut values: [String; 9] = Default::default();
        for (value, name) in values.iter_mut().zip(KEY_PART_NAMES) {
            *value = metadata
                .get(name)
                .ok_or_else(|| format!("its header has no `{name}`"))?
                .clone();
        }
        Ok(Self { values })
    }

    /// `(name, value)` of every part, in order.
    pub fn parts(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        KEY_PART_NAMES
            .into_iter()
            .zip(self.values.iter().map(String::as_str))
    }

    /// The value of part `name`, if it is one.
    pub fn part(&self, name: &str) -> Option<&str> {
        self.parts().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// SHA-256 (lowercase hex) of `sdpo-ref-logps/2 key\n` then `name=value\n` for every part.
    pub fn key(&self) -> String {
        digest(KEY_PREAMBLE, self.parts())
    }

    /// SHA-256 (lowercase hex) of `sdpo-ref-logps/2 content\n` then `name=value\n` for the
    /// first [`Self::CONTENT_PARTS`] parts.
    pub fn content_key(&self) -> String {
        digest(CONTENT_PREAMBLE, self.parts().take(Self::CONTENT_PARTS))
    }

    /// The first 16 digits of [`Self::key`], as file names carry it.
    pub fn short(&self) -> String {
        self.key()[..16].to_string()
    }
}

fn digest<'a, 'b>(preamble: &str, parts: impl Iterator<Item = (&'a str, &'b str)>) -> String {
    let mut h = Sha256::new();
    h.update(preamble.as_bytes());
    for (name, value) in parts {
        h.update(format!("{name}={value}\n").as_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One pair's two rows as the reference sees them: token ids and completion masks, after
/// truncation, without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairRows {
    /// `[chosen, rejected]` token ids.
    pub ids: [Vec<u32>; 2],
    /// `[chosen, rejected]` completion masks (1 for completion tokens), as long as the ids.
    pub completion_mask: [Vec<u8>; 2],
}

impl PairRows {
    /// Pair `index` of `dataset` as `collator` makes its rows.
    pub fn of(
        dataset: &TokenizedDataset,
        collator: &Collator,
        index: usize,
    ) -> Result<Self, TrainError> {
        let batch = collator.collate_indices(dataset, &[index])?;
        let mut ids: [Vec<u32>; 2] = Default::default();
        let mut masks: [Vec<u8>; 2] = Default::default();
        for side in 0..2 {
            let t = batch.seq_len;
            let row = |v: &[i64]| v[side * t..(side + 1) * t].to_vec();
            let attention = row(&batch.attention_mask);
            let len = attention.iter().take_while(|&&a| a != 0).count();
            ids[side] = row(&batch.input_ids)[..len]
                .iter()
                .map(|&id| id as u32)
                .collect();
            masks[side] = batch.completion_mask_row(side)[..len]
                .iter()
                .map(|&m| u8::from(m != 0))
                .collect();
        }
        Ok(Self {
            ids,
            completion_mask: masks,
        })
    }

    /// Adds the pair to a rows digest: per side `u32` length, the ids as `u32`, the mask bytes
    /// (all little endian).
    fn digest_into(&self, h: &mut Sha256) {
        for side in 0..2 {
            h.update((self.ids[side].len() as u32).to_le_bytes());
            for id in &self.ids[side] {
                h.update(id.to_le_bytes());
            }
            h.update(&self.completion_mask[side]);
        }
    }
}

/// SHA-256 (lowercase hex) of every pair's rows in dataset order (see [`PairRows`]): the `rows`
/// part of the key. The tokenizer, the chat template and the truncation all reach it through
/// the token ids.
pub fn rows_sha256(dataset: &TokenizedDataset, collator: &Collator) -> Result<String, TrainError> {
    let mut h = Sha256::new();
    for index in 0..dataset.len() {
        PairRows::of(dataset, collator, index)?.digest_into(&mut h);
    }
    Ok(hex(&h.finalize()))
}

/// The `reference` part of the key: SHA-256 (lowercase hex) over `config.json` then every
/// `*.safetensors` file of `dir` in name order, each as `name\n`, its length in bytes in decimal
/// and `\n`, then its bytes. A randomly initialised model (`init_from_config`) is
/// `random-init\nseed=S\n` followed by its `config.json` the same way.
pub fn reference_identity(dir: &Path, random_init_seed: Option<u64>) -> Result<String, TrainError> {
    let mut h = Sha256::new();
    let mut files = vec![dir.join("config.json")];
    if let Some(seed) = random_init_seed {
        h.update(format!("random-init\nseed={seed}\n").as_bytes());
    } else {
        let mut weights: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io("list", dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        weights.sort();
        files.extend(weights);
    }
    for file in files {
        let mut reader = std::fs::File::open(&file).map_err(io("open", &file))?;
        let len = reader.metadata().map_err(io("read", &file))?.len();
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        h.update(format!("{name}\n{len}\n").as_bytes());
        // Streamed: weight files can be many gigabytes.
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).map_err(io("read", &file))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_devices_kernels_change_the_key_and_not_the_content_key() {
        for gradient_checkpointing in [true, false] {
            let config = TrainConfig {
                model_name_or_path: "model".into(),
                train_file: "pairs.jsonl".into(),
                gradient_checkpointing,
                ..TrainConfig::default()
            };
            let key = |kernels| {
                let computation = Computation {
                    precision: MatmulPrecision::F32,
                    kernels,
                };
                CacheKey::for_run(&config, "rows".into(), computation, "model".into())
            };
            let (flex, blocked) = (key("flex-fused/1"), key("blocked"));
            assert_ne!(flex.key(), blocked.key());
            assert_eq!(flex.content_key(), blocked.content_key());
            let path = flex.parts().find(|(name, _)| *name == "logps_path");
            assert!(
                path.is_some_and(|(_, value)| value.ends_with(";kernels=flex-fused/1")),
                "{path:?}"
            );
        }
    }

    #[test]
    fn the_key_is_the_documented_digest_of_its_parts() {
        let values: [String; 9] = std::array::from_fn(|i| format!("v{i}"));
        let key = CacheKey {
            values: values.clone(),
        };
        // The definition written out by hand, as docs/reference-cache.md gives it.
        let mut text = String::from("sdpo-ref-logps/2 key\n");
        for (name, value) in KEY_PART_NAMES.iter().zip(&values) {
            text.push_str(&format!("{name}={value}\n"));
        }
        assert_eq!(key.key(), hex(&Sha256::digest(text.as_bytes())));
        let mut content = String::from("sdpo-ref-logps/2 content\n");
        for (name, value) in KEY_PART_NAMES.iter().zip(&values).take(5) {
            content.push_str(&format!("{name}={value}\n"));
        }
        assert_eq!(key.content_key(), hex(&Sha256::digest(content.as_bytes())));
        // SHA-256 of the empty string, the digest's own test vector.
        assert_eq!(
            hex(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut other = key.clone();
        other.values[8] = "bfloat16".into();
        assert_ne!(other.key(), key.key());
        assert_eq!(other.content_key(), key.content_key());
        let metadata: HashMap<String, String> = key
            .parts()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(CacheKey::from_metadata(&metadata).unwrap(), key);
        let mut missing = metadata.clone();
        missing.remove("reference");
        assert!(
            CacheKey::from_metadata(&missing)
                .unwrap_err()
                .contains("`reference`")
        );
    }
}
