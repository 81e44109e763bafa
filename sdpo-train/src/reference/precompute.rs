//! `precompute_ref_log_probs`: the reference's per-token log-probs of every pair computed once
//! into a cache under `output_dir/ref_logps_cache/`, keyed by everything that decides them (the
//! rows, the truncation, the path, the precision, the weights), and reused when the key matches.
//! A split is computed as one shard or as several ([`Shard`]), each resumable after a kill.

use burn::tensor::Device;

use sdpo_data::{Collator, TokenizedDataset};

use super::build::reference_identity_of;
use super::cache::{
    CacheHeader, CacheKey, Computation, FoundCache, Journal, PairLogps, RefLogpsCache, Shard,
    cache_dir, find, rows_sha256, write,
};
use super::compute::{Batches, ComputingReference, LazyReference};
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::logps::LogpsPath;
use crate::observer::TrainObserver;
use crate::reference::Split;
use crate::startup::RunData;

/// The program named in the `producer` field of the files sdpo-rs writes.
pub(crate) fn producer() -> String {
    format!("sdpo-rs {}", env!("CARGO_PKG_VERSION"))
}

/// A split to precompute: its name, its pairs and how they are batched.
pub(crate) struct SplitJob<'a> {
    /// Which split.
    pub split: Split,
    /// Its pairs.
    pub dataset: &'a TokenizedDataset,
    /// Pads and truncates them.
    pub collator: &'a Collator,
    /// The key of its cache.
    pub key: CacheKey,
    /// Pairs per forward pass.
    pub batch_size: usize,
}

impl<'a> SplitJob<'a> {
    /// The job of `split` for `config`; `reference` is [`super::cache::reference_identity`].
    pub fn new(
        config: &TrainConfig,
        split: Split,
        dataset: &'a TokenizedDataset,
        collator: &'a Collator,
        computation: Computation,
        reference: String,
    ) -> Result<Self, TrainError> {
        let rows = rows_sha256(dataset, collator)?;
        let key = CacheKey::for_run(config, rows, computation, reference);
        let batch_size = config
            .precompute_ref_batch_size
            .unwrap_or(match split {
                Split::Train => config.per_device_train_batch_size,
                Split::Eval => config.per_device_eval_batch_size,
            })
            .max(1);
        Ok(Self {
            split,
            dataset,
            collator,
            key,
            batch_size,
        })
    }

    /// The jobs of every split of `data` (train, then eval), keyed for `config`'s reference.
    pub fn of_run(
        config: &TrainConfig,
        data: &'a RunData,
        computation: Computation,
    ) -> Result<Vec<Self>, TrainError> {
        Self::of_run_with(config, data, computation, reference_identity_of(config)?)
    }

    /// The jobs of every split of `data`, keyed for the model identified by `reference`
    /// ([`super::cache::reference_identity`], or a combination of them).
    pub fn of_run_with(
        config: &TrainConfig,
        data: &'a RunData,
        computation: Computation,
        reference: String,
    ) -> Result<Vec<Self>, TrainError> {
        data.splits()
            .map(|(split, dataset)| {
                Self::new(
                    config,
                    split,
                    dataset,
                    &data.collator,
                    computation,
                    reference.clone(),
                )
            })
            .collect()
    }

    /// `train` or `eval`.
    pub fn name(&self) -> &'static str {
        match self.split {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

/// The split's cache: read when its file or a complete set of shards is under `output_dir`,
/// else computed as one shard (resuming a killed computation) and written. A damaged whole
/// file is reported and recomputed; a broken set of shards is an error naming the shard.
pub(crate) fn cached_or_computed(
    config: &TrainConfig,
    job: &SplitJob<'_>,
    reference: &mut LazyReference<'_>,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<RefLogpsCache, TrainError> {
    let dir = cache_dir(&config.output_dir);
    let split = job.name();
    warn_about_old_caches(&dir, split, observer);
    let pairs_total = job.dataset.len();
    match find(&dir, split, &job.key, pairs_total)? {
        Some(found @ FoundCache::Shards(_)) => {
            let cache = RefLogpsCache::load(&found, &job.key, pairs_total)?;
            observer.on_message(&format!(
                "{split}: reading precomputed reference log-probs from shards `{}`...",
                cache.path.display()
            ));
            return Ok(cache);
        }
        Some(found @ FoundCache::External(_)) => {
            let cache = RefLogpsCache::load(&found, &job.key, pairs_total)?;
            let header = super::cache::read_header(&cache.path)?;
            let differs: Vec<String> = job
                .key
                .parts()
                .skip(CacheKey::CONTENT_PARTS)
                .filter(|(name, value)| header.key.part(name) != Some(value))
                .map(|(name, _)| format!("{name} = {}", header.key.part(name).unwrap_or_default()))
                .collect();
            observer.on_message(&format!(
                "{split}: reading reference log-probs written by `{}` (`{}`){}",
                header.producer,
                cache.path.display(),
                if differs.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; computed with {} (this run's own path would differ in rounding)",
                        differs.join(", ")
                    )
                }
            ));
            return Ok(cache);
        }
        Some(found @ FoundCache::Whole(_)) => {
            match RefLogpsCache::load(&found, &job.key, pairs_total) {
                Ok(cache) => {
                    observer.on_message(&format!(
                        "{split}: reusing precomputed reference log-probs `{}`",
                        cache.path.display()
                    ));
                    return Ok(cache);
                }
                Err(err) => observer.on_message(&format!("warning: {err}: recomputing it")),
            }
        }
        None => {}
    }
    let path = dir.join(Shard::WHOLE.file_name(split, &job.key));
    let model = reference.get(observer)?;
    let pairs = compute_shard(
        model,
        job,
        Shard::WHOLE,
        &LogpsPath::for_reference_cache(config),
        &path,
        device,
        observer,
    )?;
    Ok(RefLogpsCache {
        key: job.key.clone(),
        path,
        pairs,
    })
}

/// Mentions the files of the format before version 2 under `dir` (they are no longer read).
fn warn_about_old_caches(dir: &std::path::Path, split: &str, observer: &mut dyn TrainObserver) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&format!("{split}-")) && name.ends_with(".bin") {
            observer.on_message(&format!(
                "warning: `{}` is an SDPOREF1 reference cache of an older sdpo-rs, no longer \
                 read (recomputing in the open format); delete it",
                path.display()
            ));
        }
    }
}

/// Computes `shard` of the job's split with `model` into the file `path`, in batches of the
/// job's batch size; each finished batch is kept in a progress file, so that a killed
/// computation restarts after its last whole batch. Returns the shard's pairs.
pub(crate) fn compute_shard(
    model: &mut ComputingReference,
    job: &SplitJob<'_>,
    shard: Shard,
    logps_path: &LogpsPath,
    path: &std::path::Path,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<Vec<PairLogps>, TrainError> {
    let split = job.name();
    let pairs_total = job.dataset.len();
    let range = shard.pair_range(pairs_total, job.batch_size);
    let tag = format!(
        "sdpo-ref-logps progress; key={}; split={split}; shard={shard}; pairs={}..{}; \
         batch_size={}",
        job.key.key(),
        range.start,
        range.end,
        job.batch_size
    );
    let resumed = Journal::open(path, &tag)?;
    if let Some(dropped) = &resumed.dropped {
        observer.on_message(&format!("warning: {dropped}"));
    }
    let mut journal = resumed.journal;
    let mut pairs = resumed.pairs;
    if pairs.len() > range.len()
        || (pairs.len() % job.batch_size != 0 && pairs.len() != range.len())
    {
        return Err(TrainError::Cache {
            path: Journal::path_of(path),
            reason: format!(
                "holds {} pairs, which are not whole batches of shard {shard}",
                pairs.len()
            ),
        });
    }
    let start = range.start + pairs.len();
    observer.on_message(&format!(
        "{split}: precomputing reference log-probs for pairs {}..{} of {pairs_total}{}",
        range.start,
        range.end,
        if pairs.is_empty() {
            String::new()
        } else {
            format!(" (resuming after pair {start})")
        }
    ));
    let batches = Batches {
        split,
        dataset: job.dataset,
        collator: job.collator,
        batch_size: job.batch_size,
    };
    model.logps(
        &batches,
        start..range.end,
        logps_path,
        device,
        observer,
        &mut |batch| {
            journal.append(&batch)?;
            pairs.extend(batch);
            Ok(())
        },
    )?;
    let header = CacheHeader {
        key: job.key.clone(),
        split: split.to_string(),
        pairs_total,
        first_pair: range.start,
        pair_count: range.len(),
        shard,
        producer: producer(),
    };
    write(path, &header, &pairs)?;
    journal.finish()?;
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::config::{KEY_EFFECTS, ReferenceEffect};

    /// Valid configurations with the memory-bounded engine on, so that every setting of the
    /// cache key is in play: with TRL 1.x's data pipeline and with 0.28's (which alone has
    /// `max_prompt_length`); and one on the whole-graph path with the cache on.
    fn bases() -> Vec<TrainConfig> {
        let base = TrainConfig {
            model_name_or_path: "model".into(),
            train_file: "pairs.jsonl".into(),
            gradient_checkpointing: true,
            ..TrainConfig::default()
        };
        let mut map = base.to_map();
        map.insert("trl_semantics".into(), Value::from("0.28"));
        let v028: TrainConfig = serde_json::from_value(Value::Object(map)).unwrap();
        // The whole-graph path too: there layer streaming (the engine's path) is a setting.
        let whole = TrainConfig {
            gradient_checkpointing: false,
            precompute_ref_log_probs: true,
            ..base.clone()
        };
        vec![base, v028, whole]
    }

    /// The precision a backend that holds every dtype runs `config` in.
    fn precision(config: &TrainConfig) -> sdpo_models::MatmulPrecision {
        if config.bf16 {
            sdpo_models::MatmulPrecision::Bf16
        } else if config.fp16 {
            sdpo_models::MatmulPrecision::F16
        } else {
            sdpo_models::MatmulPrecision::F32
        }
    }

    fn cache_key(config: &TrainConfig) -> String {
        let computation = Computation {
            precision: precision(config),
            kernels: "test",
        };
        CacheKey::for_run(config, "7".into(), computation, "11".into()).key()
    }

    /// `config` with another valid value of `key`: the first candidate that parses and
    /// validates (a flipped flag, a larger number, or one of a few words and values).
    fn changed(config: &TrainConfig, key: &str) -> Option<TrainConfig> {
        let map = config.to_map();
        let current = map.get(key).cloned().unwrap_or(Value::Null);
        let candidates: Vec<Value> = match &current {
            Value::Bool(b) => vec![Value::Bool(!b)],
            Value::Number(n) => match n.as_u64() {
                Some(u) => vec![Value::from(u + 1), Value::from(2 * u + 2)],
                None => vec![Value::from(n.as_f64().unwrap_or(0.0) * 2.0 + 0.5)],
            },
            _ => ["bfloat16", "keep_end", "0.28", "other"]
                .into_iter()
                .map(Value::from)
                .chain([Value::Bool(true), Value::from(64u64)])
                .collect(),
        };
        candidates
            .into_iter()
            .filter(|value| *value != current)
            .find_map(|value| {
                let mut map = map.clone();
                map.insert(key.to_string(), value);
                let other: TrainConfig = serde_json::from_value(Value::Object(map)).ok()?;
                other.validate().ok()?;
                Some(other)
            })
    }

    #[test]
    fn the_reference_cache_key_follows_every_keys_declared_effect() {
        let bases = bases();
        let mut settings_not_changed = Vec::new();
        let mut checked = 0;
        for effects in KEY_EFFECTS {
            let mut changed_key = false;
            let mut mutated = false;
            for base in &bases {
                base.validate().unwrap();
                let Some(other) = changed(base, effects.key) else {
                    continue;
                };
                mutated = true;
                let differs = cache_key(base) != cache_key(&other);
                changed_key |= differs;
                assert!(
                    !(differs && effects.reference == ReferenceEffect::Unaffected),
                    "`{}` is declared not to affect the reference but changes the cache key",
                    effects.key
                );
            }
            checked += usize::from(mutated);
            if effects.reference == ReferenceEffect::Setting && !changed_key {
                settings_not_changed.push(effects.key);
            }
        }
        assert!(
            settings_not_changed.is_empty(),
            "declared settings of the reference cache key that change nothing (or found no other \
             valid value): {settings_not_changed:?}"
        );
        assert!(
            checked > KEY_EFFECTS.len() / 2,
            "only {checked} keys checked"
        );
    }
}
