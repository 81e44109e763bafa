//! Which keys each query may see, on the host: the masks of [`crate::attention::mask`] (causal,
//! key padding, packed branches, sliding windows) as lookups for the host attention kernel.

use std::sync::Arc;

/// The key padding and the packing of the rows of one forward pass, read once from the
/// device for every layer.
#[derive(Debug)]
pub(crate) struct HostMask {
    seq: usize,
    /// `[rows, T]`: true on real tokens.
    real: Vec<bool>,
    /// Packed rows: `[rows, T]` branches and positions.
    packed: Option<(Vec<i64>, Vec<i64>)>,
    /// Per row of plain rows: the number of real tokens when they lead the row (right
    /// padding), so that a query's visible keys are one range.
    leading_real: Vec<Option<usize>>,
}

impl HostMask {
    /// From `[rows, T]` attention mask values (1 on real tokens) and, for packed rows, their
    /// branches and positions (same shape).
    pub(crate) fn new(
        seq: usize,
        attention_mask: &[i64],
        packed: Option<(Vec<i64>, Vec<i64>)>,
    ) -> Arc<Self> {
        let real: Vec<bool> = attention_mask.iter().map(|&m| m != 0).collect();
        let leading_real = real
            .chunks(seq.max(1))
            .map(|row| {
                let n = row.iter().take_while(|&&r| r).count();
                (packed.is_none() && row[n..].iter().all(|&r| !r)).then_some(n)
            })
            .collect();
        Arc::new(Self {
            seq,
            real,
            packed,
            leading_real,
        })
    }

    /// Rows × sequence length the mask covers.
    pub(crate) fn len(&self) -> usize {
        self.real.len()
    }
}

/// [`HostMask`] for one layer: with its sliding window, if any.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Visibility<'a> {
    mask: &'a HostMask,
    window: Option<usize>,
}

impl<'a> Visibility<'a> {
    pub(crate) fn new(mask: &'a HostMask, window: Option<usize>) -> Self {
        Self { mask, window }
    }

    /// The first key any query of `start..` may see: a plain row's sliding window hides the
    /// keys before it (packed rows measure windows in positions and start at 0).
    pub(crate) fn first_key(&self, start: usize) -> usize {
        match (self.window, &self.mask.packed) {
            (Some(w), None) => (start + 1).saturating_sub(w),
            _ => 0,
        }
    }

    /// One past the last key `query` may see (causal: itself).
    pub(crate) fn last_key(&self, query: usize) -> usize {
        query + 1
    }

    /// Whether `query` of row `row` sees `key` (`key <= query`, as [`Self::last_key`] bounds):
    /// a real token, in the shared prefix or the query's own branch, inside the window.
    #[inline]
    pub(crate) fn sees(&self, row: usize, query: usize, key: usize) -> bool {
        let base = row * self.mask.seq;
        if !self.mask.real[base + key] {
            return false;
        }
        match &self.mask.packed {
            None => self.window.is_none_or(|w| query - key < w),
            Some((branches, positions)) => {
                let kb = branches[base + key];
                (kb == 0 || kb == branches[base + query])
                    && self
                        .window
                        .is_none_or(|w| positions[base + query] - positions[base + key] < w as i64)
            }
        }
    }

    /// Sets the scores of the keys `first..first + scores.len()` that `query` of row `row`
    /// cannot see to `-inf`.
    pub(crate) fn mask_row(&self, scores: &mut [f32], row: usize, query: usize, first: usize) {
        let end = first + scores.len();
        let last = self.last_key(query).min(end);
        match self.mask.leading_real.get(row).copied().flatten() {
            Some(real) => {
                // One range: inside the window, at or before the query, a real token.
                let lo = self
                    .window
                    .map_or(0, |w| (query + 1).saturating_sub(w))
                    .max(first);
                let hi = last.min(real).max(lo);
                scores[..lo - first].fill(f32::NEG_INFINITY);
                scores[hi - first..].fill(f32::NEG_INFINITY);
            }
            None => {
                for (j, score) in scores.iter_mut().enumerate() {
                    let key = first + j;
                    if key >= last || !self.sees(row, query, key) {
                        *score = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }
}
