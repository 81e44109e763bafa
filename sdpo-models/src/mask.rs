//! The additive attention bias shared by every architecture: causal plus key padding.

use burn::prelude::*;

/// Added to a masked attention score. Large enough that `exp` underflows to exactly 0 next to
/// any real score, small enough that `score + MASKED` stays finite in f32 (no `-inf`, so a
/// row with every key masked gives a uniform softmax instead of NaN).
pub const MASKED: f32 = -1.0e9;

/// Which keys each query may not see, `[batch, 1, seq, seq]`: true unless key `j` is at or
/// before query `i` and `attention_mask[b, j] == 1`.
///
/// # Shapes
/// - `attention_mask`: `[batch, seq]`, 1 for real tokens and 0 for padding
/// - output: `[batch, 1, seq, seq]`
pub fn attention_blocked(attention_mask: Tensor<2, Int>) -> Tensor<4, Bool> {
    let device = attention_mask.device();
    let [batch, seq] = attention_mask.dims();
    // `tril_mask` is true strictly above the diagonal, i.e. on the future keys.
    let future: Tensor<4, Bool> = Tensor::<2, Bool>::tril_mask([seq, seq], 0, &device)
        .unsqueeze::<4>()
        .expand([batch, 1, seq, seq]);
    let padded_key: Tensor<4, Bool> = attention_mask
        .equal_elem(0)
        .reshape([batch, 1, 1, seq])
        .expand([batch, 1, seq, seq]);
    future.bool_or(padded_key)
}

/// Bias `[batch, 1, seq, seq]`: 0 where query `i` may attend to key `j` (`j <= i` and
/// `attention_mask[b, j] == 1`), [`MASKED`] elsewhere ([`attention_blocked`] as an additive
/// bias, the form transformers uses).
///
/// A padded query position therefore attends to the earlier valid tokens, as transformers
/// does; only a row whose first token is padding has no allowed key at all.
///
/// # Shapes
/// - `attention_mask`: `[batch, seq]`, 1 for real tokens and 0 for padding
/// - output: `[batch, 1, seq, seq]`
pub fn attention_bias(attention_mask: Tensor<2, Int>) -> Tensor<4> {
    let device = attention_mask.device();
    let [batch, seq] = attention_mask.dims();
    Tensor::<4>::zeros([batch, 1, seq, seq], &device)
        .mask_fill(attention_blocked(attention_mask), MASKED)
}
