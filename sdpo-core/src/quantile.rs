//! Per-row quantiles over the valid entries of a `[batch, seq]` tensor, on the device.

use burn::tensor::{Bool, Tensor};

use crate::error::{CoreError, expect_shape};

/// The `q`-quantile of each row's valid entries, with `torch.quantile`'s linear interpolation;
/// `-inf` for a row with no valid entry.
///
/// All rows at once: invalid entries are set to `+inf` and each row is sorted, so its `n` valid
/// values come first; then `rank = q * (n - 1)` (in the tensor's dtype), and the two neighbours
/// are gathered and interpolated. No per-row loop and no read back to the host.
///
/// torch's CPU kernel interpolates with a fused multiply-add; burn has none, so a threshold may
/// differ from torch's by one ulp (it never lands on a different side of a score in the
/// fixtures). When `rank` is an integer the threshold is exactly that score.
///
/// # Shapes
/// - `values`, `mask`: `[batch, seq]`; returns `[batch]`
pub fn masked_quantile(
    values: Tensor<2>,
    mask: Tensor<2, Bool>,
    q: f64,
) -> Result<Tensor<1>, CoreError> {
    let [batch, seq] = values.dims();
    expect_shape("mask", &mask.dims(), &[batch, seq])?;
    if !(0.0..=1.0).contains(&q) {
        return Err(CoreError::InvalidConfig {
            field: "sdpo_threshold",
            value: q.to_string(),
            reason: "a quantile must lie in [0, 1]".into(),
        });
    }
    let dtype = values.dtype();
    let sorted = values
        .mask_fill(mask.clone().bool_not(), f64::INFINITY)
        .sort(1);
    let count = mask.int().sum_dim(1); // [batch, 1]
    let empty = count.clone().equal_elem(0);
    let rank = (count.float().cast(dtype) - 1.0).clamp_min(0.0) * q;
    let lower = rank.clone().floor();
    let weight = rank.clone() - lower.clone();
    let v_lower = sorted.clone().gather(1, lower.int());
    let v_upper = sorted.gather(1, rank.ceil().int());
    let diff = v_upper.clone() - v_lower.clone();
    // torch's lerp: from the lower end when the weight is small, else from the upper end.
    let from_lower = v_lower + weight.clone() * diff.clone();
    let from_upper = v_upper - diff * (weight.clone().neg() + 1.0);
    let threshold = from_upper
        .mask_where(weight.lower_elem(0.5), from_lower)
        .mask_fill(empty, f64::NEG_INFINITY);
    Ok(threshold.squeeze_dim(1))
}
