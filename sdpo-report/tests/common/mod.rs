//! A small hand-built inspect report shared by the tests. Its selections are derived from the
//! token log-probs the way sdpo-core selects (per-sequence `torch.quantile`, linear
//! interpolation; kept iff `score >= threshold`), so the report is consistent; the renderers
//! under test never compute any of it.

#![allow(dead_code)]

use sdpo_report::{
    InspectColumn, InspectPair, InspectReport, InspectToken, PairSelection, SequenceSelection,
};

pub const BETA: f64 = 0.1;
pub const THRESHOLDS: [f64; 2] = [0.0, 0.6];

/// `torch.quantile(x, q)` with linear interpolation (`-inf` for an empty sequence).
fn quantile(scores: &[f64], q: f64) -> f64 {
    if scores.is_empty() {
        return f64::NEG_INFINITY;
    }
    let mut s = scores.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// One side: `(id, text, policy_logp, ref_logp)`; `chosen` decides the sign of the score.
fn side(
    tokens: &[(u32, &str, f64, f64)],
    chosen: bool,
) -> (Vec<InspectToken>, Vec<SequenceSelection>) {
    let scores: Vec<f64> = tokens
        .iter()
        .map(|&(_, _, p, r)| if chosen { r - p } else { p - r })
        .collect();
    let thresholds: Vec<f64> = THRESHOLDS.iter().map(|&q| quantile(&scores, q)).collect();
    let out_tokens = tokens
        .iter()
        .zip(&scores)
        .map(|(&(id, text, p, r), &score)| InspectToken {
            id,
            text: text.to_string(),
            policy_logp: p,
            ref_logp: r,
            score,
            kept: thresholds.iter().map(|&t| score >= t).collect(),
            weights: thresholds
                .iter()
                .map(|&t| f64::from(u8::from(score >= t)))
                .collect(),
            column_scores: vec![score; thresholds.len()],
        })
        .collect::<Vec<_>>();
    let selections = thresholds
        .iter()
        .enumerate()
        .map(|(t, &threshold)| {
            let kept: Vec<&InspectToken> = out_tokens.iter().filter(|tok| tok.kept[t]).collect();
            SequenceSelection {
                threshold,
                kept_tokens: kept.len(),
                policy_logp_sum: kept.iter().map(|tok| tok.policy_logp).sum(),
                ref_logp_sum: kept.iter().map(|tok| tok.ref_logp).sum(),
            }
        })
        .collect();
    (out_tokens, selections)
}

fn pair(
    index: usize,
    origin: &str,
    prompt: &str,
    chosen: &[(u32, &str, f64, f64)],
    rejected: &[(u32, &str, f64, f64)],
) -> InspectPair {
    let (chosen, chosen_sel) = side(chosen, true);
    let (rejected, rejected_sel) = side(rejected, false);
    let selections = chosen_sel
        .into_iter()
        .zip(rejected_sel)
        .map(|(c, r)| {
            let chosen_reward = BETA * (c.policy_logp_sum - c.ref_logp_sum);
            let rejected_reward = BETA * (r.policy_logp_sum - r.ref_logp_sum);
            let margin = chosen_reward - rejected_reward;
            PairSelection {
                chosen: c,
                rejected: r,
                chosen_reward,
                rejected_reward,
                reward_margin: margin,
                // -logsigmoid(margin), the sigmoid loss without label smoothing.
                loss: (1.0 + (-margin).exp()).ln(),
            }
        })
        .collect();
    InspectPair {
        index,
        origin: origin.to_string(),
        prompt: prompt.to_string(),
        chosen,
        rejected,
        selections,
    }
}

/// Two pairs, two thresholds (q = 0 keeps every token, q = 0.6); tokens with spaces, a
/// newline, a tab, an empty token, markup and an escape character.
pub fn sample_report() -> InspectReport {
    InspectReport {
        source: "eval_file `examples/quickstart/eval.jsonl`".to_string(),
        policy: "runs/quickstart/checkpoint-30".to_string(),
        reference: "the initial policy".to_string(),
        beta: BETA,
        columns: THRESHOLDS.iter().map(|&q| InspectColumn::sdpo(q)).collect(),
        pairs: vec![
            pair(
                0,
                "eval.jsonl line 1",
                "<|im_start|>user\nHow do I start juggling?<|im_end|>\n<|im_start|>assistant\n",
                &[
                    (8241, "Sure", -2.10, -1.50),
                    (17, "!", -0.40, -0.45),
                    (4894, " Start", -3.20, -2.20),
                    (351, " with", -0.90, -1.00),
                    (827, " two", -1.70, -1.10),
                    (8949, " balls", -2.60, -1.40),
                    (30, ".", -0.30, -0.35),
                    (198, "\n", -1.20, -1.25),
                    (2, "<|im_end|>", -0.80, -0.60),
                ],
                &[
                    (4119, "No", -1.10, -2.40),
                    (30, ".", -0.50, -0.55),
                    (28926, " Go", -2.00, -3.50),
                    (1750, " away", -1.30, -1.20),
                    (9, "\t", -0.70, -0.90),
                    (0, "", -4.00, -4.00),
                    (2, "<|im_end|>", -0.90, -0.70),
                ],
            ),
            pair(
                7,
                "eval.jsonl line 8",
                "Why <b>bold</b>?",
                &[
                    (2882, "Because", -1.00, -0.20),
                    (1038, " <b>", -2.50, -2.60),
                    (5, "\u{1b}[31m", -6.00, -6.10),
                    (2, "<|im_end|>", -0.50, -0.40),
                ],
                &[(4119, "No", -0.80, -2.90), (2, "<|im_end|>", -0.60, -0.50)],
            ),
        ],
    }
}
