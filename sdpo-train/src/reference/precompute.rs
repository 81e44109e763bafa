//! `precompute_ref_log_probs`: the reference's per-token log-probs of every pair computed once
//! into a cache file under `output_dir`, keyed by everything that decides them (the data, the
//! truncation, the path, the precision, the weights), and reused when the key matches.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};

use sdpo_data::{Collator, Fnv1a, TokenizedDataset};
use sdpo_models::{CausalLm, MatmulPrecision};

use super::cache::RefLogpsCache;
use super::scored_positions;
use crate::config::TrainConfig;
use crate::error::{TrainError, io};
use crate::logps::{DeviceBatch, LogpsPath};
use crate::observer::TrainObserver;
use crate::startup::RunData;

#[allow(clippy::too_many_arguments)]
pub(crate) fn cached_or_computed(
    config: &TrainConfig,
    split: &str,
    dataset: &TokenizedDataset,
    fingerprint: u64,
    model: &CausalLm,
    data: &RunData,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<RefLogpsCache, TrainError> {
    let precision = model.config().matmul_precision;
    let key = reference_cache_key(config, dataset.content_hash(), precision, fingerprint);
    let path = RefLogpsCache::path(&config.output_dir, split, key);
    if path.is_file() {
        match RefLogpsCache::load(&path, key) {
            Ok(cache) if cache.pairs.len() == dataset.len() => {
                observer.on_message(&format!(
                    "{split}: reusing precomputed reference log-probs `{}`",
                    path.display()
                ));
                return Ok(cache);
            }
            Ok(cache) => observer.on_message(&format!(
                "warning: `{}` holds {} pairs, the data {}: recomputing it",
                path.display(),
                cache.pairs.len(),
                dataset.len()
            )),
            Err(err) => observer.on_message(&format!("warning: {err}: recomputing it")),
        }
    }
    observer.on_message(&format!(
        "{split}: precomputing reference log-probs for {} pairs",
        dataset.len()
    ));
    let batch_size = config
        .precompute_ref_batch_size
        .unwrap_or(if split == "train" {
            config.per_device_train_batch_size
        } else {
            config.per_device_eval_batch_size
        });
    let cache = precompute(
        model,
        dataset,
        &data.collator,
        batch_size,
        &LogpsPath::for_config(config),
        key,
        path.clone(),
        device,
    )?;
    cache.save(&path)?;
    Ok(cache)
}

/// The key of a precomputed reference cache: the tokenized pairs' content hash, then the
/// settings of [`crate::config::ReferenceEffect::Setting`] keys (truncation; the engine's path and budget with
/// `gradient_checkpointing`; the shared-prompt rows; the precision the reference's products run
/// in, `precision`; `ref_dtype`), then the reference weights' fingerprint. A key whose
/// [`crate::config::ReferenceEffect`] is `Data` or `Weights` reaches it through the content hash or the
/// fingerprint; an `Unaffected` key never does.
pub fn reference_cache_key(
    config: &TrainConfig,
    pairs_hash: u64,
    precision: MatmulPrecision,
    weights_fingerprint: u64,
) -> u64 {
    let mut h = Fnv1a::new();
    h.write_u64(pairs_hash);
    h.write_str(&format!(
        "max_length={:?};max_prompt_length={:?};truncation_mode={}",
        config.data.max_length,
        config.data.max_prompt_length(),
        config.data.truncation_mode().as_str()
    ));
    if config.gradient_checkpointing {
        // The engine's chunked forward and the whole-batch forward agree to rounding only (and
        // the engine's blocks and chunks follow the budget): a cache from the run's own path
        // keeps SDPO's first scores exactly 0 with the initial policy as reference.
        h.write_str(&format!(
            "logps_path=bounded;memory_budget_mib={};max_buffer_mib={}",
            config.memory_budget_mib, config.max_buffer_mib
        ));
    }
    if config.uses_shared_prompt() {
        // The shared-prompt rows agree with two rows per pair to rounding only.
        h.write_str("layout=shared_prompt");
    }
    if precision != MatmulPrecision::F32 {
        h.write_str(&format!("matmul_precision={}", precision.name()));
    }
    if let Some(dtype) = config.ref_dtype {
        h.write_str(&format!("ref_dtype={}", dtype.as_str()));
    }
    h.write_u64(weights_fingerprint);
    h.finish()
}

/// One pass of `model` over `dataset` in order, keeping each pair's completion log-probs; the
/// cache will live at `path`. `batch_size` pairs per forward pass on `logps_path`.
#[allow(clippy::too_many_arguments)]
pub fn precompute(
    model: &CausalLm,
    dataset: &TokenizedDataset,
    collator: &Collator,
    batch_size: usize,
    logps_path: &LogpsPath,
    key: u64,
    path: PathBuf,
    device: &Device,
) -> Result<RefLogpsCache, TrainError> {
    let mut pairs = Vec::with_capacity(dataset.len());
    let indices: Vec<usize> = (0..dataset.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let host = collator.collate_indices(dataset, chunk)?;
        let batch = DeviceBatch::new(&host, device);
        let out = logps_path.logps(model, &batch, false)?;
        let (b, t) = (host.batch_size, host.seq_len);
        let read = |x: Tensor<2>| {
            x.try_into_vec_as::<f32>()
                .map_err(|e| TrainError::DeviceRead {
                    tensor: "reference log-probs",
                    reason: format!("{e:?}"),
                })
        };
        let sides = [read(out.chosen)?, read(out.rejected)?];
        for row in 0..b {
            let mut kept = [Vec::new(), Vec::new()];
            for (side, values) in sides.iter().enumerate() {
                for pos in scored_positions(host.completion_mask_row(side * b + row)) {
                    kept[side].push(values[row * (t - 1) + pos]);
                }
            }
            let [c, r] = kept;
            pairs.push((c, r));
        }
    }
    Ok(RefLogpsCache { key, path, pairs })
}

/// Hashes the files that define a model's weights (`config.json` and the safetensors files),
/// or, for a randomly initialised model, its config and seed.
pub fn weights_fingerprint(dir: &Path, random_init_seed: Option<u64>) -> Result<u64, TrainError> {
    let mut h = Fnv1a::new();
    let config = dir.join("config.json");
    h.write(&std::fs::read(&config).map_err(io("read", &config))?);
    if let Some(seed) = random_init_seed {
        h.write_str("random-init");
        h.write(&seed.to_le_bytes());
        return Ok(h.finish());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io("list", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    for file in files {
        h.write_str(&file.file_name().unwrap_or_default().to_string_lossy());
        // Streamed: weight files can be many gigabytes.
        let mut reader = std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(&file).map_err(io("open", &file))?,
        );
        loop {
            let chunk = std::io::BufRead::fill_buf(&mut reader).map_err(io("read", &file))?;
            if chunk.is_empty() {
                break;
            }
            h.write(chunk);
            let n = chunk.len();
            std::io::BufRead::consume(&mut reader, n);
        }
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::config::{KEY_EFFECTS, ReferenceEffect};

    /// Valid configurations with the memory-bounded engine on, so that every setting of the
    /// cache key is in play: with TRL 1.x's data pipeline and with 0.28's (which alone has
    /// `max_prompt_length`).
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
        vec![base, v028]
    }

    /// The precision a backend that holds every dtype runs `config` in.
    fn precision(config: &TrainConfig) -> MatmulPrecision {
        if config.bf16 {
            MatmulPrecision::Bf16
        } else if config.fp16 {
            MatmulPrecision::F16
        } else {
            MatmulPrecision::F32
        }
    }

    fn cache_key(config: &TrainConfig) -> u64 {
        reference_cache_key(config, 7, precision(config), 11)
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
