//! A collated preference batch on the device, and the per-token log-probs of a model on it.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use sdpo_data::PreferenceBatch;

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
    /// row layouts of [`crate::logps::RowLayout`] read it instead of reading the tensors back from the
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
    /// (only when asked for, see [`crate::logps::model_logps_chunked`]).
    pub chosen_log_sum_sq_probs: Option<Tensor<2>>,
    /// The same for the rejected completion.
    pub rejected_log_sum_sq_probs: Option<Tensor<2>>,
}
