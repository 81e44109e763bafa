//! The whole-graph path over two rows per pair: TRL's concatenated forward through
//! [`CausalLm::forward`], in row chunks when the logits would be too large.

use burn::tensor::Tensor;

use sdpo_core::{
    completion_log_sum_sq_probs, completion_logps, completion_token_stats, logits_mean_from_sums,
    masked_logit_sums, masked_mean,
};
use sdpo_models::CausalLm;

use crate::error::TrainError;
use crate::logps::batch::{DeviceBatch, SidedLogps};

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
