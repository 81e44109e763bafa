//! Selective DPO (SDPO) and the DPO loss family as pure tensor math on burn 0.22.
//!
//! Everything here takes `burn::tensor::Tensor`s and runs on whatever device they live on
//! (flex, wgpu, LibTorch, ...); nothing reads files or prints. The pieces, in the order a
//! trainer uses them:
//!
//! 1. [`completion_logps`]: model logits to per-token log-probs of the completion tokens
//!    (logits at `t` predict token `t + 1`), with the loss mask; with WPO (`use_weighting`)
//!    also [`completion_log_sum_sq_probs`] from the same logits chunk.
//! 2. [`mask_unimportant_tokens`]: SDPO token selection (scores, per-sequence
//!    [`masked_quantile`] thresholds, kept masks, the four masked sums).
//! 3. [`PreferenceLoss`]: the configured loss type(s) from [`LossConfig`] (TRL's names, and the
//!    semantics of TRL 1.x, [`trl1_loss`], or TRL 0.28, [`dpo_loss`], per
//!    [`TrlSemantics`]), with LD-DPO and WPO, weighted into one scalar.
//! 4. [`preference_metrics`] / [`read_metrics`]: TRL's metric names plus the SDPO kept
//!    fractions and thresholds; [`token_entropy`] and [`label_is_top1`] give TRL 1.x's
//!    `entropy` and `mean_token_accuracy` from a chunk of logits.
//!
//! ```no_run
//! use sdpo_core::{LossConfig, PreferenceLoss, TokenLogps, read_metrics, preference_metrics};
//! # fn step(inputs: TokenLogps) -> Result<(), sdpo_core::CoreError> {
//! let mut objective = PreferenceLoss::new(LossConfig::default())?; // sdpo, beta 0.1, q 0.6
//! let out = objective.forward(&inputs, None)?;
//! let metrics = read_metrics(preference_metrics(&out))?;
//! // out.loss.backward() on an autodiff device
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod error;
pub mod log_sum_sq_probs;
pub mod logps;
pub mod loss;
pub mod metrics;
pub mod numerics;
pub mod quantile;
pub mod selection;
pub mod token_methods;
pub mod token_stats;

pub use error::CoreError;
pub use log_sum_sq_probs::{completion_log_sum_sq_probs, log_sum_sq_probs};
pub use logps::{NextTokenTargets, completion_logps, masked_sum, next_token_targets, token_logps};
pub use loss::bco::RunningMoments;
pub use loss::config::{
    CtReductionName, FDivergenceType, LossConfig, LossType, LossTypes, TisdpoTransformName,
    TrlSemantics,
};
pub use loss::family::{DpoLossOutput, dpo_loss};
pub use loss::objective::{LossOutput, PreferenceLoss, chosen_nll_loss};
pub use loss::trl1::{Trl1Inputs, f_divergence_scores, trl1_loss};
pub use loss::weighting::{LdSplit, sequence_sums, token_counts, wpo_pair_weights};
pub use metrics::{
    Metric, logits_mean_from_sums, masked_logit_sums, masked_logits_mean, preference_metrics,
    read_metrics,
};
pub use quantile::masked_quantile;
pub use selection::{SequenceLogps, TokenLogps, TokenSelection, mask_unimportant_tokens};
pub use token_methods::{
    SidePair, TokenColumns, TokenMethod, TokenMethodOutput, TokenScorer, TokenWeights, WeightKind,
};
pub use token_stats::{completion_token_stats, label_is_top1, masked_mean, token_entropy};
