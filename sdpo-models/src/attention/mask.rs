//! Attention masks: causal plus key padding for whole rows, and for query blocks also packed
//! branches and sliding windows.

use burn::prelude::*;

use crate::stack::PackedRows;

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

/// Which of the keys `key_start..end` the queries `start..end` may not see, `[rows, 1, end -
/// start, end - key_start]`: a key is blocked when it is after the query, padding, outside the
/// sliding `window` (at least `window` positions before the query), or (packed rows) in
/// another branch than the query's and not in the shared prefix. With `key_start` 0, `start`
/// 0 and `end` T, no window and plain rows, it is [`attention_blocked`].
///
/// For packed rows the window is measured in positions (`position_ids`), which is what the
/// logical sequence `prefix + branch` of each query sees; plain rows' positions are their
/// indices.
pub(crate) fn block_blocked(
    attention_mask: &Tensor<2, Int>,
    packed: Option<&PackedRows>,
    (start, end): (usize, usize),
    key_start: usize,
    window: Option<usize>,
) -> Tensor<4, Bool> {
    let device = attention_mask.device();
    let [rows, seq] = attention_mask.dims();
    let n = end - start;
    let m = end - key_start;
    let offset = (start - key_start) as i64;
    let future: Tensor<4, Bool> = Tensor::<2, Bool>::tril_mask([n, m], offset, &device)
        .unsqueeze::<4>()
        .expand([rows, 1, n, m]);
    let padded_key: Tensor<4, Bool> = attention_mask
        .clone()
        .slice([0..rows, key_start..end.min(seq)])
        .equal_elem(0)
        .reshape([rows, 1, 1, m])
        .expand([rows, 1, n, m]);
    let mut blocked = future.bool_or(padded_key);
    let queries = |t: &Tensor<2, Int>| {
        t.clone()
            .slice([0..rows, start..end])
            .reshape([rows, 1, n, 1])
            .expand([rows, 1, n, m])
    };
    let keys = |t: &Tensor<2, Int>| {
        t.clone()
            .slice([0..rows, key_start..end])
            .reshape([rows, 1, 1, m])
            .expand([rows, 1, n, m])
    };
    if let Some(packed) = packed {
        let key_branch = keys(&packed.branches);
        let other_branch = key_branch
            .clone()
            .not_equal_elem(0)
            .bool_and(key_branch.not_equal(queries(&packed.branches)));
        blocked = blocked.bool_or(other_branch);
    }
    if let Some(window) = window {
        let outside: Tensor<4, Bool> = match packed {
            None => Tensor::<2, Bool>::triu_mask([n, m], offset - window as i64 + 1, &device)
                .unsqueeze::<4>()
                .expand([rows, 1, n, m]),
            Some(p) => {
                (queries(&p.position_ids) - keys(&p.position_ids)).greater_equal_elem(window as i64)
            }
        };
        blocked = blocked.bool_or(outside);
    }
    blocked
}

/// The first key the queries `start..` can see through a sliding `window` in plain rows
/// (indices are positions): the keys before it are outside every query's window, so a query
/// block skips them. Packed rows and full attention start at 0.
pub(crate) fn first_visible_key(start: usize, window: Option<usize>, packed: bool) -> usize {
    match window {
        Some(w) if !packed => (start + 1).saturating_sub(w),
        _ => 0,
    }
}
