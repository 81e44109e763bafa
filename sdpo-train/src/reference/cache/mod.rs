//! The precomputed reference cache: per-token reference log-probs of every pair, computed once,
//! so training runs without the reference model in memory.
//!
//! SDPO needs the reference's log-prob of every completion token (the selection scores), not
//! just sequence sums; the SDPO fork stored sums and silently fell back to plain DPO. A cache
//! holds, for every pair in dataset order, the chosen and the rejected completion tokens'
//! log-probs (after truncation), in an open format: safetensors with a header whose key parts are
//! in clear and whose key is a SHA-256 over them (docs/reference-cache.md), so that other
//! programs can write it. A split's cache is one file or a set of shards computed anywhere.
//!
//! - `key`: the key's parts, its digests, the rows and reference identities.
//! - `file`: one file, written atomically and read with every field checked.
//! - `shard`: which pairs a shard holds, and the checks a set of shards passes.
//! - `journal`: the progress of a computation, so a killed one restarts where it stopped.

mod file;
mod journal;
mod key;
mod shard;

use std::path::{Path, PathBuf};

pub use file::{CacheHeader, FORMAT, FORMAT_VERSION, PairLogps, read, read_header, write};
pub use journal::{Journal, Resumed};
pub use key::{CacheKey, Computation, KEY_PART_NAMES, PairRows, reference_identity, rows_sha256};
pub use shard::{FoundCache, Shard, external_file_name, find};

use crate::error::TrainError;

/// The directory of a run's reference caches.
pub fn cache_dir(output_dir: &Path) -> PathBuf {
    output_dir.join("ref_logps_cache")
}

/// Reference log-probs of the completion tokens of every pair of a split, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct RefLogpsCache {
    /// The key's parts.
    pub key: CacheKey,
    /// The file (or, for shards, the first shard) it was read from (named in errors).
    pub path: PathBuf,
    /// `(chosen, rejected)` per pair, in dataset order.
    pub pairs: Vec<PairLogps>,
}

impl RefLogpsCache {
    /// Reads a found cache (the whole file, or every shard in order), checking that it is of
    /// `key` (another program's file: of its content key) and holds `pairs_total` pairs.
    pub fn load(
        found: &FoundCache,
        key: &CacheKey,
        pairs_total: usize,
    ) -> Result<Self, TrainError> {
        let files: Vec<&Path> = match found {
            FoundCache::Whole(path) | FoundCache::External(path) => vec![path],
            FoundCache::Shards(set) => set.iter().map(|(path, _)| path.as_path()).collect(),
        };
        let mut pairs = Vec::with_capacity(pairs_total);
        for path in &files {
            let (header, part) = read(path)?;
            let bad = |reason: String| TrainError::Cache {
                path: path.to_path_buf(),
                reason,
            };
            if let FoundCache::External(_) = found {
                if header.key.content_key() != key.content_key() {
                    let part = key
                        .parts()
                        .take(CacheKey::CONTENT_PARTS)
                        .find(|(name, value)| header.key.part(name) != Some(value))
                        .map_or("content_key", |(name, _)| name);
                    return Err(bad(format!(
                        "written for other pairs or another reference: its `{part}` is not \
                         this run's `{}`",
                        key.part(part).unwrap_or_default()
                    )));
                }
                if header.shard != Shard::WHOLE {
                    return Err(bad(format!(
                        "is shard {}; another program's cache must be one file",
                        header.shard
                    )));
                }
            } else if header.key != *key {
                return Err(bad(format!(
                    "its key {} is not the expected {}",
                    header.key.short(),
                    key.short()
                )));
            }
            if header.pairs_total != pairs_total || header.first_pair != pairs.len() {
                return Err(bad(format!(
                    "holds pairs {}.. of {}, expected pairs {}.. of {pairs_total}",
                    header.first_pair,
                    header.pairs_total,
                    pairs.len()
                )));
            }
            pairs.extend(part);
        }
        if pairs.len() != pairs_total {
            return Err(TrainError::Cache {
                path: files[0].to_path_buf(),
                reason: format!("holds {} pairs; the data has {pairs_total}", pairs.len()),
            });
        }
        Ok(Self {
            key: key.clone(),
            path: files[0].to_path_buf(),
            pairs,
        })
    }
}
