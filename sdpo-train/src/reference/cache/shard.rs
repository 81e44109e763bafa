//! Shards: a deterministic part of a split's pairs computed by one process
//! (`sdpo precompute-ref --shard K/N`), and the checks a set of shards passes before training
//! reads it as one cache.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::file::{CacheHeader, read_header};
use super::key::CacheKey;
use crate::error::{TrainError, io};

/// Shard `index` of `count` (`0 <= index < count`); `0/1` is a whole split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// Which shard, from 0.
    pub index: usize,
    /// How many shards the split is cut into.
    pub count: usize,
}

impl Shard {
    /// The whole split as one shard.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The pairs of this shard among `pairs_total`: the split is cut into batches of
    /// `batch_size` pairs (the batches of a one-process run) and each shard takes a contiguous
    /// run of whole batches, so every batch, and every log-prob, is the one-process run's.
    pub fn pair_range(&self, pairs_total: usize, batch_size: usize) -> Range<usize> {
        let batch_size = batch_size.max(1);
        let batches = pairs_total.div_ceil(batch_size);
        let first = self.index * batches / self.count;
        let end = (self.index + 1) * batches / self.count;
        (first * batch_size).min(pairs_total)..(end * batch_size).min(pairs_total)
    }

    /// The file name of this shard of `split`'s cache with `key`.
    pub fn file_name(&self, split: &str, key: &CacheKey) -> String {
        if *self == Self::WHOLE {
            format!("{split}-{}.safetensors", key.short())
        } else {
            format!(
                "{split}-{}-shard-{}-of-{}.safetensors",
                key.short(),
                self.index,
                self.count
            )
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `K/N` with `0 <= K < N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = s
            .split_once('/')
            .and_then(|(k, n)| Some((k.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if index < count => Ok(Self { index, count }),
            _ => Err(format!(
                "`{s}` is not a shard: expected K/N with 0 <= K < N (for example 0/4)"
            )),
        }
    }
}

/// The files of a split's cache with a given key, as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundCache {
    /// One file for the whole split.
    Whole(PathBuf),
    /// A complete set of shards, in order, with their headers.
    Shards(Vec<(PathBuf, CacheHeader)>),
    /// One file for the whole split written by another program
    /// (`{split}-content-{short content key}.safetensors`): it must match the content key only.
    External(PathBuf),
}

/// The name of the file another program writes for `split`'s cache with `key`'s content parts.
pub fn external_file_name(split: &str, key: &CacheKey) -> String {
    format!("{split}-content-{}.safetensors", &key.content_key()[..16])
}

/// Looks in `dir` for the cache of `split` with `key` over `pairs_total` pairs: the whole file,
/// else its shards (`{split}-{short key}-shard-K-of-N.safetensors`), else a file of the same
/// content written by another program ([`external_file_name`]). A set of shards must be
/// complete, each shard once, each of this key and split, and together cover the split in
/// order; otherwise the error names the missing, duplicated or foreign shard.
pub fn find(
    dir: &Path,
    split: &str,
    key: &CacheKey,
    pairs_total: usize,
) -> Result<Option<FoundCache>, TrainError> {
    let whole = dir.join(Shard::WHOLE.file_name(split, key));
    if whole.is_file() {
        return Ok(Some(FoundCache::Whole(whole)));
    }
    if !dir.is_dir() {
        return Ok(None);
    }
    let prefix = format!("{split}-{}-shard-", key.short());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io("list", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".safetensors"))
        })
        .collect();
    if files.is_empty() {
        let external = dir.join(external_file_name(split, key));
        return Ok(external.is_file().then_some(FoundCache::External(external)));
    }
    files.sort();
    check_set(dir, split, key, pairs_total, files).map(|set| Some(FoundCache::Shards(set)))
}

fn check_set(
    dir: &Path,
    split: &str,
    key: &CacheKey,
    pairs_total: usize,
    files: Vec<PathBuf>,
) -> Result<Vec<(PathBuf, CacheHeader)>, TrainError> {
    let refuse = |path: &Path, reason: String| TrainError::Cache {
        path: path.to_path_buf(),
        reason,
    };
    let mut slots: Vec<Option<(PathBuf, CacheHeader)>> = Vec::new();
    let mut count = None;
    for path in files {
        let header = read_header(&path)?;
        let foreign = |what: String| {
            refuse(
                &path,
                format!(
                    "a foreign shard in the set of {split} shards of key {}: {what}",
                    key.short()
                ),
            )
        };
        if header.key != *key {
            let part = key
                .parts()
                .find(|(name, value)| header.key.part(name) != Some(value))
                .map_or("key", |(name, _)| name);
            return Err(foreign(format!("its key differs in `{part}`")));
        }
        if header.split != split || header.pairs_total != pairs_total {
            return Err(foreign(format!(
                "it is of split `{}` with {} pairs, not `{split}` with {pairs_total}",
                header.split, header.pairs_total
            )));
        }
        let n = *count.get_or_insert(header.shard.count);
        if header.shard.count != n {
            return Err(foreign(format!(
                "the set mixes shards of {n} and of {} (one count per set)",
                header.shard.count
            )));
        }
        slots.resize_with(n, || None);
        let slot = &mut slots[header.shard.index];
        if let Some((other, _)) = slot {
            return Err(refuse(
                &path,
                format!(
                    "shard {} duplicated: also `{}`",
                    header.shard,
                    other.display()
                ),
            ));
        }
        *slot = Some((path, header));
    }
    for (path, header) in slots.iter().flatten() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name != header.shard.file_name(split, key) {
            return Err(refuse(
                path,
                format!(
                    "a foreign shard in the set of {split} shards of key {}: its header says \
                     shard {} but its name does not",
                    key.short(),
                    header.shard
                ),
            ));
        }
    }
    let n = slots.len();
    let mut set = Vec::with_capacity(n);
    let mut next = 0;
    for (index, slot) in slots.into_iter().enumerate() {
        let Some((path, header)) = slot else {
            return Err(refuse(
                dir,
                format!(
                    "shard {index}/{n} of the {split} cache (key {}) is missing: run `sdpo \
                     precompute-ref --shard {index}/{n}` with this configuration",
                    key.short()
                ),
            ));
        };
        if header.first_pair != next {
            return Err(refuse(
                &path,
                format!(
                    "starts at pair {}, but the shards before it end at pair {next}",
                    header.first_pair
                ),
            ));
        }
        next += header.pair_count;
        set.push((path, header));
    }
    if next != pairs_total {
        return Err(refuse(
            dir,
            format!("the {n} shards of the {split} cache hold {next} of its {pairs_total} pairs"),
        ));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_take_whole_batches_and_cover_the_split_once() {
        for pairs in [0, 1, 5, 7, 64, 101] {
            for batch in [1, 2, 3, 8] {
                for count in 1..6 {
                    let mut next = 0;
                    for index in 0..count {
                        let r = Shard { index, count }.pair_range(pairs, batch);
                        assert_eq!(r.start, next, "{pairs} {batch} {index}/{count}");
                        assert!(r.start.is_multiple_of(batch) || r.start == pairs);
                        next = r.end;
                    }
                    assert_eq!(next, pairs);
                }
            }
        }
    }

    #[test]
    fn a_shard_is_parsed_from_k_slash_n() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1", "a/b", "-1/3", "0/0", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
