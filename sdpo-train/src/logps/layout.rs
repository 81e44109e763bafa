//! How a preference batch's rows go through the model: two rows per pair (TRL's concatenated
//! forward) or one packed row per pair that holds the prompt once (the shared-prompt forward).
//!
//! With [`RowLayout::SharedPrompt`] pair `i` becomes one row
//!
//! ```text
//! prompt (shared) | chosen completion | rejected completion | padding
//! positions 0..P  | P..P+Cc           | P..P+Cr             |
//! ```
//!
//! in which every token attends to the earlier prompt tokens and to the earlier tokens of its
//! own completion ([`sdpo_models::PackedRows`]), and both completions continue the prompt's
//! positions. Each completion token is therefore computed as in its own row `prompt +
//! completion`, while the prompt runs through the model once instead of twice. The shared part
//! is the longest common prefix of the two rows within both prompts; when truncation left the
//! two prompts different (`truncation_mode = "keep_end"`), the rest of each prompt is part of
//! its branch, so every batch is exact.
//!
//! Log-probs are read only where they are used: at the positions whose next token is a
//! completion token. The first completion token of both sides is predicted from the same last
//! prompt position.

use burn::tensor::{Device, Int, Tensor, TensorData};

use sdpo_core::CoreError;
use sdpo_models::{CausalLm, PackedRows, StackContext};

use crate::error::TrainError;
use crate::logps::batch::DeviceBatch;

/// The row layout of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowLayout {
    /// Chosen and rejected as two rows `prompt + completion` each (`2B` rows of `T`), as TRL's
    /// concatenated forward.
    #[default]
    TwoRows,
    /// One row per pair: the prompt once, then the chosen and the rejected completion.
    SharedPrompt,
}

impl RowLayout {
    /// The layout a run asks for with `shared_prompt_forward`.
    pub fn for_run(shared_prompt_forward: bool) -> Self {
        if shared_prompt_forward {
            Self::SharedPrompt
        } else {
            Self::TwoRows
        }
    }
}

/// Where the log-probs are read: every position whose next token is a completion token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Positions {
    /// Rows of the output (`2B`, chosen first).
    pub out_rows: usize,
    /// Padded length `T` of the batch's rows (the output has `T - 1` columns).
    pub out_seq: usize,
    /// Index into the forward's flattened `[rows * len]` hidden states of each position.
    pub source: Vec<i64>,
    /// `row * (T - 1) + pos` in the output of the same positions (ascending).
    pub target: Vec<i64>,
    /// The next token at each of them.
    pub labels: Vec<i64>,
}

impl Positions {
    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// The chunks `[start, end)` of the position list.
    pub fn chunks(&self, chunk: usize) -> Vec<(usize, usize)> {
        (0..self.len())
            .step_by(chunk.max(1))
            .map(|s| (s, (s + chunk).min(self.len())))
            .collect()
    }
}

/// The rows of one forward pass, on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostRows {
    /// Rows of the forward pass (`2B` or `B`).
    pub rows: usize,
    /// Their padded length.
    pub len: usize,
    /// `[rows, len]` token ids.
    pub input_ids: Vec<i64>,
    /// `[rows, len]` 1 on real tokens.
    pub attention_mask: Vec<i64>,
    /// `[rows, len]` positions and branches of packed rows.
    pub packed: Option<(Vec<i64>, Vec<i64>)>,
    /// Where the log-probs are read.
    pub positions: Positions,
}

/// A batch's `[2B, T]` matrices on the host.
pub(crate) struct HostBatch<'a> {
    pub pairs: usize,
    pub seq: usize,
    pub input_ids: &'a [i64],
    pub attention_mask: &'a [i64],
    pub completion_mask: &'a [i64],
}

impl HostBatch<'_> {
    /// Real tokens of row `r` (rows are right padded).
    fn row_len(&self, r: usize) -> usize {
        self.attention_mask[r * self.seq..(r + 1) * self.seq]
            .iter()
            .filter(|&&m| m != 0)
            .count()
    }

    /// Whether the token at `pos + 1` of row `r` is a completion token.
    fn predicts_completion(&self, r: usize, pos: usize) -> bool {
        self.completion_mask[r * self.seq + pos + 1] != 0
    }

    /// The positions of every completion token's prediction, `source` from `packed_index`
    /// (row, position) → index into the forward's flattened rows.
    fn positions(&self, packed_index: impl Fn(usize, usize) -> usize) -> Positions {
        let (rows, seq) = (2 * self.pairs, self.seq);
        let mut p = Positions {
            out_rows: rows,
            out_seq: seq,
            source: Vec::new(),
            target: Vec::new(),
            labels: Vec::new(),
        };
        for r in 0..rows {
            for pos in 0..seq - 1 {
                if self.predicts_completion(r, pos) {
                    p.source.push(packed_index(r, pos) as i64);
                    p.target.push((r * (seq - 1) + pos) as i64);
                    p.labels.push(self.input_ids[r * seq + pos + 1]);
                }
            }
        }
        p
    }

    /// The rows of `layout`.
    pub fn rows(&self, layout: RowLayout) -> Result<HostRows, TrainError> {
        let seq = self.seq;
        if seq < 2 {
            return Err(TrainError::Loss(CoreError::TooSmall {
                tensor: "input_ids",
                reason: format!("a sequence of {seq} token(s) has no next-token target"),
            }));
        }
        self.check_right_padded()?;
        match layout {
            RowLayout::TwoRows => Ok(HostRows {
                rows: 2 * self.pairs,
                len: seq,
                input_ids: self.input_ids.to_vec(),
                attention_mask: self.attention_mask.to_vec(),
                packed: None,
                positions: self.positions(|r, pos| r * seq + pos),
            }),
            RowLayout::SharedPrompt => Ok(self.shared_prompt_rows()),
        }
    }

    /// Every row is real tokens then padding, with completion tokens only on real tokens (the
    /// collator's layout; positions `0..len` and the packed rows rely on it).
    fn check_right_padded(&self) -> Result<(), TrainError> {
        for r in 0..2 * self.pairs {
            let row = r * self.seq..(r + 1) * self.seq;
            let attention = &self.attention_mask[row.clone()];
            let len = self.row_len(r);
            if let Some(pos) = attention[..len].iter().position(|&m| m == 0) {
                return Err(TrainError::BatchLayout {
                    row: r,
                    reason: format!(
                        "padding at position {pos} before a real token: rows must be right padded"
                    ),
                });
            }
            let completion = &self.completion_mask[row];
            if let Some(pos) = completion[len..].iter().position(|&m| m != 0) {
                return Err(TrainError::BatchLayout {
                    row: r,
                    reason: format!("completion token at padding position {}", len + pos),
                });
            }
        }
        Ok(())
    }

    /// Length of the prefix pair `i` shares: the common leading tokens that are prompt tokens
    /// in both rows.
    fn shared_len(&self, i: usize) -> usize {
        let (c, r) = (i, self.pairs + i);
        let limit = self.row_len(c).min(self.row_len(r));
        (0..limit)
            .take_while(|&k| {
                let (kc, kr) = (c * self.seq + k, r * self.seq + k);
                self.input_ids[kc] == self.input_ids[kr]
                    && self.completion_mask[kc] == 0
                    && self.completion_mask[kr] == 0
            })
            .count()
    }

    fn shared_prompt_rows(&self) -> HostRows {
        let (pairs, seq) = (self.pairs, self.seq);
        let shared: Vec<usize> = (0..pairs).map(|i| self.shared_len(i)).collect();
        let lens: Vec<(usize, usize)> = (0..pairs)
            .map(|i| (self.row_len(i), self.row_len(pairs + i)))
            .collect();
        let len = (0..pairs)
            .map(|i| lens[i].0 + lens[i].1 - shared[i])
            .max()
            .unwrap_or(0)
            .max(1);
        let mut input_ids = Vec::with_capacity(pairs * len);
        let mut attention_mask = Vec::with_capacity(pairs * len);
        let mut position_ids = Vec::with_capacity(pairs * len);
        let mut branches = Vec::with_capacity(pairs * len);
        for i in 0..pairs {
            let (s, (len_c, len_r)) = (shared[i], lens[i]);
            let chosen = &self.input_ids[i * seq..i * seq + len_c];
            let rejected = &self.input_ids[(pairs + i) * seq + s..(pairs + i) * seq + len_r];
            input_ids.extend_from_slice(chosen);
            input_ids.extend_from_slice(rejected);
            position_ids.extend((0..len_c as i64).chain(s as i64..len_r as i64));
            branches.extend(
                std::iter::repeat_n(0, s)
                    .chain(std::iter::repeat_n(1, len_c - s))
                    .chain(std::iter::repeat_n(2, len_r - s)),
            );
            let used = len_c + len_r - s;
            attention_mask.extend(std::iter::repeat_n(1, used));
            let padding = len - used;
            attention_mask.extend(std::iter::repeat_n(0, padding));
            input_ids.extend(std::iter::repeat_n(0, padding));
            position_ids.extend(std::iter::repeat_n(0, padding));
            branches.extend(std::iter::repeat_n(0, padding));
        }
        let positions = self.positions(|r, pos| {
            if r < pairs {
                r * len + pos
            } else {
                let i = r - pairs;
                let s = shared[i];
                i * len + if pos < s { pos } else { lens[i].0 + pos - s }
            }
        });
        HostRows {
            rows: pairs,
            len,
            input_ids,
            attention_mask,
            packed: Some((position_ids, branches)),
            positions,
        }
    }
}

fn read_ints(t: Tensor<2, Int>, what: &'static str) -> Result<Vec<i64>, TrainError> {
    t.into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| TrainError::DeviceRead {
            tensor: what,
            reason: format!("{e:?}"),
        })
}

impl HostRows {
    /// The rows of `batch` in `layout`, from its host copy (or, for a batch built from
    /// tensors, its three integer matrices read back from the device).
    pub fn read(batch: &DeviceBatch, layout: RowLayout) -> Result<Self, TrainError> {
        if let Some(host) = &batch.host {
            return HostBatch {
                pairs: host.batch_size,
                seq: host.seq_len,
                input_ids: &host.input_ids,
                attention_mask: &host.attention_mask,
                completion_mask: &host.completion_mask,
            }
            .rows(layout);
        }
        let input_ids = read_ints(batch.input_ids.clone(), "input_ids")?;
        let attention_mask = read_ints(batch.attention_mask.clone(), "attention_mask")?;
        let completion_mask = read_ints(batch.completion_mask.clone(), "completion_mask")?;
        HostBatch {
            pairs: batch.batch_size,
            seq: batch.seq_len,
            input_ids: &input_ids,
            attention_mask: &attention_mask,
            completion_mask: &completion_mask,
        }
        .rows(layout)
    }

    /// The rows' token ids on `device`.
    pub fn input_ids(&self, device: &Device) -> Tensor<2, Int> {
        ints2(&self.input_ids, [self.rows, self.len], device)
    }

    /// The stack context of `model` over these rows, with attention blocks of `query_block`.
    pub fn context(&self, model: &CausalLm, query_block: usize, device: &Device) -> StackContext {
        let shape = [self.rows, self.len];
        let mask = ints2(&self.attention_mask, shape, device);
        match &self.packed {
            None => model.stack_context(mask, query_block),
            Some((position_ids, branches)) => model.packed_stack_context(
                mask,
                PackedRows {
                    position_ids: ints2(position_ids, shape, device),
                    branches: ints2(branches, shape, device),
                },
                query_block,
            ),
        }
    }
}

fn ints2(values: &[i64], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pairs of `T = 8`: pair 0 shares the prompt `[1, 2, 3]`, pair 1's prompts differ
    /// after two tokens (keep_end truncation) and its rejected row is the longer one.
    fn batch() -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        #[rustfmt::skip]
        let ids = vec![
            1, 2, 3, 10, 11, 0, 0, 0,
            5, 6, 7, 20, 0, 0, 0, 0,
            1, 2, 3, 12, 0, 0, 0, 0,
            5, 6, 8, 9, 21, 22, 23, 0,
        ];
        #[rustfmt::skip]
        let completion = vec![
            0, 0, 0, 1, 1, 0, 0, 0,
            0, 0, 0, 1, 0, 0, 0, 0,
            0, 0, 0, 1, 0, 0, 0, 0,
            0, 0, 0, 0, 1, 1, 1, 0,
        ];
        let attention = ids.iter().map(|&t| i64::from(t != 0)).collect();
        (ids, attention, completion)
    }

    fn host<'a>(b: &'a (Vec<i64>, Vec<i64>, Vec<i64>)) -> HostBatch<'a> {
        HostBatch {
            pairs: 2,
            seq: 8,
            input_ids: &b.0,
            attention_mask: &b.1,
            completion_mask: &b.2,
        }
    }

    #[test]
    fn shared_prompt_rows_hold_the_prompt_once_and_continue_its_positions() {
        let b = batch();
        let rows = host(&b).rows(RowLayout::SharedPrompt).expect("rows");
        assert_eq!((rows.rows, rows.len), (2, 9));
        #[rustfmt::skip]
        assert_eq!(rows.input_ids, vec![
            1, 2, 3, 10, 11, 12, 0, 0, 0,
            5, 6, 7, 20, 8, 9, 21, 22, 23,
        ]);
        let (positions, branches) = rows.packed.clone().expect("packed");
        #[rustfmt::skip]
        assert_eq!(positions, vec![
            0, 1, 2, 3, 4, 3, 0, 0, 0,
            0, 1, 2, 3, 2, 3, 4, 5, 6,
        ]);
        #[rustfmt::skip]
        assert_eq!(branches, vec![
            0, 0, 0, 1, 1, 2, 0, 0, 0,
            0, 0, 1, 1, 2, 2, 2, 2, 2,
        ]);
        assert_eq!(rows.attention_mask.iter().sum::<i64>(), 6 + 9);
        // Both layouts read the same targets and labels; the shared layout reads the first
        // completion token of both sides of pair 0 from the same prompt position.
        let two = host(&b).rows(RowLayout::TwoRows).expect("rows");
        assert_eq!(rows.positions.target, two.positions.target);
        assert_eq!(rows.positions.labels, two.positions.labels);
        assert_eq!(rows.positions.labels, vec![10, 11, 20, 12, 21, 22, 23]);
        assert_eq!(
            rows.positions.source,
            vec![2, 3, 9 + 2, 2, 9 + 5, 9 + 6, 9 + 7]
        );
        // Every source sits at the position of the token before its label.
        for (k, &source) in rows.positions.source.iter().enumerate() {
            let column = rows.positions.target[k] % 7;
            assert_eq!(positions[source as usize], column, "position {k}");
        }
    }

    #[test]
    fn a_left_padded_row_is_an_error_naming_the_row() {
        let mut b = batch();
        // Row 1 (chosen of pair 1) moved to the right: padding first.
        let row = 8..16;
        b.0[row.clone()].rotate_right(4);
        b.1[row.clone()].rotate_right(4);
        b.2[row].rotate_right(4);
        for layout in [RowLayout::TwoRows, RowLayout::SharedPrompt] {
            let err = host(&b).rows(layout).expect_err("left padding");
            assert!(
                err.to_string()
                    .starts_with("batch row 1: padding at position 0"),
                "{err}"
            );
        }
        let mut b = batch();
        b.2[7] = 1;
        let err = host(&b)
            .rows(RowLayout::SharedPrompt)
            .expect_err("completion on padding");
        assert_eq!(
            err.to_string(),
            "batch row 0: completion token at padding position 7"
        );
    }

    #[test]
    fn two_rows_are_the_batch_itself() {
        let b = batch();
        let rows = host(&b).rows(RowLayout::TwoRows).expect("rows");
        assert_eq!((rows.rows, rows.len), (4, 8));
        assert_eq!(rows.input_ids, b.0);
        assert_eq!(rows.packed, None);
        assert_eq!(
            rows.positions.source,
            vec![2, 3, 8 + 2, 16 + 2, 24 + 3, 24 + 4, 24 + 5]
        );
    }
}
