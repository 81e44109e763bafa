//! A collated preference batch on the device, and the per-token log-probs of a model on it.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use sdpo_core::{
    LossType, Metric, PreferenceLoss, TokenLogps, chosen_nll_loss, completion_logps,
    masked_logits_mean, preference_metrics,
};
use sdpo_data::PreferenceBatch;
use sdpo_models::CausalLm;

use crate::error::TrainError;
use crate::reference::{Reference, Split, reference_logps};

/// A [`PreferenceBatch`] as tensors: `2B` rows, chosen first, then rejected.
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
}

/// Runs `model` on chosen and rejected in one forward pass of `2B` rows (TRL's concatenated
/// forward) and returns their per-token completion log-probs.
pub fn model_logps(model: &CausalLm, batch: &DeviceBatch) -> Result<SidedLogps, TrainError> {
    let logits = model.forward(batch.input_ids.clone(), batch.attention_mask.clone());
    let (b, t) = (batch.batch_size, batch.seq_len);
    let vocab = logits.dims()[2];
    let (logps, mask) = completion_logps(
        logits.clone(),
        batch.input_ids.clone(),
        batch.completion_mask.clone(),
    )?;
    let chosen_logits_mean = masked_logits_mean(
        logits.clone().slice([0..b, 0..t - 1, 0..vocab]),
        mask.clone().slice([0..b, 0..t - 1]),
    );
    let rejected_logits_mean = masked_logits_mean(
        logits.slice([b..2 * b, 0..t - 1, 0..vocab]),
        mask.clone().slice([b..2 * b, 0..t - 1]),
    );
    Ok(SidedLogps {
        chosen: logps.clone().slice([0..b, 0..t - 1]),
        rejected: logps.slice([b..2 * b, 0..t - 1]),
        chosen_mask: mask.clone().slice([0..b, 0..t - 1]),
        rejected_mask: mask.slice([b..2 * b, 0..t - 1]),
        chosen_logits_mean,
        rejected_logits_mean,
    })
}

/// The loss of one batch and its metrics (device tensors, read nothing back): the policy's
/// per-token log-probs (one forward pass of `2B` rows), the reference's (model or cache), then
/// `objective` (which advances its `bco_pair` state). The loss keeps the policy's graph when
/// `model` is on an autodiff device.
pub fn batch_objective(
    model: &CausalLm,
    reference: &Reference,
    split: Split,
    host: &PreferenceBatch,
    batch: &DeviceBatch,
    objective: &mut PreferenceLoss,
) -> Result<(Tensor<1>, Vec<Metric>), TrainError> {
    let device = batch.input_ids.device();
    let policy = model_logps(model, batch)?;
    let (ref_chosen, ref_rejected) = reference_logps(reference, split, host, batch, &device)?;
    let inputs = TokenLogps {
        policy_chosen_logps: policy.chosen,
        policy_rejected_logps: policy.rejected,
        ref_chosen_logps: ref_chosen,
        ref_rejected_logps: ref_rejected,
        chosen_loss_mask: policy.chosen_mask,
        rejected_loss_mask: policy.rejected_mask,
    };
    let nll = objective
        .config()
        .loss_types()
        .contains(&LossType::Sft)
        .then(|| chosen_nll_loss(&inputs));
    let out = objective.forward(&inputs, nll)?;
    let mut metrics: Vec<Metric> = vec![("loss", out.loss.clone().detach().without_autodiff())];
    metrics.extend(
        preference_metrics(&out)
            .into_iter()
            .map(|(k, v)| (k, v.without_autodiff())),
    );
    metrics.push((
        "logits/chosen",
        policy.chosen_logits_mean.without_autodiff(),
    ));
    metrics.push((
        "logits/rejected",
        policy.rejected_logits_mean.without_autodiff(),
    ));
    Ok((out.loss, metrics))
}
