//! The inspect page: a summary (kept fractions, where kept tokens sit, the tokens kept most
//! often), then every pair with one column per threshold: the prompt, the chosen and rejected
//! completions as tokens coloured by SDPO score, kept tokens boxed, the per-sequence numbers,
//! and a tooltip per token. One self-contained HTML file.

use std::fmt::Write;

use crate::charts::{BinChart, PALETTE, bin_chart_svg};
use crate::error::ReportError;
use crate::html::{escape, number, page, percent};
use crate::inspect::{
    InspectColumn, InspectPair, InspectReport, InspectToken, POSITION_BINS, Side, visible_text,
};

const INSPECT_CSS: &str = "
.legend { display: flex; flex-wrap: wrap; gap: 18px; align-items: center; font-size: 13px; }
.scale { display: inline-block; width: 220px; height: 14px; border: 1px solid #bbb;
  vertical-align: middle; background: linear-gradient(90deg, rgb(33,102,172), #fff, rgb(178,24,43)); }
.toks { font-family: ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 13.5px;
  line-height: 2.0; word-break: break-word; }
.tok { padding: 1px 1px; margin: 0 1px 0 0; border-radius: 3px; border: 1px solid transparent;
  cursor: default; white-space: pre; }
.tok.k { border: 2px solid #111; font-weight: 700; }
.tok.d { color: #4b5563; }
.tok .ws { color: #9aa3af; }
.tok.k .ws { color: #555; }
.tok:hover { outline: 2px solid #f59e0b; }
.prompt { background: #f6f7f9; border-left: 3px solid #9aa3af; padding: 6px 10px; margin: 0 0 10px;
  white-space: pre-wrap; font-size: 13.5px; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 14px; }
.column { border: 1px solid #e3e6eb; border-radius: 6px; padding: 8px 10px; }
.column h3 { margin: 0 0 6px; }
.side { margin: 0 0 10px; }
.side-head { font-size: 12.5px; color: #374151; margin: 0 0 2px; }
.side-head b { display: inline-block; min-width: 66px; }
.side-head b.chosen { color: #047857; }
.side-head b.rejected { color: #b91c1c; }
.pairstats { font-size: 12.5px; border-top: 1px dashed #d1d5db; padding-top: 5px; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(430px, 1fr)); gap: 14px; }
figure.chart { margin: 0; }
figure.chart svg { width: 100%; height: auto; display: block; }
";

/// The background colour of a score on the diverging scale: blue (negative) through white (0)
/// to red (positive), saturating at `|score| = scale`; NaN is grey.
pub(crate) fn score_color(score: f64, scale: f64) -> (u8, u8, u8) {
    if !score.is_finite() {
        return (200, 200, 200);
    }
    let t = (score / scale).clamp(-1.0, 1.0);
    let end = if t >= 0.0 {
        (178.0, 24.0, 43.0)
    } else {
        (33.0, 102.0, 172.0)
    };
    let a = t.abs();
    let mix = |e: f64| (255.0 + (e - 255.0) * a).round() as u8;
    (mix(end.0), mix(end.1), mix(end.2))
}

/// Renders the inspect page.
///
/// # Errors
/// [`ReportError::Inspect`] if the report is inconsistent, [`ReportError::Chart`] if a chart
/// cannot be drawn.
pub fn render_inspect_html(report: &InspectReport) -> Result<String, ReportError> {
    report.validate()?;
    let scales: Vec<f64> = (0..report.columns.len())
        .map(|t| report.score_scale(t))
        .collect();
    let mut main = String::new();
    legend(&mut main, report, scales[0]);
    summary(&mut main, report)?;
    for pair in &report.pairs {
        pair_section(&mut main, report, pair, &scales);
    }
    let subtitle = format!(
        "{} · {} pairs · {} · policy {} · reference {}",
        report.source,
        report.pairs.len(),
        report.columns_heading(),
        report.policy,
        report.reference
    );
    Ok(page("SDPO token selection", &subtitle, INSPECT_CSS, &main))
}

/// Writes the inspect page to `path` (through a temporary file and a rename).
///
/// # Errors
/// As [`render_inspect_html`], or a failure to write `path`.
pub fn write_inspect_html(
    report: &InspectReport,
    path: &std::path::Path,
) -> Result<(), ReportError> {
    crate::html::write_atomically(path, &render_inspect_html(report)?)
}

fn legend(out: &mut String, report: &InspectReport, scale: f64) {
    let (r, g, b) = score_color(scale, scale);
    let (nr, ng, nb) = score_color(-scale * 0.5, scale);
    let _ = write!(
        out,
        "<section id=\"legend\">\n<h2>How to read this</h2>\n<div class=\"legend\">\
         <span>SDPO score <span class=\"mono\">{}</span> <span class=\"scale\"></span> <span class=\"mono\">+{}</span></span>\
         <span class=\"toks\"><span class=\"tok-sample k\" style=\"border:2px solid #111;font-weight:700;padding:1px 3px;background:rgb({r},{g},{b});color:#fff\">kept</span> \
         <span class=\"tok-sample\" style=\"padding:1px 3px;background:rgb({nr},{ng},{nb})\">dropped</span></span>\
         <span class=\"mono\">· space ↵ newline → tab ∅ empty</span></div>\n\
         <p class=\"note\">Score: chosen <code>ref − policy</code> (the policy under-rates a good token), \
         rejected <code>policy − ref</code> (the policy over-rates a bad token). Red = positive, blue = negative, \
         full colour at |score| ≥ {} (95th percentile of this page). Each sequence keeps its tokens with \
         score ≥ its threshold (the q-quantile of its scores); boxed bold tokens are kept. Hover a token for \
         its id, log-probs and score. Rewards are β × (Σ policy − Σ ref) over kept tokens, β = {}. \
         A token-level method's column is coloured by that method's own score (its own scale) and keeps \
         the tokens it gives a non-zero weight; hover shows the weight, its sums are weighted.</p>\n</section>\n",
        number(-scale),
        number(scale),
        number(scale),
        report.beta
    );
}

fn summary(out: &mut String, report: &InspectReport) -> Result<(), ReportError> {
    let summaries = report.summaries();
    out.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"stats\">\n<div>\n");
    out.push_str("<h3>Kept fraction per pair (chosen / rejected)</h3>\n<table>\n<tr><th>pair</th>");
    for column in &report.columns {
        let _ = write!(out, "<th class=\"num\">{}</th>", escape(&column.label()));
    }
    out.push_str("</tr>\n");
    for (p, pair) in report.pairs.iter().enumerate() {
        let _ = write!(
            out,
            "<tr><td><a href=\"#pair-{}\">{}</a></td>",
            pair.index, pair.index
        );
        for s in &summaries {
            let (c, r) = s.kept_fraction[p];
            let _ = write!(
                out,
                "<td class=\"num\">{} / {}</td>",
                percent(c),
                percent(r)
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    for s in &summaries {
        let _ = write!(
            out,
            "<h3>Kept most often, {}</h3>\n<table>\n<tr><th>token</th><th class=\"num\">id</th>\
             <th class=\"num\">kept</th><th class=\"num\">of</th></tr>\n",
            escape(&s.column.label())
        );
        if s.top_kept.is_empty() {
            out.push_str("<tr><td colspan=\"4\" class=\"note\">no token kept</td></tr>\n");
        }
        for k in &s.top_kept {
            let (text, _) = visible_text(&k.text);
            let _ = writeln!(
                out,
                "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&text),
                k.id,
                k.kept,
                k.occurrences
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</div>\n<div>\n");
    for s in &summaries {
        let chart = BinChart {
            title: format!("Where kept tokens sit ({})", s.column.label()),
            x_label: "relative position in the completion".to_string(),
            y_label: "kept tokens".to_string(),
            bars: vec![
                (
                    "chosen".to_string(),
                    PALETTE[2],
                    s.chosen_positions.iter().map(|&c| c as f64).collect(),
                ),
                (
                    "rejected".to_string(),
                    PALETTE[1],
                    s.rejected_positions.iter().map(|&c| c as f64).collect(),
                ),
            ],
        };
        let svg = bin_chart_svg(&chart, (560, 300))?;
        let _ = writeln!(
            out,
            "<figure class=\"chart\" data-bins=\"{POSITION_BINS}\">{svg}</figure>"
        );
    }
    out.push_str("</div>\n</div>\n</section>\n");
    Ok(())
}

fn token_html(
    out: &mut String,
    token: &InspectToken,
    t: usize,
    column: &InspectColumn,
    threshold: f64,
    scale: f64,
) {
    let kept = token.kept[t];
    let (r, g, b) = score_color(token.column_scores[t], scale);
    let light = (r as u32 * 299 + g as u32 * 587 + b as u32 * 114) / 1000 < 140;
    let fg = if light { ";color:#fff" } else { "" };
    let (text, newline) = visible_text(&token.text);
    // Whitespace glyphs are dimmed so words stay readable.
    let mut body = String::new();
    for c in text.chars() {
        match c {
            '·' | '↵' | '→' | '␍' => {
                let _ = write!(body, "<span class=\"ws\">{c}</span>");
            }
            c => body.push_str(&escape(&c.to_string())),
        }
    }
    let q = column.threshold;
    let verdict = match (column.is_sdpo(), kept) {
        (true, true) => format!("kept at q = {q} (score ≥ threshold {})", number(threshold)),
        (true, false) => format!(
            "dropped at q = {q} (score < threshold {})",
            number(threshold)
        ),
        (false, _) => format!(
            "{}: score {} · weight {}",
            column.method,
            number(token.column_scores[t]),
            number(token.weights[t])
        ),
    };
    let title = format!(
        "id {} · policy logp {} · ref logp {} · score {} · {verdict}",
        token.id,
        number(token.policy_logp),
        number(token.ref_logp),
        number(token.score)
    );
    let _ = write!(
        out,
        "<span class=\"tok {}\" data-id=\"{}\" style=\"background:rgb({r},{g},{b}){fg}\" title=\"{}\">{body}</span>",
        if kept { "k" } else { "d" },
        token.id,
        escape(&title)
    );
    if newline {
        out.push_str("<br>");
    }
}

fn pair_section(out: &mut String, report: &InspectReport, pair: &InspectPair, scales: &[f64]) {
    let origin = if pair.origin.is_empty() {
        String::new()
    } else {
        format!(" <span class=\"note\">{}</span>", escape(&pair.origin))
    };
    let _ = write!(
        out,
        "<section class=\"pair\" id=\"pair-{}\">\n<h2>Pair {}{origin}</h2>\n<div class=\"prompt\">{}</div>\n<div class=\"columns\">\n",
        pair.index,
        pair.index,
        escape(&pair.prompt)
    );
    for (t, (column, selection)) in report.columns.iter().zip(&pair.selections).enumerate() {
        let _ = writeln!(
            out,
            "<div class=\"column\">\n<h3>{}</h3>",
            escape(&column.label())
        );
        for side in Side::BOTH {
            let tokens = pair.tokens(side);
            let s = selection.side(side);
            let head = if column.is_sdpo() {
                format!(
                    "threshold <span class=\"mono\">{}</span>",
                    number(s.threshold)
                )
            } else {
                let total: f64 = tokens.iter().map(|tok| tok.weights[t]).sum();
                format!("Σ weight <span class=\"mono\">{}</span>", number(total))
            };
            let _ = write!(
                out,
                "<div class=\"side {name}\"><div class=\"side-head\"><b class=\"{name}\">{name}</b> \
                 {head} · kept {}/{} ({}) · Σ policy <span class=\"mono\">{}</span> \
                 · Σ ref <span class=\"mono\">{}</span></div>\n<div class=\"toks\">",
                s.kept_tokens,
                tokens.len(),
                percent(s.kept_fraction(tokens.len())),
                number(s.policy_logp_sum),
                number(s.ref_logp_sum),
                name = side.as_str(),
            );
            for token in tokens {
                token_html(out, token, t, column, s.threshold, scales[t]);
            }
            out.push_str("</div></div>\n");
        }
        let _ = writeln!(
            out,
            "<div class=\"pairstats\">rewards: chosen <span class=\"mono\">{}</span> · rejected <span class=\"mono\">{}</span> \
             · margin <b class=\"mono\">{}</b> · loss <b class=\"mono\">{}</b></div>\n</div>",
            number(selection.chosen_reward),
            number(selection.rejected_reward),
            number(selection.reward_margin),
            number(selection.loss)
        );
    }
    out.push_str("</div>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::score_color;

    #[test]
    fn diverging_scale_ends_and_middle() {
        assert_eq!(score_color(0.0, 1.0), (255, 255, 255));
        assert_eq!(score_color(5.0, 1.0), (178, 24, 43));
        assert_eq!(score_color(-1.0, 1.0), (33, 102, 172));
        assert_eq!(score_color(f64::NAN, 1.0), (200, 200, 200));
    }
}
