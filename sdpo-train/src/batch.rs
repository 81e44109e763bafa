//! A collated preference batch on the device, and the per-token log-probs of a model on it.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use sdpo_core::{
    completion_log_sum_sq_probs, completion_logps, completion_token_stats, logits_mean_from_sums,
    masked_logit_sums, masked_mean,
};
use sdpo_data::PreferenceBatch;
use sdpo_models::CausalLm;

use crate::error::TrainError;

/// A [`PreferenceBatch`] as tensors: `2B` rows, chosen first, then rejected, each right
/// padded (real tokens, then padding; completion tokens only on real tokens).
#[derive(Debug, Clone)]
pub struct DeviceBatch {
    /// Pairs in the batch (`B`).
    pub batch_size: usize,
    /// Padded length (`T`).
    pub seq_len: usize,
    /// `[2B, T]` token ids.
    pub input_ids: Tensor<2, Int>,
    /// `[2B, T]` 1 on real tokens.
    pub attention_mask: Tensor<2, Int>,
    /// `[2B, T]` 1 on completion tokens.
    pub completion_mask: Tensor<2, Int>,
    /// The same batch on the host when it was uploaded from one ([`DeviceBatch::new`]): the
    /// row layouts of [`crate::layout`] read it instead of reading the tensors back from the
    /// device. `None` for a batch built from tensors.
    pub host: Option<std::sync::Arc<PreferenceBatch>>,
}

impl DeviceBatch {
    /// Uploads a collated batch.
    pub fn new(batch: &PreferenceBatch, device: &Device) -> Self {
        let shape = [2 * batch.batch_size, batch.seq_len];
        let upload = |values: &[i64]| -> Tensor<2, Int> {
            Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
        };
        Self {
            batch_size: batch.batch_size,
            seq_len: batch.seq_len,
            input_ids: upload(&batch.input_ids),
            attention_mask: upload(&batch.attention_mask),
            completion_mask: upload(&batch.completion_mask),
            host: Some(std::sync::Arc::new(batch.clone())),
        }
    }

    /// Number of real (non-padding) tokens, for tokens/s.
    pub fn num_tokens(batch: &PreferenceBatch) -> usize {
        batch.attention_mask.iter().filter(|&&m| m != 0).count()
    }
}

/// Per-token completion log-probs of one model on a batch, split into chosen and rejected.
#[derive(Debug, Clone)]
pub struct SidedLogps {
    /// `[B, T-1]` log-probs of the chosen completion tokens (0 elsewhere).
    pub chosen: Tensor<2>,
    /// `[B, T-1]` log-probs of the rejected completion tokens (0 elsewhere).
    pub rejected: Tensor<2>,
    /// `[B, T-1]` chosen loss mask.
    pub chosen_mask: Tensor<2, Bool>,
    /// `[B, T-1]` rejected loss mask.
    pub rejected_mask: Tensor<2, Bool>,
    /// Mean chosen logit over completion positions (`logits/chosen`), `[1]`.
    pub chosen_logits_mean: Tensor<1>,
    /// Mean rejected logit over completion positions (`logits/rejected`), `[1]`.
    pub rejected_logits_mean: Tensor<1>,
    /// Mean entropy of the next-token distribution over the completion positions of both
    /// sides (TRL's `entropy`), `[1]`, no gradient.
    pub entropy: Tensor<1>,
    /// Fraction of the chosen completion's tokens that are the most likely next token (TRL's
    /// `mean_token_accuracy`), `[1]`, no gradient.
    pub mean_token_accuracy: Tensor<1>,
    /// WPO's `log(sum_v p_v^2)` at the chosen completion positions, `[B, T-1]`, detached
    /// (only when asked for, see [`model_logps_chunked`]).
    pub chosen_log_sum_sq_probs: Option<Tensor<2>>,
    /// The same for the rejected completion.
    pub rejected_log_sum_sq_probs: Option<Tensor<2>>,
}

/// The most logits one forward pass materialises (32 Mi floats, 128 MiB in f32). A batch whose
/// `[2B, T, vocab]` logits would be larger runs in row chunks: a GPU buffer of a large-vocabulary
/// model's logits otherwise exceeds what wgpu can allocate (lavapipe refused 226 MB).
pub const MAX_LOGITS_PER_PASS: usize = 1 << 25;

/// Runs `model` on chosen and rejected in one forward pass of `2B` rows (TRL's concatenated
/// forward; in row chunks when the logits would exceed [`MAX_LOGITS_PER_PASS`]) and returns
/// their per-token completion log-probs.
pub fn model_logps(model: &CausalLm, batch: &DeviceBatch) -> Result<SidedLogps, TrainError> {
    model_logps_chunked(model, batch, MAX_LOGITS_PER_PASS, false)
}

/// [`model_logps`] with an explicit limit on the logits of one forward pass; with
/// `log_sum_sq_probs`, also WPO's `log(sum_v p_v^2)` per completion position (`use_weighting`),
/// computed from the same logits in the same pass.
pub fn model_logps_chunked(
    model: &CausalLm,
    batch: &DeviceBatch,
    max_logits: usize,
    log_sum_sq_probs: bool,
) -> Result<SidedLogps, TrainError> {
    let (b, t) = (batch.batch_size, batch.seq_len);
    let rows = 2 * b;
    let per_row = (t * model.config().vocab_size).max(1);
    let chunk = (max_logits / per_row).clamp(1, rows.max(1));
    let mut logps_parts = Vec::new();
    let mut mask_parts = Vec::new();
    let mut logit_sum_parts = Vec::new();
    let mut sum_sq_parts = Vec::new();
    let mut entropy_parts = Vec::new();
    let mut top1_parts = Vec::new();
    let mut vocab = 1;
    for start in (0..rows).step_by(chunk) {
        let end = (start + chunk).min(rows);
        let ids = batch.input_ids.clone().slice([start..end, 0..t]);
        let logits = model.forward(
            ids.clone(),
            batch.attention_mask.clone().slice([start..end, 0..t]),
        );
        vocab = logits.dims()[2];
        let (logps, mask) = completion_logps(
            logits.clone(),
            ids.clone(),
            batch.completion_mask.clone().slice([start..end, 0..t]),
        )
        .map_err(TrainError::Compute)?;
        let (entropy, top1) = completion_token_stats(logits.clone(), ids, mask.clone())
            .map_err(TrainError::Compute)?;
        entropy_parts.push(entropy);
        top1_parts.push(top1);
        if log_sum_sq_probs {
            sum_sq_parts.push(
                completion_log_sum_sq_probs(logits.clone(), mask.clone())
                    .map_err(TrainError::Compute)?,
            );
        }
        // Per-row sums of the logits over completion positions, for logits/chosen|rejected.
        logit_sum_parts.push(masked_logit_sums(
            logits.slice([0..end - start, 0..t - 1, 0..vocab]),
            mask.clone(),
        ));
        logps_parts.push(logps);
        mask_parts.push(mask);
    }
    let logps = Tensor::cat(logps_parts, 0);
    let mask = Tensor::cat(mask_parts, 0);
    let logit_sums = Tensor::cat(logit_sum_parts, 0);
    let logits_mean = |range: std::ops::Range<usize>| {
        logits_mean_from_sums(
            logit_sums.clone().slice([range.clone()]),
            mask.clone().slice([range, 0..t - 1]),
            vocab,
        )
    };
    let sum_sq = (!sum_sq_parts.is_empty()).then(|| Tensor::cat(sum_sq_parts, 0));
    let top1 = Tensor::cat(top1_parts, 0);
    Ok(SidedLogps {
        entropy: masked_mean(Tensor::cat(entropy_parts, 0), mask.clone()),
        mean_token_accuracy: masked_mean(
            top1.slice([0..b, 0..t - 1]),
            mask.clone().slice([0..b, 0..t - 1]),
        ),
        chosen_log_sum_sq_probs: sum_sq.clone().map(|x| x.slice([0..b, 0..t - 1])),
        rejected_log_sum_sq_probs: sum_sq.map(|x| x.slice([b..rows, 0..t - 1])),
        chosen: logps.clone().slice([0..b, 0..t - 1]),
        rejected: logps.slice([b..rows, 0..t - 1]),
        chosen_mask: mask.clone().slice([0..b, 0..t - 1]),
        rejected_mask: mask.clone().slice([b..rows, 0..t - 1]),
        chosen_logits_mean: logits_mean(0..b),
        rejected_logits_mean: logits_mean(b..rows),
    })
}
