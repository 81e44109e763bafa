//! The inspect renderers on a hand-built report: the text view against committed golden files
//! plus the invariants they must satisfy (bracketed tokens are exactly the kept ones, colours
//! only add escape codes), the HTML view's token elements and charts, the data model's serde
//! round trip and its consistency checks.

mod common;

use std::path::PathBuf;

use common::{THRESHOLDS, sample_report};
use sdpo_report::{
    InspectReport, POSITION_BINS, ReportError, Side, TextStyle, render_inspect_html,
    render_inspect_text, visible_text,
};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares with the committed file; `SDPO_UPDATE_GOLDEN=1` rewrites it (then read the diff).
fn check_golden(name: &str, actual: &str) {
    let path = golden(name);
    if std::env::var_os("SDPO_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read golden file {}: {e}", path.display()));
    if expected != actual {
        for (n, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
            if e != a {
                panic!(
                    "{} differs at line {}:\nexpected: {e:?}\nactual:   {a:?}",
                    path.display(),
                    n + 1
                );
            }
        }
        panic!(
            "{} differs in length: {} vs {} lines",
            path.display(),
            expected.lines().count(),
            actual.lines().count()
        );
    }
}

#[test]
fn plain_text_matches_the_golden_file() {
    let text = render_inspect_text(&sample_report(), TextStyle::Plain).unwrap();
    check_golden("inspect_plain.txt", &text);
}

#[test]
fn ansi_text_matches_the_golden_file() {
    let text = render_inspect_text(&sample_report(), TextStyle::Ansi).unwrap();
    check_golden("inspect_ansi.txt", &text);
}

/// The token lines of the plain text view, in order: one per pair, threshold and side.
fn token_lines(text: &str) -> Vec<String> {
    // A token line follows a "  chosen ... threshold" or "  rejected ... threshold" line (a
    // method column's says "sum weight" instead); a newline token
    // (`↵`, possibly bracketed) continues it on the next line, indented by four spaces.
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let head = lines[i].starts_with("  chosen ") || lines[i].starts_with("  rejected ");
        if head && (lines[i].contains(" threshold ") || lines[i].contains(" sum weight ")) {
            let mut joined = lines[i + 1].strip_prefix("    ").unwrap().to_string();
            i += 2;
            while joined.ends_with('↵') || joined.ends_with("↵]") {
                joined.push('\n');
                joined.push_str(lines[i].strip_prefix("    ").unwrap());
                i += 1;
            }
            out.push(joined);
        } else {
            i += 1;
        }
    }
    out
}

/// Splits a token line into (bracketed parts, the text without markers); `\[` and `\]` are a
/// token's own brackets.
fn parse_token_line(line: &str) -> (Vec<String>, String) {
    let mut bracketed = Vec::new();
    let mut plain = String::new();
    let mut current: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let literal = match c {
            '\\' => match chars.next() {
                Some(next @ ('[' | ']')) => next,
                Some(next) => {
                    for ch in ['\\', next] {
                        plain.push(ch);
                        if let Some(cur) = current.as_mut() {
                            cur.push(ch);
                        }
                    }
                    continue;
                }
                None => '\\',
            },
            '[' => {
                assert!(current.is_none(), "nested bracket in {line:?}");
                current = Some(String::new());
                continue;
            }
            ']' => {
                bracketed.push(current.take().expect("unbalanced bracket"));
                continue;
            }
            '\n' => continue,
            c => c,
        };
        plain.push(literal);
        if let Some(cur) = current.as_mut() {
            cur.push(literal);
        }
    }
    assert!(current.is_none(), "unclosed bracket in {line:?}");
    (bracketed, plain)
}

#[test]
fn bracketed_tokens_are_exactly_the_kept_ones() {
    let report = sample_report();
    let text = render_inspect_text(&report, TextStyle::Plain).unwrap();
    let lines = token_lines(&text);
    assert_eq!(lines.len(), report.pairs.len() * THRESHOLDS.len() * 2);
    let mut checked = 0;
    let mut line = lines.iter();
    for pair in &report.pairs {
        for (t, q) in THRESHOLDS.iter().enumerate() {
            for side in Side::BOTH {
                let (bracketed, plain) = parse_token_line(line.next().unwrap());
                let tokens = pair.tokens(side);
                // What is in brackets, in order, is the kept tokens' visible text.
                let kept: Vec<String> = tokens
                    .iter()
                    .filter(|tok| tok.kept[t])
                    .map(|tok| visible_text(&tok.text).0)
                    .collect();
                assert_eq!(
                    bracketed,
                    kept,
                    "pair {} {} q={q}",
                    pair.index,
                    side.as_str(),
                );
                assert_eq!(bracketed.len(), pair.selections[t].side(side).kept_tokens);
                // Without the markers the line is every token's visible text in order.
                let all: String = tokens.iter().map(|tok| visible_text(&tok.text).0).collect();
                assert_eq!(plain, all);
                checked += 1;
            }
        }
    }
    // q = 0 keeps every token: plain DPO.
    for pair in &report.pairs {
        for side in Side::BOTH {
            assert!(pair.tokens(side).iter().all(|t| t.kept[0]));
        }
    }
    println!("checked {checked} token lines");
}

/// Removes `ESC [ ... m` sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn colours_only_add_escape_codes_and_a_legend() {
    let report = sample_report();
    let plain = render_inspect_text(&report, TextStyle::Plain).unwrap();
    let ansi = render_inspect_text(&report, TextStyle::Ansi).unwrap();
    assert!(!plain.contains('\u{1b}'), "plain text has escape codes");
    let stripped: Vec<String> = strip_ansi(&ansi)
        .lines()
        .filter(|l| !l.starts_with("colour: "))
        .map(str::to_string)
        .collect();
    let plain: Vec<&str> = plain.lines().collect();
    assert_eq!(stripped, plain);
    // Every kept token is bold, and no dropped one is.
    let kept: usize = report
        .pairs
        .iter()
        .flat_map(|p| p.selections.iter())
        .map(|s| s.chosen.kept_tokens + s.rejected.kept_tokens)
        .sum();
    let bold_kept = ansi.matches("\u{1b}[1").count();
    assert_eq!(bold_kept, kept);
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn html_has_one_element_per_token_and_threshold() {
    let report = sample_report();
    let html = render_inspect_html(&report).unwrap();
    let tokens: usize = report
        .pairs
        .iter()
        .map(|p| p.chosen.len() + p.rejected.len())
        .sum();
    assert_eq!(tokens, 22);
    let elements = count(&html, "<span class=\"tok ");
    assert_eq!(elements, tokens * THRESHOLDS.len());
    assert_eq!(elements, report.html_token_elements());
    let kept: usize = report
        .pairs
        .iter()
        .flat_map(|p| p.selections.iter())
        .map(|s| s.chosen.kept_tokens + s.rejected.kept_tokens)
        .sum();
    assert_eq!(count(&html, "<span class=\"tok k\""), kept);
    assert_eq!(count(&html, "<span class=\"tok d\""), elements - kept);
    // One tooltip per token element, with the id and both log-probs.
    assert_eq!(count(&html, "title=\"id "), elements);
    let first = &report.pairs[0].chosen[0];
    assert!(html.contains(&format!(
        "title=\"id {} · policy logp -2.1000 · ref logp -1.5000 · score 0.6000",
        first.id
    )));
    // One position histogram per threshold, one pair section each.
    assert_eq!(count(&html, "<figure class=\"chart\""), THRESHOLDS.len());
    assert_eq!(count(&html, "<section class=\"pair\""), report.pairs.len());
    // Markup in tokens and prompts is escaped; control characters are made visible.
    assert!(html.contains("Why &lt;b&gt;bold&lt;/b&gt;?"));
    assert!(html.contains("<span class=\"ws\">·</span>&lt;b&gt;"));
    assert!(html.contains("\\x1b[31m"));
    assert!(!html.contains('\u{1b}'));
    // Self-contained: nothing fetched.
    for needle in [
        "<script src",
        "<link",
        "@import",
        "<img",
        "src=\"http",
        "href=\"http",
    ] {
        assert!(!html.contains(needle), "page fetches something: {needle}");
    }
}

#[test]
fn summaries_agree_with_the_kept_flags() {
    let report = sample_report();
    let summaries = report.summaries();
    assert_eq!(summaries.len(), THRESHOLDS.len());
    for (t, s) in summaries.iter().enumerate() {
        let kept = |side: Side| -> usize {
            report
                .pairs
                .iter()
                .map(|p| p.tokens(side).iter().filter(|k| k.kept[t]).count())
                .sum()
        };
        assert_eq!(s.chosen_positions.iter().sum::<usize>(), kept(Side::Chosen));
        assert_eq!(
            s.rejected_positions.iter().sum::<usize>(),
            kept(Side::Rejected)
        );
        assert_eq!(s.chosen_positions.len(), POSITION_BINS);
        for w in s.top_kept.windows(2) {
            assert!(w[0].kept > w[1].kept || (w[0].kept == w[1].kept && w[0].id < w[1].id));
        }
        for k in &s.top_kept {
            assert!(k.kept <= k.occurrences);
        }
    }
    // q = 0 keeps everything: every kept fraction is 1 and the token kept most often is
    // `<|im_end|>` (id 2, four occurrences).
    assert!(
        summaries[0]
            .kept_fraction
            .iter()
            .all(|&(c, r)| c == 1.0 && r == 1.0)
    );
    assert_eq!(summaries[0].top_kept[0].id, 2);
    assert_eq!(summaries[0].top_kept[0].kept, 4);
    // q = 0.6 keeps fewer.
    assert!(
        summaries[1]
            .kept_fraction
            .iter()
            .all(|&(c, r)| c < 1.0 && r < 1.0)
    );
}

#[test]
fn the_model_round_trips_through_json_with_non_finite_values() {
    let mut report = sample_report();
    report.pairs[1].selections[1].loss = f64::NAN;
    report.pairs[1].selections[0].rejected.threshold = f64::NEG_INFINITY;
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"loss\":\"NaN\""));
    assert!(json.contains("\"threshold\":\"-inf\""));
    let back: InspectReport = serde_json::from_str(&json).unwrap();
    assert!(back.pairs[1].selections[1].loss.is_nan());
    report.pairs[1].selections[1].loss = 0.0;
    let mut back = back;
    back.pairs[1].selections[1].loss = 0.0;
    assert_eq!(back, report);
}

#[test]
fn inconsistent_reports_are_refused_with_the_place_named() {
    let mut report = sample_report();
    report.pairs[1].rejected[0].kept.pop();
    let err = render_inspect_html(&report).unwrap_err();
    assert!(matches!(err, ReportError::Inspect(_)));
    assert_eq!(
        err.to_string(),
        "inconsistent inspect report: pair 7 rejected token 0 (id 4119) has 1 kept flags for 2 columns"
    );

    let mut report = sample_report();
    report.pairs[0].selections[1].chosen.kept_tokens += 1;
    let err = render_inspect_text(&report, TextStyle::Plain).unwrap_err();
    assert!(
        err.to_string().contains("pair 0 chosen at q = 0.6"),
        "{err}"
    );

    let mut report = sample_report();
    report.columns.clear();
    assert!(render_inspect_text(&report, TextStyle::Plain).is_err());

    let mut report = sample_report();
    report.pairs[0].selections.pop();
    assert!(
        render_inspect_html(&report)
            .unwrap_err()
            .to_string()
            .contains("pair 0 has 1 selections")
    );
}

#[test]
fn an_empty_report_renders() {
    let mut report = sample_report();
    report.pairs.clear();
    let text = render_inspect_text(&report, TextStyle::Plain).unwrap();
    assert!(text.contains("(no token kept)"));
    let html = render_inspect_html(&report).unwrap();
    assert_eq!(count(&html, "<span class=\"tok "), 0);
}

#[test]
fn whitespace_and_control_characters_are_visible() {
    assert_eq!(visible_text(" a\tb"), ("·a→b".to_string(), false));
    assert_eq!(visible_text("x\n"), ("x↵".to_string(), true));
    assert_eq!(visible_text(""), ("∅".to_string(), false));
    assert_eq!(
        visible_text("\u{1b}\u{85}"),
        ("\\x1b\\u{85}".to_string(), false)
    );
}

/// A token-level method's column beside SDPO's: the heading names the columns, the method's
/// brackets are exactly its non-zero weights, its sides show the weight sum instead of a
/// threshold, and each HTML token of its column is coloured by the method's own score and
/// names its weight.
#[test]
fn a_method_column_shows_its_weights_and_its_own_scores() {
    let mut report = sample_report();
    report
        .columns
        .push(sdpo_report::InspectColumn::method("tisdpo"));
    for pair in &mut report.pairs {
        for side in Side::BOTH {
            let tokens = match side {
                Side::Chosen => &mut pair.chosen,
                Side::Rejected => &mut pair.rejected,
            };
            let n = tokens.len();
            for (i, token) in tokens.iter_mut().enumerate() {
                // The last token (EOS in TIS-DPO) weighs 0; the others rise with position.
                let weight = if i + 1 == n {
                    0.0
                } else {
                    0.7 + 0.1 * i as f64
                };
                token.kept.push(weight != 0.0);
                token.weights.push(weight);
                token.column_scores.push(-(i as f64));
            }
        }
        let mut selection = pair.selections[0];
        for side in Side::BOTH {
            let kept = pair
                .tokens(side)
                .iter()
                .filter(|t| *t.kept.last().unwrap())
                .count();
            match side {
                Side::Chosen => selection.chosen.kept_tokens = kept,
                Side::Rejected => selection.rejected.kept_tokens = kept,
            }
        }
        selection.chosen.threshold = f64::NAN;
        selection.rejected.threshold = f64::NAN;
        pair.selections.push(selection);
    }
    let text = render_inspect_text(&report, TextStyle::Plain).unwrap();
    assert!(text.contains("columns q = 0, q = 0.6, tisdpo"), "{text}");
    assert!(text.contains("--- tisdpo ---"), "{text}");
    assert!(text.contains("sum weight"), "{text}");
    let lines = token_lines(&text);
    assert_eq!(lines.len(), report.pairs.len() * 3 * 2);
    let mut line = lines.iter();
    for pair in &report.pairs {
        for t in 0..3 {
            for side in Side::BOTH {
                let (bracketed, _) = parse_token_line(line.next().unwrap());
                let kept: Vec<String> = pair
                    .tokens(side)
                    .iter()
                    .filter(|tok| tok.weights[t] != 0.0)
                    .map(|tok| visible_text(&tok.text).0)
                    .collect();
                assert_eq!(bracketed, kept, "pair {} column {t}", pair.index);
            }
        }
    }
    let html = render_inspect_html(&report).unwrap();
    assert!(html.contains("<h3>tisdpo</h3>"));
    assert_eq!(
        count(&html, "tisdpo: score "),
        report
            .pairs
            .iter()
            .map(|p| p.chosen.len() + p.rejected.len())
            .sum::<usize>()
    );
}
