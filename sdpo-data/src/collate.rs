//! [`Collator`]: tokenized pairs to a padded [`PreferenceBatch`], the layout of TRL 0.28's
//! `DataCollatorForPreference`: chosen rows first, then rejected rows, all right-padded to one
//! length so a trainer runs both halves in one forward pass.

use crate::config::{DataConfig, TruncationMode};
use crate::dataset::{TokenizedDataset, TokenizedPair};
use crate::error::DataError;

/// A padded batch of `batch_size` pairs as `2 * batch_size` rows of `seq_len` tokens.
///
/// Row `i < batch_size` is pair `i`'s prompt + chosen, row `batch_size + i` its prompt +
/// rejected. All matrices are row-major `[2 * batch_size, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreferenceBatch {
    /// Number of pairs `B`.
    pub batch_size: usize,
    /// Padded row length `T`.
    pub seq_len: usize,
    /// `[2B, T]` token ids, padded on the right with the pad id.
    pub input_ids: Vec<i64>,
    /// `[2B, T]` 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// `[2B, T]` 1 for completion tokens (the loss mask), 0 for prompt and padding.
    pub completion_mask: Vec<i64>,
    /// `[B]` index of each pair in its dataset (`0..B` when collated from a slice).
    pub pair_indices: Vec<usize>,
    /// `[2B]` whether `max_length` cut the row.
    pub truncated: Vec<bool>,
}

impl PreferenceBatch {
    /// Number of rows, `2 * batch_size`.
    pub fn num_rows(&self) -> usize {
        2 * self.batch_size
    }

    /// Row `r` of `input_ids` (`r < 2B`).
    pub fn input_ids_row(&self, r: usize) -> &[i64] {
        &self.input_ids[r * self.seq_len..(r + 1) * self.seq_len]
    }

    /// Row `r` of `attention_mask`.
    pub fn attention_mask_row(&self, r: usize) -> &[i64] {
        &self.attention_mask[r * self.seq_len..(r + 1) * self.seq_len]
    }

    /// Row `r` of `completion_mask`.
    pub fn completion_mask_row(&self, r: usize) -> &[i64] {
        &self.completion_mask[r * self.seq_len..(r + 1) * self.seq_len]
    }

    /// `[2B, T]`, the shape of each matrix.
    pub fn shape(&self) -> [usize; 2] {
        [self.num_rows(), self.seq_len]
    }
}

/// Pads and truncates pairs into batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collator {
    /// The padding id.
    pub pad_token_id: u32,
    /// Per-row limit on prompt + completion.
    pub max_length: Option<usize>,
    /// Which end of a too-long row survives.
    pub truncation_mode: TruncationMode,
    /// Round `seq_len` up to a multiple of this.
    pub pad_to_multiple_of: Option<usize>,
}

impl Collator {
    /// A collator with `config`'s `max_length`, `truncation_mode`, `pad_to_multiple_of`.
    ///
    /// # Errors
    /// [`DataError::Config`] when `config` is out of range.
    pub fn new(config: &DataConfig, pad_token_id: u32) -> Result<Self, DataError> {
        config.validate()?;
        Ok(Self {
            pad_token_id,
            max_length: config.max_length,
            truncation_mode: config.truncation_mode(),
            pad_to_multiple_of: config.pad_to_multiple_of,
        })
    }

    /// Collates the pairs at `indices` of `dataset` (the output of a sampler).
    ///
    /// # Errors
    /// [`DataError::Config`] when an index is out of range.
    pub fn collate_indices(
        &self,
        dataset: &TokenizedDataset,
        indices: &[usize],
    ) -> Result<PreferenceBatch, DataError> {
        let pairs = indices
            .iter()
            .map(|&i| {
                dataset.pairs.get(i).ok_or_else(|| DataError::Config {
                    field: "indices",
                    reason: format!("pair index {i} out of range for {} pairs", dataset.len()),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut batch = self.collate(&pairs);
        batch.pair_indices = indices.to_vec();
        Ok(batch)
    }

    /// Collates `pairs` in order.
    ///
    /// Each row is prompt + completion, cut to `max_length` (`keep_start`: its first tokens;
    /// `keep_end`: its last), then right-padded to the longest row of the batch (both halves),
    /// rounded up to `pad_to_multiple_of`.
    pub fn collate(&self, pairs: &[&TokenizedPair]) -> PreferenceBatch {
        let batch_size = pairs.len();
        // (start, end) of the kept window of each row in prompt + completion coordinates.
        let windows: Vec<(usize, usize)> = pairs
            .iter()
            .map(|p| self.window(p.chosen_len()))
            .chain(pairs.iter().map(|p| self.window(p.rejected_len())))
            .collect();
        let longest = windows.iter().map(|(s, e)| e - s).max().unwrap_or(0);
        let seq_len = match self.pad_to_multiple_of {
            Some(m) if m > 1 => longest.div_ceil(m) * m,
            _ => longest,
        };
        let rows = 2 * batch_size;
        let mut batch = PreferenceBatch {
            batch_size,
            seq_len,
            input_ids: vec![i64::from(self.pad_token_id); rows * seq_len],
            attention_mask: vec![0; rows * seq_len],
            completion_mask: vec![0; rows * seq_len],
            pair_indices: (0..batch_size).collect(),
            truncated: Vec::with_capacity(rows),
        };
        for (row, &(start, end)) in windows.iter().enumerate() {
            let pair = pairs[row % batch_size.max(1)];
            let completion = if row < batch_size {
                &pair.chosen_ids
            } else {
                &pair.rejected_ids
            };
            let prompt_len = pair.prompt_ids.len();
            let offset = row * seq_len;
            for (col, pos) in (start..end).enumerate() {
                let (id, is_completion) = if pos < prompt_len {
                    (pair.prompt_ids[pos], 0)
                } else {
                    (completion[pos - prompt_len], 1)
                };
                batch.input_ids[offset + col] = i64::from(id);
                batch.attention_mask[offset + col] = 1;
                batch.completion_mask[offset + col] = is_completion;
            }
            batch
                .truncated
                .push(end - start < prompt_len + completion.len());
        }
        batch
    }

    fn window(&self, len: usize) -> (usize, usize) {
        truncation_window(len, self.max_length, self.truncation_mode)
    }
}

/// The `(start, end)` window a row of `len` tokens keeps after `max_length` truncation.
fn truncation_window(
    len: usize,
    max_length: Option<usize>,
    mode: TruncationMode,
) -> (usize, usize) {
    match max_length {
        Some(max) if len > max => match mode {
            TruncationMode::KeepStart => (0, max),
            TruncationMode::KeepEnd => (len - max, len),
        },
        _ => (0, len),
    }
}

/// How many completion tokens of a collated row are scored: completion tokens inside the
/// truncation window that have a token before them in the row (logits at position `t` predict
/// token `t + 1`, so the row's first token is never scored).
pub fn scored_completion_tokens(
    prompt_len: usize,
    completion_len: usize,
    max_length: Option<usize>,
    mode: TruncationMode,
) -> usize {
    let (start, end) = truncation_window(prompt_len + completion_len, max_length, mode);
    let completion_start = prompt_len.max(start);
    let in_window = end.saturating_sub(completion_start);
    // The row's first token (at `start`) has no predecessor.
    if in_window > 0 && completion_start == start {
        in_window - 1
    } else {
        in_window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scored_tokens_count_completion_tokens_with_a_predecessor_in_the_window() {
        use TruncationMode::{KeepEnd, KeepStart};
        // No truncation: every completion token after a non-empty prompt is scored.
        assert_eq!(scored_completion_tokens(3, 4, None, KeepEnd), 4);
        // An empty prompt: the completion's first token starts the row.
        assert_eq!(scored_completion_tokens(0, 4, None, KeepEnd), 3);
        assert_eq!(scored_completion_tokens(0, 1, None, KeepEnd), 0);
        // keep_end cuts the prompt first; a window of completion tokens only loses its first.
        assert_eq!(scored_completion_tokens(5, 3, Some(4), KeepEnd), 3);
        assert_eq!(scored_completion_tokens(5, 3, Some(3), KeepEnd), 2);
        assert_eq!(scored_completion_tokens(5, 3, Some(1), KeepEnd), 0);
        // keep_start cuts the completion first.
        assert_eq!(scored_completion_tokens(5, 3, Some(6), KeepStart), 1);
        assert_eq!(scored_completion_tokens(5, 3, Some(5), KeepStart), 0);
        assert_eq!(scored_completion_tokens(0, 3, Some(2), KeepStart), 1);
    }
}
