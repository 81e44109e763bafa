//! The reference side of the loss: a frozen model, or log-probs precomputed into a cache.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};

use sdpo_data::{Collator, PreferenceBatch, TokenizedDataset};
use sdpo_models::CausalLm;

use sdpo_data::Fnv1a;

use crate::batch::DeviceBatch;
use crate::cache::RefLogpsCache;
use crate::engine::LogpsPath;
use crate::error::{TrainError, io};

/// Where reference log-probs come from.
#[derive(Debug)]
pub enum Reference {
    /// A frozen model on the plain (non-autodiff) device.
    Model(Box<CausalLm>),
    /// Per-token log-probs computed once (`precompute_ref_log_probs`).
    Precomputed {
        /// The training split.
        train: RefLogpsCache,
        /// The evaluation split.
        eval: Option<RefLogpsCache>,
    },
    /// `reference_free = true`: no reference is loaded or run; the loss ignores it (zeros are
    /// passed).
    None,
}

/// Which data split a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training data.
    Train,
    /// Evaluation data.
    Eval,
}

/// Reference per-token log-probs of a batch: `(chosen, rejected)`, `[B, T-1]` each; a
/// reference model runs on `path`.
pub fn reference_logps(
    reference: &Reference,
    path: &LogpsPath,
    split: Split,
    host: &PreferenceBatch,
    batch: &DeviceBatch,
    device: &Device,
) -> Result<(Tensor<2>, Tensor<2>), TrainError> {
    let (b, t) = (host.batch_size, host.seq_len);
    match reference {
        Reference::Model(model) => {
            let out = path.logps(model, batch, false)?;
            Ok((out.chosen, out.rejected))
        }
        Reference::None => Ok((
            Tensor::zeros([b, t - 1], device),
            Tensor::zeros([b, t - 1], device),
        )),
        Reference::Precomputed { train, eval } => {
            let cache = match split {
                Split::Train => train,
                Split::Eval => eval.as_ref().ok_or_else(|| TrainError::Config {
                    key: "eval_file".into(),
                    reason: "no precomputed reference log-probs for the eval split".into(),
                })?,
            };
            let (chosen, rejected) = scatter_cached(cache, host)?;
            let upload = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [b, t - 1]), device);
            Ok((upload(chosen), upload(rejected)))
        }
    }
}

/// The positions `0..T-1` of a row's per-token log-probs that score a completion token (the
/// token at `pos + 1` is a completion token): the order in which the cache stores them.
fn scored_positions(completion_mask_row: &[i64]) -> impl Iterator<Item = usize> + '_ {
    (0..completion_mask_row.len().saturating_sub(1))
        .filter(|&pos| completion_mask_row[pos + 1] != 0)
}

/// Places each pair's cached completion log-probs at the batch's loss-mask positions.
fn scatter_cached(
    cache: &RefLogpsCache,
    host: &PreferenceBatch,
) -> Result<(Vec<f32>, Vec<f32>), TrainError> {
    let (b, t) = (host.batch_size, host.seq_len);
    let bad = |reason: String| TrainError::Cache {
        path: cache.path.clone(),
        reason,
    };
    let mut sides = [vec![0f32; b * (t - 1)], vec![0f32; b * (t - 1)]];
    for (side, out) in sides.iter_mut().enumerate() {
        for row in 0..b {
            let pair = host.pair_indices[row];
            let cached = cache
                .pairs
                .get(pair)
                .map(|(c, r)| if side == 0 { c } else { r })
                .ok_or_else(|| {
                    bad(format!(
                        "pair {pair} is not in the cache ({} pairs)",
                        cache.pairs.len()
                    ))
                })?;
            let mut values = cached.iter();
            for pos in scored_positions(host.completion_mask_row(side * b + row)) {
                let v = values.next().ok_or_else(|| {
                    bad(format!(
                        "pair {pair} has more completion tokens than cached"
                    ))
                })?;
                out[row * (t - 1) + pos] = *v;
            }
            if values.next().is_some() {
                return Err(bad(format!(
                    "pair {pair} has fewer completion tokens than cached"
                )));
            }
        }
    }
    let [chosen, rejected] = sides;
    Ok((chosen, rejected))
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
