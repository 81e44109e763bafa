//! Collation: TRL's `DataCollatorForPreference` docstring example, padding, truncation.

use sdpo_data::{Collator, DataConfig, TokenizedDataset, TokenizedPair, TruncationMode};

fn pair(prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> TokenizedPair {
    TokenizedPair {
        prompt_ids: prompt.to_vec(),
        chosen_ids: chosen.to_vec(),
        rejected_ids: rejected.to_vec(),
    }
}

fn collator(max_length: Option<usize>, mode: TruncationMode, multiple: Option<usize>) -> Collator {
    let config = DataConfig {
        max_length,
        truncation_mode: Some(mode),
        pad_to_multiple_of: multiple,
        ..DataConfig::v0_28()
    };
    Collator::new(&config, 0).unwrap()
}

#[test]
fn matches_trl_collator_example() {
    // The example in TRL's DataCollatorForPreference docstring (pad_token_id = 0).
    let pairs = [
        pair(&[1, 2, 3], &[4, 5], &[6]),
        pair(&[7, 8], &[9], &[10, 11]),
    ];
    let refs: Vec<&TokenizedPair> = pairs.iter().collect();
    let batch = collator(None, TruncationMode::KeepEnd, None).collate(&refs);
    assert_eq!(batch.batch_size, 2);
    assert_eq!(batch.shape(), [4, 5]);
    #[rustfmt::skip]
    assert_eq!(batch.input_ids, vec![
        1, 2, 3, 4, 5,
        7, 8, 9, 0, 0,
        1, 2, 3, 6, 0,
        7, 8, 10, 11, 0,
    ]);
    #[rustfmt::skip]
    assert_eq!(batch.attention_mask, vec![
        1, 1, 1, 1, 1,
        1, 1, 1, 0, 0,
        1, 1, 1, 1, 0,
        1, 1, 1, 1, 0,
    ]);
    #[rustfmt::skip]
    assert_eq!(batch.completion_mask, vec![
        0, 0, 0, 1, 1,
        0, 0, 1, 0, 0,
        0, 0, 0, 1, 0,
        0, 0, 1, 1, 0,
    ]);
    assert_eq!(batch.truncated, vec![false; 4]);
    assert_eq!(batch.input_ids_row(3), &[7, 8, 10, 11, 0]);
}

#[test]
fn pads_with_the_pad_id_to_a_multiple() {
    let pairs = [pair(&[1], &[2, 3], &[4])];
    let config = DataConfig {
        max_length: None,
        pad_to_multiple_of: Some(4),
        ..DataConfig::v0_28()
    };
    let batch = Collator::new(&config, 99).unwrap().collate(&[&pairs[0]]);
    assert_eq!(batch.seq_len, 4);
    assert_eq!(batch.input_ids, vec![1, 2, 3, 99, 1, 4, 99, 99]);
    assert_eq!(batch.attention_mask, vec![1, 1, 1, 0, 1, 1, 0, 0]);
}

#[test]
fn max_length_keep_start_cuts_the_completion_end() {
    let p = pair(&[1, 2, 3], &[4, 5, 6], &[7]);
    let batch = collator(Some(4), TruncationMode::KeepStart, None).collate(&[&p]);
    assert_eq!(batch.seq_len, 4);
    assert_eq!(batch.input_ids, vec![1, 2, 3, 4, 1, 2, 3, 7]);
    assert_eq!(batch.completion_mask, vec![0, 0, 0, 1, 0, 0, 0, 1]);
    assert_eq!(batch.truncated, vec![true, false]);
}

#[test]
fn max_length_keep_end_cuts_the_prompt_start() {
    let p = pair(&[1, 2, 3], &[4, 5, 6], &[7]);
    let batch = collator(Some(4), TruncationMode::KeepEnd, None).collate(&[&p]);
    assert_eq!(batch.seq_len, 4);
    // Chosen row keeps its last 4 tokens; rejected (4 long) is untouched.
    assert_eq!(batch.input_ids, vec![3, 4, 5, 6, 1, 2, 3, 7]);
    assert_eq!(batch.completion_mask, vec![0, 1, 1, 1, 0, 0, 0, 1]);
    assert_eq!(batch.attention_mask, vec![1; 8]);
}

#[test]
fn collate_indices_records_the_pairs_and_checks_range() {
    let dataset = TokenizedDataset {
        pairs: vec![pair(&[1], &[2], &[3]), pair(&[4], &[5, 6], &[7])],
        ..Default::default()
    };
    let c = collator(None, TruncationMode::KeepEnd, None);
    let batch = c.collate_indices(&dataset, &[1, 0]).unwrap();
    assert_eq!(batch.pair_indices, vec![1, 0]);
    assert_eq!(batch.input_ids_row(0), &[4, 5, 6]);
    assert_eq!(batch.input_ids_row(1), &[1, 2, 0]);
    let err = c.collate_indices(&dataset, &[2]).unwrap_err();
    assert!(
        err.to_string()
            .contains("pair index 2 out of range for 2 pairs")
    );
}

#[test]
fn empty_batch_is_empty() {
    let batch = collator(Some(8), TruncationMode::KeepEnd, Some(8)).collate(&[]);
    assert_eq!(batch.shape(), [0, 0]);
    assert!(batch.input_ids.is_empty());
}
