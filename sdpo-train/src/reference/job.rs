//! `sdpo precompute-ref`: the reference's log-probs of a run's splits, computed whole, as one
//! shard of several, or merged from a complete set of shards; with only the data and the
//! reference in memory (the policy is never loaded when the reference is another model).

use std::path::PathBuf;

use burn::tensor::Device;

use super::build::computing_reference;
use super::cache::{FoundCache, RefLogpsCache, Shard, cache_dir, find, read_header, write};
use super::compute::LazyReference;
use super::precompute::{SplitJob, cached_or_computed, compute_shard, producer};
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::logps::LogpsPath;
use crate::observer::TrainObserver;
use crate::precision::run_computation;
use crate::startup::RunData;

/// What `sdpo precompute-ref` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecomputeJob {
    /// Every split whole, reusing a cache (file or complete set of shards) that is there.
    All,
    /// One shard of every split (`--shard K/N`), resuming a killed computation.
    Shard(Shard),
    /// One file per split from its complete set of shards (`--merge`).
    Merge,
}

/// Runs `job` for `config`'s splits on `device`; returns the cache files written or found.
pub fn precompute_reference(
    config: &TrainConfig,
    device: &Device,
    job: PrecomputeJob,
    observer: &mut dyn TrainObserver,
) -> Result<Vec<PathBuf>, TrainError> {
    if config.loss.reference_free {
        return Err(TrainError::Config {
            key: "reference_free".into(),
            reason: "there is no reference to precompute with reference_free = true".into(),
        });
    }
    let data = RunData::load(config, observer)?;
    let (computation, warning) = run_computation(config, device);
    if let Some(warning) = warning {
        observer.on_message(&warning);
    }
    let dir = cache_dir(&config.output_dir);
    let jobs = SplitJob::of_run(config, &data, computation)?;
    if job == PrecomputeJob::Merge {
        return jobs
            .iter()
            .map(|split| merge(config, split, observer))
            .collect();
    }
    let mut model = LazyReference::new(|observer: &mut dyn TrainObserver| {
        computing_reference(config, None, &data, device, observer)
    });
    let mut written = Vec::new();
    for split in &jobs {
        let path = match job {
            PrecomputeJob::Shard(shard) => {
                let path = dir.join(shard.file_name(split.name(), &split.key));
                if read_header(&path).is_ok_and(|h| h.key == split.key && h.shard == shard) {
                    observer.on_message(&format!(
                        "{}: shard {shard} is already computed: `{}`",
                        split.name(),
                        path.display()
                    ));
                } else {
                    let path_config = LogpsPath::for_reference_cache(config);
                    let model = model.get(observer)?;
                    compute_shard(model, split, shard, &path_config, &path, device, observer)?;
                }
                path
            }
            _ => cached_or_computed(config, split, &mut model, device, observer)?.path,
        };
        written.push(path);
    }
    Ok(written)
}

/// Writes the split's whole cache file from its complete set of shards (kept).
fn merge(
    config: &TrainConfig,
    split: &SplitJob<'_>,
    observer: &mut dyn TrainObserver,
) -> Result<PathBuf, TrainError> {
    let dir = cache_dir(&config.output_dir);
    let pairs_total = split.dataset.len();
    let found = find(&dir, split.name(), &split.key, pairs_total)?;
    let path = dir.join(Shard::WHOLE.file_name(split.name(), &split.key));
    let set = match found {
        Some(FoundCache::Shards(set)) => set,
        Some(FoundCache::Whole(path)) => {
            observer.on_message(&format!(
                "{}: `{}` is the whole cache already",
                split.name(),
                path.display()
            ));
            return Ok(path);
        }
        Some(FoundCache::External(_)) | None => {
            return Err(TrainError::Cache {
                path: dir,
                reason: format!(
                    "no shards of the {} cache with key {} to merge: run `sdpo precompute-ref \
                     --shard K/N` first",
                    split.name(),
                    split.key.short()
                ),
            });
        }
    };
    let cache = RefLogpsCache::load(&FoundCache::Shards(set.clone()), &split.key, pairs_total)?;
    let producers: Vec<&str> = set.iter().map(|(_, h)| h.producer.as_str()).collect();
    let mut header = set[0].1.clone();
    header.first_pair = 0;
    header.pair_count = pairs_total;
    header.shard = Shard::WHOLE;
    header.producer = if producers.iter().all(|p| *p == producers[0]) {
        producers[0].to_string()
    } else {
        producer()
    };
    write(&path, &header, &cache.pairs)?;
    observer.on_message(&format!(
        "{}: merged {} shards into `{}` (the shards are kept; delete them when you like)",
        split.name(),
        set.len(),
        path.display()
    ));
    Ok(path)
}
