//! Synthetic preference pairs whose token importance is known.
//!
//! A word-level vocabulary (one word = one token): context words for prompts, neutral words for
//! the body of completions, and *answer* words `a0`..`a7`. A completion is `COMPLETION_LEN`
//! neutral words; chosen and rejected share them except at
//!
//! - **decisive** positions: the `i`-th decisive position holds an answer word; the chosen
//!   completion has the right one, `a<k>` with `k` = (id of the prompt's `i`-th word) mod 8, the
//!   rejected a wrong one. These tokens carry the preference, and learning it means learning
//!   the mapping from the prompt to the answer;
//! - **distractor** positions: chosen and rejected have two different random neutral words,
//!   unrelated to the preference (token-level label noise).
//!
//! The generator records both sets of positions, so the selection of a run can be scored.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

/// Words in a prompt.
pub const PROMPT_LEN: usize = 6;
/// Words in a completion (an EOS token follows, as TRL appends it).
pub const COMPLETION_LEN: usize = 12;
/// Decisive positions per completion (in [`Kind::Noisy`] and [`Kind::Clean`] pairs).
pub const DECISIVE: usize = 2;
/// Distractor positions per completion (in [`Kind::Noisy`] and [`Kind::DistractorOnly`] pairs).
pub const DISTRACTORS: usize = 3;

const CONTEXT_WORDS: usize = 40;
const ANSWER_WORDS: usize = 8;
const NEUTRAL_WORDS: usize = 24;

/// The special tokens, ids 0, 1, 2.
pub const PAD: &str = "<pad>";
/// End of sequence.
pub const EOS: &str = "</s>";
/// Unknown word (never generated).
pub const UNK: &str = "<unk>";

/// SplitMix64: a small deterministic generator, so the data depends only on the seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `k` distinct positions of `0..n`, in increasing order.
    pub fn positions(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        let mut chosen = all[..k].to_vec();
        chosen.sort_unstable();
        chosen
    }
}

/// Which differences a pair has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Decisive and distractor differences (the training data of every arm).
    Noisy,
    /// Decisive differences only (the stronger reference's training data; held-out accuracy).
    Clean,
    /// Distractor differences only (held-out: a policy that learned nothing spurious has a
    /// margin of 0 on them).
    DistractorOnly,
}

/// One generated pair with the positions that differ.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Prompt words.
    pub prompt: Vec<String>,
    /// Chosen completion words.
    pub chosen: Vec<String>,
    /// Rejected completion words.
    pub rejected: Vec<String>,
    /// Completion positions holding a good (chosen) / bad (rejected) word.
    pub decisive: Vec<usize>,
    /// Completion positions holding two unrelated neutral words.
    pub distractors: Vec<usize>,
}

/// Every word of the vocabulary, by id.
pub fn vocabulary() -> Vec<String> {
    let mut words: Vec<String> = [PAD, EOS, UNK].iter().map(|w| w.to_string()).collect();
    words.extend((0..CONTEXT_WORDS).map(|i| format!("c{i:02}")));
    words.extend((0..ANSWER_WORDS).map(|i| format!("a{i}")));
    words.extend((0..NEUTRAL_WORDS).map(|i| format!("n{i:02}")));
    words
}

/// The right answer word's index for a prompt word `c<n>`: `n` mod 8.
fn answer(prompt_word: &str) -> usize {
    prompt_word[1..].parse::<usize>().unwrap_or(0) % ANSWER_WORDS
}

/// `n` pairs of `kind`.
pub fn generate(kind: Kind, n: usize, rng: &mut Rng) -> Vec<Pair> {
    let neutral = |rng: &mut Rng| format!("n{:02}", rng.below(NEUTRAL_WORDS));
    (0..n)
        .map(|_| {
            let prompt: Vec<String> = (0..PROMPT_LEN)
                .map(|_| format!("c{:02}", rng.below(CONTEXT_WORDS)))
                .collect();
            let body: Vec<String> = (0..COMPLETION_LEN).map(|_| neutral(rng)).collect();
            let (decisive_n, distractor_n) = match kind {
                Kind::Noisy => (DECISIVE, DISTRACTORS),
                Kind::Clean => (DECISIVE, 0),
                Kind::DistractorOnly => (0, DISTRACTORS),
            };
            let differing = rng.positions(COMPLETION_LEN, decisive_n + distractor_n);
            // Which of the differing positions are decisive: a random subset.
            let pick = rng.positions(differing.len(), decisive_n);
            let decisive: Vec<usize> = pick.iter().map(|&i| differing[i]).collect();
            let distractors: Vec<usize> = differing
                .iter()
                .copied()
                .filter(|p| !decisive.contains(p))
                .collect();
            let (mut chosen, mut rejected) = (body.clone(), body);
            for (i, &p) in decisive.iter().enumerate() {
                let k = answer(&prompt[i]);
                let wrong = (k + 1 + rng.below(ANSWER_WORDS - 1)) % ANSWER_WORDS;
                chosen[p] = format!("a{k}");
                rejected[p] = format!("a{wrong}");
            }
            for &p in &distractors {
                let a = rng.below(NEUTRAL_WORDS);
                let b = (a + 1 + rng.below(NEUTRAL_WORDS - 1)) % NEUTRAL_WORDS;
                chosen[p] = format!("n{a:02}");
                rejected[p] = format!("n{b:02}");
            }
            Pair {
                prompt,
                chosen,
                rejected,
                decisive,
                distractors,
            }
        })
        .collect()
}

/// Writes `pairs` as standard-format JSONL (`prompt`, `chosen`, `rejected`; completions start
/// with a space, as a tokenizer that splits on whitespace expects).
pub fn write_jsonl(path: &Path, pairs: &[Pair]) -> Result<()> {
    let lines: Vec<String> = pairs
        .iter()
        .map(|p| {
            json!({
                "prompt": p.prompt.join(" "),
                "chosen": format!(" {}", p.chosen.join(" ")),
                "rejected": format!(" {}", p.rejected.join(" ")),
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n")
        .with_context(|| format!("write {}", path.display()))
}

/// Writes a word-level `tokenizer.json` and `tokenizer_config.json` for [`vocabulary`] into
/// `dir`.
pub fn write_tokenizer(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let words = vocabulary();
    let vocab: serde_json::Map<String, serde_json::Value> = words
        .iter()
        .enumerate()
        .map(|(id, w)| (w.clone(), json!(id)))
        .collect();
    let special = |id: usize| {
        json!({"id": id, "content": words[id], "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0), special(1), special(2)],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
    });
    let config = json!({"eos_token": EOS, "pad_token": PAD, "unk_token": UNK});
    for (name, value) in [
        ("tokenizer.json", tokenizer),
        ("tokenizer_config.json", config),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, value.to_string())
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_differ_exactly_where_the_generator_says() {
        let mut rng = Rng::new(7);
        for kind in [Kind::Noisy, Kind::Clean, Kind::DistractorOnly] {
            for p in generate(kind, 50, &mut rng) {
                let differing: Vec<usize> = (0..COMPLETION_LEN)
                    .filter(|&i| p.chosen[i] != p.rejected[i])
                    .collect();
                let mut expected = [p.decisive.clone(), p.distractors.clone()].concat();
                expected.sort_unstable();
                assert_eq!(differing, expected, "{kind:?}");
                for (n, &i) in p.decisive.iter().enumerate() {
                    assert!(p.chosen[i].starts_with('a') && p.rejected[i].starts_with('a'));
                    assert_eq!(p.chosen[i], format!("a{}", answer(&p.prompt[n])));
                }
                for &i in &p.distractors {
                    assert!(p.chosen[i].starts_with('n') && p.rejected[i].starts_with('n'));
                }
                let (d, x) = match kind {
                    Kind::Noisy => (DECISIVE, DISTRACTORS),
                    Kind::Clean => (DECISIVE, 0),
                    Kind::DistractorOnly => (0, DISTRACTORS),
                };
                assert_eq!((p.decisive.len(), p.distractors.len()), (d, x));
            }
        }
    }
}
