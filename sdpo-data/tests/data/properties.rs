//! Collation invariants, stated in words and checked on random pairs:
//!
//! 1. chosen and rejected rows share one length `T` (one matrix of `2B` rows);
//! 2. in every row, real tokens come first and padding only at the end (the attention mask is
//!    a run of ones then zeros, and padded positions hold the pad id);
//! 3. the completion-mask positions of a row hold exactly that row's completion tokens, each
//!    once and in order, unless `max_length` cut the row (then a contiguous, in-order part of
//!    them: a prefix with `keep_start`, a suffix with `keep_end`);
//! 4. the unmasked real tokens are the row's prompt (or the part of it that survived);
//! 5. `T` is the longest kept row, rounded up to `pad_to_multiple_of`.

use proptest::prelude::*;
use sdpo_data::{Collator, DataConfig, TokenizedPair, TruncationMode};

const PAD: u32 = 0;

fn ids(max: usize, min: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..50_000, min..=max)
}

fn pairs() -> impl Strategy<Value = Vec<TokenizedPair>> {
    prop::collection::vec(
        (ids(12, 0), ids(10, 1), ids(10, 1)).prop_map(|(p, c, r)| TokenizedPair {
            prompt_ids: p,
            chosen_ids: c,
            rejected_ids: r,
        }),
        1..6,
    )
}

fn modes() -> impl Strategy<Value = TruncationMode> {
    prop_oneof![
        Just(TruncationMode::KeepEnd),
        Just(TruncationMode::KeepStart)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn collation_invariants(
        pairs in pairs(),
        max_length in prop::option::of(1usize..25),
        mode in modes(),
        multiple in prop::option::of(1usize..9),
    ) {
        let config = DataConfig {
            max_length,
            truncation_mode: Some(mode),
            pad_to_multiple_of: multiple,
            ..DataConfig::v0_28()
        };
        let refs: Vec<&TokenizedPair> = pairs.iter().collect();
        let batch = Collator::new(&config, PAD).unwrap().collate(&refs);
        let b = pairs.len();
        let t = batch.seq_len;
        // (1) one length for both halves.
        prop_assert_eq!(batch.batch_size, b);
        prop_assert_eq!(batch.input_ids.len(), 2 * b * t);
        prop_assert_eq!(batch.attention_mask.len(), 2 * b * t);
        prop_assert_eq!(batch.completion_mask.len(), 2 * b * t);
        let mut longest = 0;
        for row in 0..2 * b {
            let pair = &pairs[row % b];
            let completion = if row < b { &pair.chosen_ids } else { &pair.rejected_ids };
            let full_len = pair.prompt_ids.len() + completion.len();
            let ids = batch.input_ids_row(row);
            let attn = batch.attention_mask_row(row);
            let comp = batch.completion_mask_row(row);
            // (2) ones then zeros; pad id under zeros; completion only where attended.
            let real = attn.iter().take_while(|&&a| a == 1).count();
            prop_assert!(attn[real..].iter().all(|&a| a == 0), "padding inside row {}", row);
            prop_assert!(ids[real..].iter().all(|&id| id == i64::from(PAD)));
            prop_assert!(comp[real..].iter().all(|&m| m == 0));
            longest = longest.max(real);
            let truncated = real < full_len;
            prop_assert_eq!(batch.truncated[row], truncated);
            if let Some(max) = max_length { prop_assert!(real <= max); }
            let under_mask: Vec<u32> = (0..real).filter(|&i| comp[i] == 1).map(|i| ids[i] as u32).collect();
            let prompt_part: Vec<u32> = (0..real).filter(|&i| comp[i] == 0).map(|i| ids[i] as u32).collect();
            // Completion positions are contiguous and follow the prompt part.
            let first = comp[..real].iter().position(|&m| m == 1).unwrap_or(real);
            prop_assert!(comp[first..real].iter().all(|&m| m == 1));
            if !truncated {
                // (3) every completion token exactly once, in order; (4) the whole prompt.
                prop_assert_eq!(real, full_len);
                prop_assert_eq!(&under_mask, completion);
                prop_assert_eq!(&prompt_part, &pair.prompt_ids);
            } else {
                let full: Vec<u32> = pair.prompt_ids.iter().chain(completion.iter()).copied().collect();
                match mode {
                    TruncationMode::KeepStart => {
                        prop_assert!(completion.starts_with(&under_mask));
                        prop_assert_eq!(&ids[..real].iter().map(|&x| x as u32).collect::<Vec<_>>()[..], &full[..real]);
                    }
                    TruncationMode::KeepEnd => {
                        prop_assert!(completion.ends_with(&under_mask));
                        prop_assert!(pair.prompt_ids.ends_with(&prompt_part));
                        prop_assert_eq!(&ids[..real].iter().map(|&x| x as u32).collect::<Vec<_>>()[..], &full[full_len - real..]);
                        // keep_end never loses the whole completion.
                        prop_assert!(!under_mask.is_empty());
                    }
                }
            }
        }
        // (5) T is the longest row, rounded up.
        let m = multiple.unwrap_or(1);
        prop_assert_eq!(t, longest.div_ceil(m) * m);
    }
}
