//! `sdpo inspect --format text`: the inspect view for a terminal. Kept tokens are in
//! brackets (and bold); with colours, each token's background follows its SDPO score (red
//! positive, blue negative, none near zero). Whitespace is visible (`·`, `↵`, `→`). The output
//! depends only on the report, so it can be golden-tested.

use std::fmt::Write;

use crate::error::ReportError;
use crate::html::{number, percent};
use crate::inspect::{InspectReport, InspectToken, POSITION_BINS, Side, visible_text};

/// Whether the text view uses ANSI colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextStyle {
    /// ANSI colours and bold (for a terminal).
    Ansi,
    /// Plain text (for pipes and files); kept tokens are still bracketed.
    Plain,
}

/// 256-colour backgrounds for positive scores, weakest first.
const POSITIVE: [u8; 3] = [224, 217, 209];
/// 256-colour backgrounds for negative scores, weakest first.
const NEGATIVE: [u8; 3] = [189, 153, 111];

/// The colour level of a score: 0 (none) to 3, signed.
fn level(score: f64, scale: f64) -> i32 {
    if !score.is_finite() {
        return 0;
    }
    let t = (score / scale).clamp(-1.0, 1.0);
    (t * 3.0).round() as i32
}

fn token(out: &mut String, token: &InspectToken, t: usize, scale: f64, style: TextStyle) {
    let kept = token.kept[t];
    let (text, newline) = visible_text(&token.text);
    // Brackets mark kept tokens; a token's own brackets are escaped.
    let text = text.replace('[', "\\[").replace(']', "\\]");
    let text = if kept { format!("[{text}]") } else { text };
    match style {
        TextStyle::Plain => out.push_str(&text),
        TextStyle::Ansi => {
            let level = level(token.column_scores[t], scale);
            let mut codes: Vec<String> = Vec::new();
            if kept {
                codes.push("1".to_string());
            }
            if level > 0 {
                codes.push(format!("48;5;{};38;5;16", POSITIVE[level as usize - 1]));
            } else if level < 0 {
                codes.push(format!("48;5;{};38;5;16", NEGATIVE[(-level) as usize - 1]));
            }
            if codes.is_empty() {
                out.push_str(&text);
            } else {
                let _ = write!(out, "\x1b[{}m{text}\x1b[0m", codes.join(";"));
            }
        }
    }
    if newline {
        out.push_str("\n    ");
    }
}

/// Renders the report for a terminal.
///
/// # Errors
/// [`ReportError::Inspect`] if the report is inconsistent.
pub fn render_inspect_text(
    report: &InspectReport,
    style: TextStyle,
) -> Result<String, ReportError> {
    report.validate()?;
    let scales: Vec<f64> = (0..report.columns.len())
        .map(|t| report.score_scale(t))
        .collect();
    let scale = scales[0];
    let mut out = String::new();
    let _ = writeln!(out, "sdpo inspect: {}", report.source);
    let _ = writeln!(
        out,
        "policy: {} | reference: {} | beta {} | {}",
        report.policy,
        report.reference,
        report.beta,
        report.columns_heading()
    );
    let _ = writeln!(
        out,
        "score: chosen ref - policy, rejected policy - ref; [token] = kept (score >= the sequence's threshold)"
    );
    if report.columns.iter().any(|c| !c.is_sdpo()) {
        let _ = writeln!(
            out,
            "a method's column: [token] = a non-zero weight; colours follow that method's own score"
        );
    }
    let _ = writeln!(
        out,
        "whitespace: · space, ↵ newline, → tab, ∅ empty token; a token's own brackets appear as \\[ \\]"
    );
    if style == TextStyle::Ansi {
        let _ = writeln!(
            out,
            "colour: \x1b[48;5;{};38;5;16m positive \x1b[0m \x1b[48;5;{};38;5;16m negative \x1b[0m score (full colour at |score| >= {})",
            POSITIVE[2],
            NEGATIVE[2],
            number(scale)
        );
    }
    for pair in &report.pairs {
        let _ = writeln!(out);
        let origin = if pair.origin.is_empty() {
            String::new()
        } else {
            format!(" ({})", pair.origin)
        };
        let _ = writeln!(out, "=== pair {}{origin} ===", pair.index);
        let (prompt, _) = visible_text(&pair.prompt);
        let _ = writeln!(out, "prompt: {prompt}");
        for (t, (column, selection)) in report.columns.iter().zip(&pair.selections).enumerate() {
            let _ = writeln!(out, "--- {} ---", column.label());
            for side in Side::BOTH {
                let tokens = pair.tokens(side);
                let s = selection.side(side);
                let head = if column.is_sdpo() {
                    format!("threshold {}", number(s.threshold))
                } else {
                    let total: f64 = tokens.iter().map(|tok| tok.weights[t]).sum();
                    format!("sum weight {}", number(total))
                };
                let _ = writeln!(
                    out,
                    "  {:<8} {head}  kept {}/{} ({})  sum policy {}  sum ref {}",
                    side.as_str(),
                    s.kept_tokens,
                    tokens.len(),
                    percent(s.kept_fraction(tokens.len())),
                    number(s.policy_logp_sum),
                    number(s.ref_logp_sum)
                );
                out.push_str("    ");
                for tok in tokens {
                    token(&mut out, tok, t, scales[t], style);
                }
                out.push('\n');
            }
            let _ = writeln!(
                out,
                "  rewards chosen {}  rejected {}  margin {}  loss {}",
                number(selection.chosen_reward),
                number(selection.rejected_reward),
                number(selection.reward_margin),
                number(selection.loss)
            );
        }
    }
    summary(&mut out, report);
    Ok(out)
}

fn summary(out: &mut String, report: &InspectReport) {
    let summaries = report.summaries();
    let _ = writeln!(out);
    let _ = writeln!(out, "=== summary ===");
    let _ = writeln!(out, "kept fraction per pair (chosen / rejected):");
    let mut header = String::from("  pair  ");
    for column in &report.columns {
        let _ = write!(header, "  {:<15}", column.label());
    }
    let _ = writeln!(out, "{}", header.trim_end());
    for (p, pair) in report.pairs.iter().enumerate() {
        let mut row = format!("  {:<6}", pair.index);
        for s in &summaries {
            let (c, r) = s.kept_fraction[p];
            let _ = write!(row, "  {:<15}", format!("{} / {}", percent(c), percent(r)));
        }
        let _ = writeln!(out, "{}", row.trim_end());
    }
    for s in &summaries {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}: kept tokens by relative position in the completion ({POSITION_BINS} bins, start to end):",
            s.column.label()
        );
        for (label, bins) in [
            ("chosen", &s.chosen_positions),
            ("rejected", &s.rejected_positions),
        ] {
            let cells: Vec<String> = bins.iter().map(|c| format!("{c:>3}")).collect();
            let _ = writeln!(out, "  {label:<8} {}", cells.join(" "));
        }
        let _ = writeln!(out, "{}: kept most often:", s.column.label());
        if s.top_kept.is_empty() {
            let _ = writeln!(out, "  (no token kept)");
        }
        for k in &s.top_kept {
            let (text, _) = visible_text(&k.text);
            let _ = writeln!(
                out,
                "  {:<16} id {:<7} kept {} of {}",
                format!("\"{text}\""),
                k.id,
                k.kept,
                k.occurrences
            );
        }
    }
}
