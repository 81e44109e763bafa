//! The tokenized dataset: [`TokenizedPair`]s in file order, the [`DataReport`] of what was
//! skipped or truncated, and a stable content hash usable as a cache key.

use serde::{Deserialize, Serialize};

use crate::config::TruncationMode;
use crate::error::{DataError, RecordOrigin};
use crate::hash::Fnv1a;

/// One preference pair as token ids. The model input of each side is `prompt_ids` followed by
/// that side's completion ids; the split point is exact because each part was tokenized alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TokenizedPair {
    /// Prompt ids, after `max_prompt_length` truncation and with BOS when the tokenizer asks.
    pub prompt_ids: Vec<u32>,
    /// Chosen completion ids (standard format: ending in EOS).
    pub chosen_ids: Vec<u32>,
    /// Rejected completion ids (standard format: ending in EOS).
    pub rejected_ids: Vec<u32>,
}

impl TokenizedPair {
    /// Prompt + chosen length, before `max_length` truncation.
    pub fn chosen_len(&self) -> usize {
        self.prompt_ids.len() + self.chosen_ids.len()
    }

    /// Prompt + rejected length, before `max_length` truncation.
    pub fn rejected_len(&self) -> usize {
        self.prompt_ids.len() + self.rejected_ids.len()
    }

    /// The longer side's length, capped at `max_length`: the row length this pair needs in a
    /// batch (what length-grouped sampling sorts by).
    pub fn padded_len(&self, max_length: Option<usize>) -> usize {
        let len = self.chosen_len().max(self.rejected_len());
        max_length.map_or(len, |max| len.min(max))
    }
}

/// Counts of what happened to the input, with the first few reasons verbatim: the data summary
/// of one split (serialisable, so a trainer can write it into its run directory as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataReport {
    /// Records seen (valid or not).
    pub records_read: usize,
    /// Pairs in the dataset.
    pub pairs_kept: usize,
    /// Records skipped because they were invalid (bad JSON, field, role, UTF-8, template,
    /// tokenizer); only non-zero with `skip_invalid_records`.
    pub skipped_invalid: usize,
    /// Pairs dropped because their prompt alone fills `max_length` under `keep_start`, so
    /// truncation would leave no completion token. TRL 1.x drops them (always counted here);
    /// under TRL 0.28 semantics such a pair is an error unless `skip_invalid_records`.
    pub dropped_truncated: usize,
    /// Pairs dropped because a completion has no scored token after the next-token shift and
    /// truncation ([`DataError::NoScoredToken`]); only non-zero with `skip_invalid_records`.
    pub dropped_unscored: usize,
    /// Kept pairs whose prompt was cut to `max_prompt_length` (TRL 0.28).
    pub prompts_truncated: usize,
    /// Kept pairs whose tokenized prompt was not a prefix of the tokenized prompt + completion
    /// (TRL 1.x; the template renders the prompt alone differently, or tokens merge across the
    /// boundary), so the prompt's diverging tail is not in the pair. TRL warns once.
    pub prompts_not_prefix: usize,
    /// Kept pairs with a completion that has no scored token after the next-token shift and
    /// `max_length` truncation (TRL 1.x keeps them; they add nothing to the loss's gradient).
    pub pairs_unscored: usize,
    /// Kept pairs with a side longer than `max_length` (cut when collated).
    pub pairs_over_max_length: usize,
    /// The first `max_reported_reasons` skip/drop messages, each naming file, line and field.
    pub reasons: Vec<String>,
    /// The data files read, in reading order (the shards a directory or glob stood for).
    pub files: Vec<std::path::PathBuf>,
}

impl DataReport {
    /// Counts a skipped or dropped record and keeps its message if there is room.
    pub(crate) fn note_skip(&mut self, err: &DataError, max_reasons: usize) {
        if matches!(err, DataError::CompletionTruncatedAway { .. }) {
            self.dropped_truncated += 1;
        } else if matches!(err, DataError::NoScoredToken { .. }) {
            self.dropped_unscored += 1;
        } else {
            self.skipped_invalid += 1;
        }
        if self.reasons.len() < max_reasons {
            self.reasons.push(err.to_string());
        }
    }

    /// Records not in the dataset: `skipped_invalid + dropped_truncated + dropped_unscored`.
    pub fn skipped_total(&self) -> usize {
        self.skipped_invalid + self.dropped_truncated + self.dropped_unscored
    }
}

/// Tokenized pairs in input order, where each came from, and the report.
#[derive(Debug, Clone, Default)]
pub struct TokenizedDataset {
    /// The pairs.
    pub pairs: Vec<TokenizedPair>,
    /// `origins[i]`: the file and line/index of `pairs[i]`.
    pub origins: Vec<RecordOrigin>,
    /// What was skipped, dropped or truncated.
    pub report: DataReport,
    /// The `max_length` the pairs will be collated with (part of the content hash).
    pub max_length: Option<usize>,
    /// The truncation mode the pairs will be collated with (part of the content hash).
    pub truncation_mode: TruncationMode,
}

impl TokenizedDataset {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Per-pair row lengths after `max_length` (input to length-grouped sampling).
    pub fn lengths(&self) -> Vec<usize> {
        self.pairs
            .iter()
            .map(|p| p.padded_len(self.max_length))
            .collect()
    }

    /// A stable 64-bit hash (FNV-1a) of every id of every pair in order, plus `max_length` and
    /// `truncation_mode`: equal hashes mean the model sees the same tokens, so a trainer can key
    /// a cache of reference log-probs on it. Padding settings are not included (they do not
    /// change log-probs). The byte layout is fixed (versioned `sdpo-data/v1`, little endian),
    /// so the value is the same on every platform and run.
    pub fn content_hash(&self) -> u64 {
        let mut hash = Fnv1a::new();
        hash.write(b"sdpo-data/v1");
        hash.write_u64(self.max_length.map_or(u64::MAX, |m| m as u64));
        hash.write(self.truncation_mode.as_str().as_bytes());
        hash.write_u64(self.pairs.len() as u64);
        for pair in &self.pairs {
            for ids in [&pair.prompt_ids, &pair.chosen_ids, &pair.rejected_ids] {
                hash.write_u64(ids.len() as u64);
                for id in ids {
                    hash.write(&id.to_le_bytes());
                }
            }
        }
        hash.finish()
    }

    /// [`Self::content_hash`] as 16 lowercase hex digits.
    pub fn content_hash_hex(&self) -> String {
        format!("{:016x}", self.content_hash())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_changes_with_ids_and_truncation() {
        let pair = TokenizedPair {
            prompt_ids: vec![1, 2],
            chosen_ids: vec![3],
            rejected_ids: vec![4],
        };
        let a = TokenizedDataset {
            pairs: vec![pair.clone()],
            ..Default::default()
        };
        let mut b = a.clone();
        assert_eq!(a.content_hash(), b.content_hash());
        b.pairs[0].rejected_ids = vec![5];
        assert_ne!(a.content_hash(), b.content_hash());
        let mut c = a.clone();
        c.max_length = Some(8);
        assert_ne!(a.content_hash(), c.content_hash());
        // Moving a token across the prompt/completion boundary changes the hash.
        let mut d = a.clone();
        d.pairs[0] = TokenizedPair {
            prompt_ids: vec![1],
            chosen_ids: vec![2, 3],
            rejected_ids: vec![4],
        };
        assert_ne!(a.content_hash(), d.content_hash());
        assert_eq!(a.content_hash_hex().len(), 16);
    }
}
