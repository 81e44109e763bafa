//! The data model of `sdpo inspect`: for each pair, every completion token with its policy and
//! reference log-probs, its SDPO score, and per column (an SDPO threshold, or a token-level
//! method) whether the token is kept, its weight and the column's score; per column the
//! sequences' score thresholds, masked (weighted) sums, rewards and the loss. The trainer fills
//! it from `sdpo-core`'s own selection and weights; this crate only checks it is consistent,
//! summarises and renders it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ReportError;

/// Everything `sdpo inspect` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectReport {
    /// What was inspected, in words (e.g. ``eval_file `data/eval.jsonl` ``).
    pub source: String,
    /// The policy, in words (a checkpoint directory or the initial model).
    pub policy: String,
    /// The reference, in words (a model directory, "the initial policy", "precomputed cache").
    pub reference: String,
    /// The loss's `beta` (the rewards are `beta × (policy sum − reference sum)`).
    #[serde(with = "crate::floats")]
    pub beta: f64,
    /// The columns compared side by side (SDPO thresholds `q`, token-level methods); every
    /// `kept`, `weights`, `column_scores` and `selections` vector is indexed like this one.
    pub columns: Vec<InspectColumn>,
    /// The pairs, in the order shown.
    pub pairs: Vec<InspectPair>,
}

/// One column of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectColumn {
    /// The column's `loss_type`: `sdpo`, or a token-level method (`confpo`, `sepo`, `tisdpo`,
    /// `critical_token`, `tgdpo`).
    pub method: String,
    /// SDPO's `sdpo_threshold` quantile `q`; NaN for the other methods.
    #[serde(with = "crate::floats")]
    pub threshold: f64,
}

impl InspectColumn {
    /// SDPO at the quantile `q`.
    pub fn sdpo(q: f64) -> Self {
        Self {
            method: "sdpo".into(),
            threshold: q,
        }
    }

    /// A token-level method.
    pub fn method(name: &str) -> Self {
        Self {
            method: name.into(),
            threshold: f64::NAN,
        }
    }

    /// Whether this is an SDPO column.
    pub fn is_sdpo(&self) -> bool {
        self.method == "sdpo"
    }

    /// The column's heading: `q = 0.6`, or the method's name.
    pub fn label(&self) -> String {
        if self.is_sdpo() {
            format!("q = {}", self.threshold)
        } else {
            self.method.clone()
        }
    }
}

/// One preference pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectPair {
    /// The pair's 0-based index in its file (after skipped records).
    pub index: usize,
    /// Where the pair came from (file and line), or empty.
    #[serde(default)]
    pub origin: String,
    /// The prompt as the model saw it (decoded prompt tokens, chat template applied).
    pub prompt: String,
    /// The chosen completion's valid tokens (after truncation), in order.
    pub chosen: Vec<InspectToken>,
    /// The rejected completion's valid tokens (after truncation), in order.
    pub rejected: Vec<InspectToken>,
    /// One entry per column of [`InspectReport::columns`].
    pub selections: Vec<PairSelection>,
}

/// One completion token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectToken {
    /// The token id.
    pub id: u32,
    /// The token decoded on its own (may be empty or part of a character).
    pub text: String,
    /// The policy's log-prob of the token.
    #[serde(with = "crate::floats")]
    pub policy_logp: f64,
    /// The reference's log-prob of the token.
    #[serde(with = "crate::floats")]
    pub ref_logp: f64,
    /// The SDPO score: chosen `ref_logp − policy_logp`, rejected `policy_logp − ref_logp`.
    #[serde(with = "crate::floats")]
    pub score: f64,
    /// Per column: whether the token is kept (SDPO: `score >= ` that sequence's threshold;
    /// a weighting method: a non-zero weight).
    pub kept: Vec<bool>,
    /// Per column: the token's weight in the loss (SDPO: 1 kept, 0 dropped).
    #[serde(with = "crate::floats::vec")]
    pub weights: Vec<f64>,
    /// Per column: the column's own score of the token (SDPO: `score`), which colours it.
    #[serde(with = "crate::floats::vec")]
    pub column_scores: Vec<f64>,
}

/// The selection of one sequence in one column.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequenceSelection {
    /// The sequence's score threshold: the `q`-quantile of its scores (`-inf` without valid
    /// tokens); NaN for a method without one.
    #[serde(with = "crate::floats")]
    pub threshold: f64,
    /// Tokens kept.
    pub kept_tokens: usize,
    /// The policy's log-prob summed over the kept tokens (weighted, and divided by the
    /// method's per-sequence divisor, for a token-level method).
    #[serde(with = "crate::floats")]
    pub policy_logp_sum: f64,
    /// The reference's log-prob summed the same way.
    #[serde(with = "crate::floats")]
    pub ref_logp_sum: f64,
}

/// The selection of one pair in one column, with its rewards and loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairSelection {
    /// The chosen sequence.
    pub chosen: SequenceSelection,
    /// The rejected sequence.
    pub rejected: SequenceSelection,
    /// The chosen reward the column's loss logs (SDPO: `beta × (chosen policy sum − chosen
    /// reference sum)`).
    #[serde(with = "crate::floats")]
    pub chosen_reward: f64,
    /// The rejected reward, likewise.
    #[serde(with = "crate::floats")]
    pub rejected_reward: f64,
    /// `chosen_reward − rejected_reward`.
    #[serde(with = "crate::floats")]
    pub reward_margin: f64,
    /// The pair's loss in this column.
    #[serde(with = "crate::floats")]
    pub loss: f64,
}

/// Which completion of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// The chosen completion.
    Chosen,
    /// The rejected completion.
    Rejected,
}

impl Side {
    /// Both sides, chosen first.
    pub const BOTH: [Side; 2] = [Side::Chosen, Side::Rejected];

    /// `chosen` or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Chosen => "chosen",
            Side::Rejected => "rejected",
        }
    }
}

impl InspectPair {
    /// The tokens of `side`.
    pub fn tokens(&self, side: Side) -> &[InspectToken] {
        match side {
            Side::Chosen => &self.chosen,
            Side::Rejected => &self.rejected,
        }
    }
}

impl PairSelection {
    /// The selection of `side`.
    pub fn side(&self, side: Side) -> &SequenceSelection {
        match side {
            Side::Chosen => &self.chosen,
            Side::Rejected => &self.rejected,
        }
    }
}

/// Number of bins of the position histogram.
pub const POSITION_BINS: usize = 10;

/// How many tokens the "kept most often" lists show.
pub const TOP_TOKENS: usize = 12;

/// A token among the most often kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptToken {
    /// The token id.
    pub id: u32,
    /// Its decoded text.
    pub text: String,
    /// How many times it was kept.
    pub kept: usize,
    /// How many times it occurred in the completions shown.
    pub occurrences: usize,
}

/// The summary of one column over all pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSummary {
    /// The column.
    pub column: InspectColumn,
    /// Per pair: (chosen, rejected) kept fraction (NaN for a sequence without tokens).
    pub kept_fraction: Vec<(f64, f64)>,
    /// Kept tokens by relative position in their completion (`(i + 0.5) / len`, in
    /// [`POSITION_BINS`] equal bins): chosen.
    pub chosen_positions: [usize; POSITION_BINS],
    /// The same for rejected completions.
    pub rejected_positions: [usize; POSITION_BINS],
    /// The tokens kept most often (both sides), most first, ties by id.
    pub top_kept: Vec<KeptToken>,
}

impl SequenceSelection {
    /// Kept over valid tokens (NaN when the sequence has none).
    pub fn kept_fraction(&self, valid_tokens: usize) -> f64 {
        if valid_tokens == 0 {
            f64::NAN
        } else {
            self.kept_tokens as f64 / valid_tokens as f64
        }
    }
}

impl InspectReport {
    /// Checks the report is consistent: at least one column; per pair one selection per
    /// column; per token one `kept` flag, weight and column score per column; each
    /// selection's `kept_tokens` equal to the tokens flagged kept.
    ///
    /// # Errors
    /// [`ReportError::Inspect`] naming the pair, side and column.
    pub fn validate(&self) -> Result<(), ReportError> {
        let n = self.columns.len();
        if n == 0 {
            return Err(ReportError::Inspect("no column".to_string()));
        }
        for pair in &self.pairs {
            if pair.selections.len() != n {
                return Err(ReportError::Inspect(format!(
                    "pair {} has {} selections for {n} columns",
                    pair.index,
                    pair.selections.len()
                )));
            }
            for side in Side::BOTH {
                let tokens = pair.tokens(side);
                for (i, token) in tokens.iter().enumerate() {
                    for (what, len) in [
                        ("kept flags", token.kept.len()),
                        ("weights", token.weights.len()),
                        ("column scores", token.column_scores.len()),
                    ] {
                        if len != n {
                            return Err(ReportError::Inspect(format!(
                                "pair {} {} token {i} (id {}) has {len} {what} for {n} columns",
                                pair.index,
                                side.as_str(),
                                token.id,
                            )));
                        }
                    }
                }
                for (t, selection) in pair.selections.iter().enumerate() {
                    let flagged = tokens.iter().filter(|tok| tok.kept[t]).count();
                    let claimed = selection.side(side).kept_tokens;
                    if flagged != claimed {
                        return Err(ReportError::Inspect(format!(
                            "pair {} {} at {}: {claimed} kept tokens stated, {flagged} flagged",
                            pair.index,
                            side.as_str(),
                            self.columns[t].label()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The columns in words: `thresholds q = 0, 0.6` when every column is SDPO's, else
    /// `columns q = 0.6, sepo`.
    pub fn columns_heading(&self) -> String {
        if self.columns.iter().all(InspectColumn::is_sdpo) {
            let qs: Vec<String> = self
                .columns
                .iter()
                .map(|c| c.threshold.to_string())
                .collect();
            format!("thresholds q = {}", qs.join(", "))
        } else {
            let labels: Vec<String> = self.columns.iter().map(InspectColumn::label).collect();
            format!("columns {}", labels.join(", "))
        }
    }

    /// Number of token elements the HTML view has: every completion token once per column.
    pub fn html_token_elements(&self) -> usize {
        self.pairs
            .iter()
            .map(|p| p.chosen.len() + p.rejected.len())
            .sum::<usize>()
            * self.columns.len()
    }

    /// The scale of column `t`'s colour map: the 95th percentile of `|column score|` over
    /// every token shown (nearest rank), so one outlier does not wash out the rest; larger
    /// scores saturate. 1.0 when there is no finite non-zero score. The methods' scores have
    /// their own units, so each column has its own scale.
    pub fn score_scale(&self, t: usize) -> f64 {
        let mut magnitudes: Vec<f64> = self
            .pairs
            .iter()
            .flat_map(|p| p.chosen.iter().chain(&p.rejected))
            .filter_map(|tok| tok.column_scores.get(t))
            .map(|s| s.abs())
            .filter(|s| s.is_finite() && *s > 0.0)
            .collect();
        if magnitudes.is_empty() {
            return 1.0;
        }
        magnitudes.sort_by(f64::total_cmp);
        let rank = ((magnitudes.len() as f64 * 0.95).ceil() as usize).clamp(1, magnitudes.len());
        magnitudes[rank - 1]
    }

    /// The per-column summaries, in column order.
    pub fn summaries(&self) -> Vec<ColumnSummary> {
        (0..self.columns.len()).map(|t| self.summary(t)).collect()
    }

    fn summary(&self, t: usize) -> ColumnSummary {
        let mut chosen_positions = [0; POSITION_BINS];
        let mut rejected_positions = [0; POSITION_BINS];
        let mut counts: BTreeMap<u32, KeptToken> = BTreeMap::new();
        let mut kept_fraction = Vec::with_capacity(self.pairs.len());
        for pair in &self.pairs {
            let fraction = |side: Side| {
                pair.selections.get(t).map_or(f64::NAN, |s| {
                    s.side(side).kept_fraction(pair.tokens(side).len())
                })
            };
            kept_fraction.push((fraction(Side::Chosen), fraction(Side::Rejected)));
            for side in Side::BOTH {
                let tokens = pair.tokens(side);
                let bins = match side {
                    Side::Chosen => &mut chosen_positions,
                    Side::Rejected => &mut rejected_positions,
                };
                for (i, token) in tokens.iter().enumerate() {
                    let kept = token.kept.get(t).copied().unwrap_or(false);
                    let entry = counts.entry(token.id).or_insert_with(|| KeptToken {
                        id: token.id,
                        text: token.text.clone(),
                        kept: 0,
                        occurrences: 0,
                    });
                    entry.occurrences += 1;
                    if kept {
                        entry.kept += 1;
                        let position = (i as f64 + 0.5) / tokens.len() as f64;
                        let bin =
                            ((position * POSITION_BINS as f64) as usize).min(POSITION_BINS - 1);
                        bins[bin] += 1;
                    }
                }
            }
        }
        let mut top_kept: Vec<KeptToken> = counts.into_values().filter(|k| k.kept > 0).collect();
        top_kept.sort_by(|a, b| b.kept.cmp(&a.kept).then(a.id.cmp(&b.id)));
        top_kept.truncate(TOP_TOKENS);
        ColumnSummary {
            column: self.columns[t].clone(),
            kept_fraction,
            chosen_positions,
            rejected_positions,
            top_kept,
        }
    }
}

/// A token's text with whitespace and control characters made visible: space `·`, newline
/// `↵`, tab `→`, carriage return `␍`, other control characters as `\xNN`/`\u{N}`, and `∅`
/// for an empty token. Returns the visible text and whether it ends with a newline (the
/// renderers break the line there).
pub fn visible_text(text: &str) -> (String, bool) {
    if text.is_empty() {
        return ("∅".to_string(), false);
    }
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        match c {
            ' ' => out.push('·'),
            '\n' => out.push('↵'),
            '\t' => out.push('→'),
            '\r' => out.push('␍'),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    (out, text.ends_with('\n'))
}
