//! Token-level preference methods: one scorer interface, six methods.
//!
//! A [`TokenScorer`] maps a batch's per-token log-probs (policy and reference, as
//! [`TokenLogps`]), any further per-token columns the method reads ([`TokenColumns`]: a third
//! model's log-probs, a precomputed score from the data) and the completion masks to per-token
//! weights ([`TokenWeights`]). The loss then consumes weighted sums
//! `S_s = sum_t w_{s,t} * x_{s,t} / N_s` of the policy and reference log-probs
//! ([`TokenWeights::weighted_sums`]) instead of the plain sums.
//!
//! | method | module | weights | loss on the sums |
//! | --- | --- | --- | --- |
//! | SDPO | [`sdpo`] | {0,1}: per-sequence quantile of `ref - policy` / `policy - ref` | the DPO family ([`PreferenceLoss`](crate::PreferenceLoss)) |
//! | ConfPO | [`confpo`] | {0,1}: policy probability below the sequence's mean | SimPO over the kept tokens, reference-free |
//! | SePO | [`sepo`] | {0,1}: top / bottom `k` of an oracle's `log(pi_oracle / pi_oracle_ref)` | `-logsigmoid(a_c - a_r)`, reference-free |
//! | TIS-DPO | [`tisdpo`] | real: transformed contrastive-model scores, EOS 0 | sigmoid DPO on weighted sums |
//! | critical tokens | [`critical_token`] | (0,1]: `1 - p_CE` on rejected tokens | per aligned position (the code) or on weighted sums (the paper) |
//! | TGDPO | [`tgdpo`] | real: `1 +- alpha * beta * r_hat`, a token reward | sigmoid DPO on weighted sums |
//!
//! Each method follows its authors' released code; the repository, the commit and every place
//! where the paper and the code differ are in `docs/token-methods.md`. Weights are constants
//! for the gradient: it reaches the policy only through the weighted sums.

pub mod confpo;
pub mod critical_token;
pub mod sdpo;
pub mod sepo;
pub mod tgdpo;
pub mod tisdpo;

use std::collections::BTreeMap;

use burn::tensor::{Bool, DType, Tensor, TensorData};

use crate::error::{CoreError, expect_shape};
use crate::selection::{SequenceLogps, TokenLogps};

/// Per-token values of both completions of a batch.
#[derive(Debug, Clone)]
pub struct SidePair {
    /// Values on the chosen completions, `[batch, seq]`.
    pub chosen: Tensor<2>,
    /// Values on the rejected completions, `[batch, seq]`.
    pub rejected: Tensor<2>,
}

/// Per-token columns beyond the policy and reference log-probs, by name (the names are the
/// `*_COLUMN` constants of each method's module). Aligned like [`TokenLogps`]: `[batch, seq]`,
/// values under a false completion mask ignored.
#[derive(Debug, Clone, Default)]
pub struct TokenColumns {
    columns: BTreeMap<&'static str, SidePair>,
}

impl TokenColumns {
    /// No columns.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the column `name`.
    pub fn insert(&mut self, name: &'static str, values: SidePair) {
        self.columns.insert(name, values);
    }

    /// `self` with the column `name` added.
    pub fn with(mut self, name: &'static str, values: SidePair) -> Self {
        self.insert(name, values);
        self
    }

    /// The column `name`, if present.
    pub fn get(&self, name: &str) -> Option<&SidePair> {
        self.columns.get(name)
    }

    /// The names present.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.keys().copied()
    }

    /// The column `name`, which `method` needs, checked against the batch shape.
    pub(crate) fn require(
        &self,
        method: &'static str,
        name: &'static str,
        dims: [usize; 2],
    ) -> Result<&SidePair, CoreError> {
        let column = self.get(name).ok_or(CoreError::MissingInput {
            loss_type: method,
            input: name,
        })?;
        expect_shape(name, &column.chosen.dims(), &dims)?;
        expect_shape(name, &column.rejected.dims(), &dims)?;
        Ok(column)
    }
}

/// What a scorer's weights are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    /// 0 or 1: the token is kept or not (SDPO, ConfPO, SePO).
    Mask,
    /// A real weight on the token's term (TIS-DPO, critical tokens).
    Weight,
    /// A per-token multiple of `beta`, which may be 0 or negative (TGDPO).
    TokenBeta,
}

/// The weights a scorer gives one batch.
#[derive(Debug, Clone)]
pub struct TokenWeights {
    /// What the weights are.
    pub kind: WeightKind,
    /// The method's score of each chosen token (what it ranks or transforms), 0 where not a
    /// completion token, `[batch, seq]`.
    pub chosen_scores: Tensor<2>,
    /// The method's score of each rejected token, `[batch, seq]`.
    pub rejected_scores: Tensor<2>,
    /// The weight of each chosen token, 0 where not a completion token, `[batch, seq]`; a
    /// constant for the gradient.
    pub chosen: Tensor<2>,
    /// The weight of each rejected token, `[batch, seq]`.
    pub rejected: Tensor<2>,
    /// A per-sequence divisor of the chosen sums (ConfPO, SePO: the number of kept tokens),
    /// `[batch]`; `None` divides by 1.
    pub chosen_normaliser: Option<Tensor<1>>,
    /// A per-sequence divisor of the rejected sums, `[batch]`.
    pub rejected_normaliser: Option<Tensor<1>>,
    /// Pairs whose loss counts (ConfPO drops a pair with no kept token on a side, keeping it
    /// in the batch mean); `None`: every pair, `[batch]`.
    pub pair_valid: Option<Tensor<1, Bool>>,
}

impl TokenWeights {
    /// The four weighted sums `sum_t w_t * x_t / N` of the policy and reference log-probs
    /// (values under a false completion mask are ignored, whatever they hold). For a
    /// reference-free method the reference sums are computed from whatever `inputs` holds
    /// there and are not used by its loss.
    pub fn weighted_sums(&self, inputs: &TokenLogps) -> SequenceLogps {
        let side = |values: &Tensor<2>, valid: &Tensor<2, Bool>, weights: &Tensor<2>| {
            weighted_sum(values.clone(), valid.clone(), weights.clone())
        };
        let normalise = divide;
        let chosen_mask = &inputs.chosen_loss_mask;
        let rejected_mask = &inputs.rejected_loss_mask;
        SequenceLogps {
            policy_chosen: normalise(
                side(&inputs.policy_chosen_logps, chosen_mask, &self.chosen),
                &self.chosen_normaliser,
            ),
            policy_rejected: normalise(
                side(&inputs.policy_rejected_logps, rejected_mask, &self.rejected),
                &self.rejected_normaliser,
            ),
            ref_chosen: normalise(
                side(&inputs.ref_chosen_logps, chosen_mask, &self.chosen),
                &self.chosen_normaliser,
            ),
            ref_rejected: normalise(
                side(&inputs.ref_rejected_logps, rejected_mask, &self.rejected),
                &self.rejected_normaliser,
            ),
        }
    }

    /// The weighted sums of the per-token log-ratios `sum_t w_t * (policy_t - ref_t) / N`,
    /// chosen and rejected, `[batch]` each: the form TIS-DPO, the critical-token method and
    /// TGDPO write their losses in.
    pub fn weighted_log_ratios(&self, inputs: &TokenLogps) -> (Tensor<1>, Tensor<1>) {
        let ratios = log_ratios(inputs);
        let sum = |values: Tensor<2>, weights: &Tensor<2>| {
            (values * weights.clone()).sum_dim(1).squeeze_dim(1)
        };
        (
            divide(sum(ratios.chosen, &self.chosen), &self.chosen_normaliser),
            divide(
                sum(ratios.rejected, &self.rejected),
                &self.rejected_normaliser,
            ),
        )
    }
}

/// A token scorer: per-token weights from per-token log-probs and columns.
pub trait TokenScorer {
    /// The method's configuration name (its `loss_type`).
    fn name(&self) -> &'static str;

    /// The per-token columns it reads besides the policy and reference log-probs.
    fn columns(&self) -> Vec<&'static str>;

    /// Whether it (or its loss) reads the reference log-probs; a reference-free method lets a
    /// trainer skip the reference forward.
    fn uses_reference(&self) -> bool;

    /// The weights of one batch.
    ///
    /// # Errors
    /// A missing column, shapes that do not fit, or a sequence the method cannot score.
    fn score(&self, inputs: &TokenLogps, columns: &TokenColumns)
    -> Result<TokenWeights, CoreError>;
}

/// Everything one evaluation of a token-level method produced.
#[derive(Debug, Clone)]
pub struct TokenMethodOutput {
    /// The scalar to minimise, `[1]`.
    pub loss: Tensor<1>,
    /// Per-pair losses whose mean is `loss`, `[batch]`.
    pub losses: Tensor<1>,
    /// The chosen rewards the method's code logs, `[batch]` (detached).
    pub chosen_rewards: Tensor<1>,
    /// The rejected rewards the method's code logs, `[batch]` (detached).
    pub rejected_rewards: Tensor<1>,
    /// The weights the loss used.
    pub weights: TokenWeights,
}

/// One of the token-level methods with its own loss (SDPO's loss lives in
/// [`PreferenceLoss`](crate::PreferenceLoss)).
#[derive(Debug, Clone, Copy)]
pub enum TokenMethod {
    /// [`confpo::Confpo`].
    Confpo(confpo::Confpo),
    /// [`sepo::Sepo`].
    Sepo(sepo::Sepo),
    /// [`tisdpo::Tisdpo`].
    Tisdpo(tisdpo::Tisdpo),
    /// [`critical_token::CriticalToken`].
    CriticalToken(critical_token::CriticalToken),
    /// [`tgdpo::Tgdpo`].
    Tgdpo(tgdpo::Tgdpo),
}

impl TokenMethod {
    /// The method's `loss_type`.
    pub fn loss_type(&self) -> crate::LossType {
        use crate::LossType;
        match self {
            Self::Confpo(_) => LossType::Confpo,
            Self::Sepo(_) => LossType::Sepo,
            Self::Tisdpo(_) => LossType::Tisdpo,
            Self::CriticalToken(_) => LossType::CriticalToken,
            Self::Tgdpo(_) => LossType::Tgdpo,
        }
    }

    /// The method's scorer.
    pub fn scorer(&self) -> &dyn TokenScorer {
        match self {
            Self::Confpo(m) => m,
            Self::Sepo(m) => m,
            Self::Tisdpo(m) => m,
            Self::CriticalToken(m) => m,
            Self::Tgdpo(m) => m,
        }
    }

    /// The method's loss on one batch.
    ///
    /// # Errors
    /// A missing column, shapes that do not fit, or a sequence the method cannot score.
    pub fn forward(
        &self,
        inputs: &TokenLogps,
        columns: &TokenColumns,
    ) -> Result<TokenMethodOutput, CoreError> {
        match self {
            Self::Confpo(m) => m.forward(inputs, columns),
            Self::Sepo(m) => m.forward(inputs, columns),
            Self::Tisdpo(m) => m.forward(inputs, columns),
            Self::CriticalToken(m) => m.forward(inputs, columns),
            Self::Tgdpo(m) => m.forward(inputs, columns),
        }
    }
}

/// `sum_t w_t * x_t` over the valid positions, `[batch]`; garbage under `!valid` is ignored.
fn weighted_sum(values: Tensor<2>, valid: Tensor<2, Bool>, weights: Tensor<2>) -> Tensor<1> {
    (values.mask_fill(valid.bool_not(), 0.0) * weights)
        .sum_dim(1)
        .squeeze_dim(1)
}

impl TokenMethodOutput {
    /// The output of per-pair `losses` (the loss is their mean) with the rewards the method's
    /// code logs (detached here).
    pub(crate) fn new(
        losses: Tensor<1>,
        chosen_rewards: Tensor<1>,
        rejected_rewards: Tensor<1>,
        weights: TokenWeights,
    ) -> Self {
        Self {
            loss: losses.clone().mean(),
            losses,
            chosen_rewards: chosen_rewards.detach(),
            rejected_rewards: rejected_rewards.detach(),
            weights,
        }
    }
}

/// `sum / divisor`, or `sum` without a divisor.
fn divide(sum: Tensor<1>, divisor: &Option<Tensor<1>>) -> Tensor<1> {
    match divisor {
        Some(divisor) => sum / divisor.clone(),
        None => sum,
    }
}

/// The per-token log-ratios `policy - ref` of both sides, 0 off the completion (whatever the
/// log-probs hold there).
pub(crate) fn log_ratios(inputs: &TokenLogps) -> SidePair {
    let side = |policy: &Tensor<2>, reference: &Tensor<2>, valid: &Tensor<2, Bool>| {
        let invalid = valid.clone().bool_not();
        policy.clone().mask_fill(invalid.clone(), 0.0) - reference.clone().mask_fill(invalid, 0.0)
    };
    SidePair {
        chosen: side(
            &inputs.policy_chosen_logps,
            &inputs.ref_chosen_logps,
            &inputs.chosen_loss_mask,
        ),
        rejected: side(
            &inputs.policy_rejected_logps,
            &inputs.ref_rejected_logps,
            &inputs.rejected_loss_mask,
        ),
    }
}

/// The unweighted rewards `beta * sum_t (policy_t - ref_t)` of both sides, `[batch]` each:
/// what the TGDPO and critical-token code log whatever their weights.
pub(crate) fn plain_rewards(inputs: &TokenLogps, beta: f64) -> (Tensor<1>, Tensor<1>) {
    let plain = inputs.full_sums();
    (
        (plain.policy_chosen - plain.ref_chosen) * beta,
        (plain.policy_rejected - plain.ref_rejected) * beta,
    )
}

/// A `[batch, seq]` tensor read back to the host as rows of f64.
pub(crate) fn host_rows(tensor: Tensor<2>, name: &'static str) -> Result<Vec<Vec<f64>>, CoreError> {
    let [_, seq] = tensor.dims();
    // Converted on the host: not every backend has float64 (wgpu).
    let flat = tensor
        .try_into_vec_as::<f64>()
        .map_err(|e| CoreError::DeviceRead {
            tensor: name,
            reason: format!("{e:?}"),
        })?;
    Ok(if seq == 0 {
        Vec::new()
    } else {
        flat.chunks(seq).map(<[f64]>::to_vec).collect()
    })
}

/// A `[batch, seq]` mask read back to the host.
pub(crate) fn host_mask(
    mask: Tensor<2, Bool>,
    name: &'static str,
) -> Result<Vec<Vec<bool>>, CoreError> {
    Ok(host_rows(mask.float(), name)?
        .into_iter()
        .map(|row| row.into_iter().map(|v| v != 0.0).collect())
        .collect())
}

/// Host rows back onto `like`'s device, in its float dtype (a constant: no gradient).
pub(crate) fn device_rows(rows: &[Vec<f64>], like: &Tensor<2>) -> Tensor<2> {
    let batch = rows.len();
    let seq = rows.first().map_or(like.dims()[1], Vec::len);
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    from_host(flat, vec![batch, seq], like)
}

/// Host values onto `like`'s device, `[batch]`, in its float dtype.
pub(crate) fn device_values(values: Vec<f64>, like: &Tensor<2>) -> Tensor<1> {
    let len = values.len();
    from_host(values, vec![len], like)
}

fn from_host<const D: usize>(values: Vec<f64>, shape: Vec<usize>, like: &Tensor<2>) -> Tensor<D> {
    let device = like.device();
    match like.dtype() {
        DType::F64 => Tensor::from_data(TensorData::new(values, shape), (&device, DType::F64)),
        dtype => {
            let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
            Tensor::<D>::from_data(TensorData::new(values, shape), (&device, DType::F32))
                .cast(dtype)
        }
    }
}

/// The completion mask as 0/1 weights in `like`'s dtype.
pub(crate) fn mask_weights(mask: Tensor<2, Bool>, like: &Tensor<2>) -> Tensor<2> {
    mask.float().cast(like.dtype())
}

/// Checks a method's hyperparameter is finite (and, with `positive`, above 0).
pub(crate) fn check_finite(
    field: &'static str,
    value: f64,
    positive: bool,
) -> Result<(), CoreError> {
    if !value.is_finite() || (positive && value <= 0.0) {
        return Err(CoreError::InvalidConfig {
            field,
            value: value.to_string(),
            reason: if positive {
                "must be a finite number above 0".into()
            } else {
                "must be a finite number".into()
            },
        });
    }
    Ok(())
}
