//! The run report page: where the run stands, what to look at (gaps, resumes, a record being
//! written), the charts (train solid, eval dashed, on the same axes), the configuration and the
//! data summary.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

use crate::charts::{Line, LineChart, PALETTE, line_chart_svg, line_legend_html};
use crate::error::ReportError;
use crate::html::{escape, number, page, write_atomically};
use crate::metrics::{EVAL_PREFIX, MetricPoint, MetricsLog};
use sdpo_run::DataSummary;

use crate::run::RunReport;

/// The size of one chart in pixels (it scales with the page).
const CHART_SIZE: (u32, u32) = (620, 340);

/// The charts of the report: a title and the metrics it draws (train names; the `eval_`
/// counterparts join them on the same axes). Metrics not listed get a chart each, except the
/// [`NOT_CHARTED`] ones. TensorBoard's custom-scalars layout of a run shows the same charts.
pub const REPORT_CHARTS: &[(&str, &[&str])] = &[
    ("Loss", &["loss"]),
    (
        "Reward accuracy (rewards/accuracies)",
        &["rewards/accuracies"],
    ),
    ("Reward margin (rewards/margins)", &["rewards/margins"]),
    (
        "Rewards (rewards/chosen, rewards/rejected)",
        &["rewards/chosen", "rewards/rejected"],
    ),
    (
        "SDPO kept fraction",
        &["sdpo/chosen_kept_fraction", "sdpo/rejected_kept_fraction"],
    ),
    (
        "SDPO score threshold (per-sequence mean)",
        &["sdpo/chosen_threshold", "sdpo/rejected_threshold"],
    ),
    ("Learning rate", &["learning_rate"]),
    ("Gradient norm (before clipping)", &["grad_norm"]),
    (
        "Log-probs (logps/chosen, logps/rejected)",
        &["logps/chosen", "logps/rejected"],
    ),
    (
        "Mean logits (logits/chosen, logits/rejected)",
        &["logits/chosen", "logits/rejected"],
    ),
    ("Entropy of the next-token distribution", &["entropy"]),
    (
        "Top-1 token accuracy, chosen (mean_token_accuracy)",
        &["mean_token_accuracy"],
    ),
    ("Tokens trained on (num_tokens)", &["num_tokens"]),
];

/// Metrics shown as numbers rather than charts: the end-of-run record and evaluation's speed
/// (`eval_` prefix removed).
pub const NOT_CHARTED: &[&str] = &[
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "total_flos",
    "train_loss",
    "runtime",
    "samples_per_second",
    "steps_per_second",
];

/// The metrics of the "latest values" table, in order.
const HEADLINE: &[&str] = &[
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "sdpo/chosen_kept_fraction",
    "sdpo/rejected_kept_fraction",
    "entropy",
    "mean_token_accuracy",
    "num_tokens",
    "learning_rate",
    "grad_norm",
];

/// The CSS of the chart grid and the legends (the run report and the comparison page).
pub(crate) const CHART_CSS: &str = "
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 14px; }
figure.chart { margin: 0; background: #fff; border: 1px solid #dde1e7; border-radius: 8px;
  padding: 6px; }
figure.chart svg { width: 100%; height: auto; display: block; }
.keys { display: flex; flex-wrap: wrap; justify-content: center; gap: 4px 16px; font-size: 12.5px;
  color: #374151; padding: 0 0 4px; }
.key { white-space: nowrap; }
.swatch { display: inline-block; width: 24px; height: 0; vertical-align: middle; margin-right: 6px; }
";

const RUN_CSS: &str = "
.kv td:first-child { color: #4a5566; white-space: nowrap; }
.kv td { font-family: ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace; }
.kv-wrap { column-width: 420px; column-gap: 32px; }
.kv tr { break-inside: avoid; }
#data table { margin-bottom: 6px; }
";

/// The metric a series name belongs to, without the `eval_` prefix.
pub(crate) fn base_name(name: &str) -> &str {
    name.strip_prefix(EVAL_PREFIX).unwrap_or(name)
}

/// Renders the whole report page.
///
/// # Errors
/// [`ReportError::Chart`] if plotting fails.
pub(crate) fn render_run_report(report: &RunReport) -> Result<String, ReportError> {
    let metrics = &report.metrics;
    let mut main = String::new();
    main.push_str(&notes_section(report));
    main.push_str(&latest_section(metrics));
    let (charts, drawn) = charts_section(metrics)?;
    main.push_str(&charts);
    main.push_str(&data_section(report.data.as_ref()));
    main.push_str(&config_section(report));
    let run = report.run_dir.display().to_string();
    let step = metrics.last_step().unwrap_or(0);
    let mut subtitle = match report.checkpoint.as_ref().and_then(|c| c.max_steps) {
        Some(total) => format!("step {step} of {total}"),
        None => format!("step {step}"),
    };
    let _ = write!(
        subtitle,
        " · {} records · {drawn} charts · train solid, eval dashed",
        metrics.records
    );
    Ok(page(
        &format!("Run report: {run}"),
        &subtitle,
        &format!("{CHART_CSS}{RUN_CSS}"),
        &main,
    ))
}

/// Everything a reader should know before trusting the curves.
fn notes_section(report: &RunReport) -> String {
    let metrics = &report.metrics;
    let mut notes: Vec<String> = Vec::new();
    if metrics.partial_last_line {
        notes.push(format!(
            "The last line of <code>{}</code> is incomplete (the run is writing it); it is left out.",
            escape(&metrics.path.display().to_string())
        ));
    }
    if metrics.superseded > 0 {
        notes.push(format!(
            "{} records were superseded by a resumed run that logged the same steps again; the newer ones are shown.",
            metrics.superseded
        ));
    }
    for (name, points) in &metrics.series {
        let gaps: Vec<&MetricPoint> = points.iter().filter(|p| !p.value.is_finite()).collect();
        if gaps.is_empty() {
            continue;
        }
        let steps: Vec<String> = gaps.iter().take(8).map(|p| p.step.to_string()).collect();
        let more = if gaps.len() > 8 { ", ..." } else { "" };
        notes.push(format!(
            "<code>{}</code>: {} of {} values are null/NaN (shown as gaps), at steps {}{more}.",
            escape(name),
            gaps.len(),
            points.len(),
            steps.join(", ")
        ));
    }
    if report.config.is_none() {
        notes.push(
            "No configuration found (no run_config.json and no checkpoint with trainer_state.json); \
             pass the run's TOML with <code>sdpo report --config FILE</code> to show it."
                .to_string(),
        );
    }
    if let Some(data) = &report.data {
        for problem in &data.unreadable {
            notes.push(escape(problem));
        }
    }
    if notes.is_empty() {
        return String::new();
    }
    let mut out = String::from("<section class=\"warn\" id=\"notes\">\n<h2>Notes</h2>\n<ul>\n");
    for note in notes {
        let _ = writeln!(out, "<li>{note}</li>");
    }
    out.push_str("</ul>\n</section>\n");
    out
}

/// The last finite value of `name`, with its step.
fn last_finite(metrics: &MetricsLog, name: &str) -> Option<MetricPoint> {
    metrics
        .get(name)?
        .iter()
        .rev()
        .find(|p| p.value.is_finite())
        .copied()
}

fn latest_section(metrics: &MetricsLog) -> String {
    let mut rows = String::new();
    for name in HEADLINE {
        let train = last_finite(metrics, name);
        let eval = last_finite(metrics, &format!("{EVAL_PREFIX}{name}"));
        if train.is_none() && eval.is_none() {
            continue;
        }
        let cell = |p: Option<MetricPoint>| match p {
            Some(p) => format!(
                "<td class=\"num\">{}</td><td class=\"num note\">{}</td>",
                number(p.value),
                p.step
            ),
            None => "<td class=\"num\">–</td><td></td>".to_string(),
        };
        let _ = writeln!(
            rows,
            "<tr><td><code>{}</code></td>{}{}</tr>",
            escape(name),
            cell(train),
            cell(eval)
        );
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut summary = String::new();
    for name in NOT_CHARTED {
        for full in [name.to_string(), format!("{EVAL_PREFIX}{name}")] {
            if let Some(p) = last_finite(metrics, &full) {
                let _ = write!(
                    summary,
                    "<tr><td><code>{}</code></td><td class=\"num\">{}</td>\
                     <td class=\"num note\">{}</td></tr>",
                    escape(&full),
                    number(p.value),
                    p.step
                );
            }
        }
    }
    if !summary.is_empty() {
        summary = format!(
            "<h3>Speed and totals</h3>\n<table>\n<tr><th>metric</th><th class=\"num\">value</th>\
             <th class=\"num\">step</th></tr>\n{summary}\n</table>\n"
        );
    }
    format!(
        "<section id=\"latest\">\n<h2>Latest values</h2>\n<table>\n<tr><th>metric</th>\
         <th class=\"num\">train</th><th class=\"num\">step</th><th class=\"num\">eval</th>\
         <th class=\"num\">step</th></tr>\n{rows}</table>\n{summary}</section>\n"
    )
}

/// Metrics of `names` (series names) that no chart of [`REPORT_CHARTS`] draws and that are
/// charted at all: each gets a chart of its own.
pub(crate) fn uncharted_metrics<'a>(names: impl Iterator<Item = &'a str>) -> BTreeSet<&'a str> {
    let known: BTreeSet<&str> = REPORT_CHARTS
        .iter()
        .flat_map(|(_, n)| n.iter().copied())
        .collect();
    names
        .map(base_name)
        .filter(|k| !known.contains(k) && !NOT_CHARTED.contains(k))
        .collect()
}

pub(crate) fn points(series: &[MetricPoint]) -> Vec<(f64, f64)> {
    series.iter().map(|p| (p.step as f64, p.value)).collect()
}

/// The chart section and the number of charts drawn.
/// Draws `lines` against the step as one `<figure>` appended to `figures`, tagged with the
/// metric names it shows; false when nothing finite was drawn.
pub(crate) fn write_line_figure(
    figures: &mut String,
    title: &str,
    lines: Vec<Line>,
    metric_names: &str,
) -> Result<bool, ReportError> {
    let chart = LineChart {
        title: title.to_string(),
        x_label: "step".to_string(),
        lines,
    };
    let Some(svg) = line_chart_svg(&chart, CHART_SIZE)? else {
        return Ok(false);
    };
    let _ = writeln!(
        figures,
        "<figure class=\"chart\" data-metrics=\"{}\">{svg}{}</figure>",
        escape(metric_names),
        line_legend_html(&chart)
    );
    Ok(true)
}

fn charts_section(metrics: &MetricsLog) -> Result<(String, usize), ReportError> {
    let mut groups: Vec<(String, Vec<String>)> = REPORT_CHARTS
        .iter()
        .map(|(title, names)| {
            (
                title.to_string(),
                names.iter().map(|n| n.to_string()).collect(),
            )
        })
        .collect();
    let others = uncharted_metrics(metrics.series.keys().map(String::as_str));
    groups.extend(
        others
            .into_iter()
            .map(|n| (n.to_string(), vec![n.to_string()])),
    );

    let mut figures = String::new();
    let mut drawn = 0;
    for (title, names) in &groups {
        let mut lines = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let short = name.rsplit('/').next().unwrap_or(name);
            let label = if names.len() > 1 {
                short.split('_').next().unwrap_or(short).to_string()
            } else {
                name.clone()
            };
            if let Some(series) = metrics.get(name) {
                lines.push(Line {
                    label: format!("{label} (train)"),
                    points: points(series),
                    color,
                    dashed: false,
                });
            }
            if let Some(series) = metrics.get(&format!("{EVAL_PREFIX}{name}")) {
                lines.push(Line {
                    label: format!("{label} (eval)"),
                    points: points(series),
                    color,
                    dashed: true,
                });
            }
        }
        if lines.is_empty() {
            continue;
        }
        if write_line_figure(&mut figures, title, lines, &names.join(" "))? {
            drawn += 1;
        }
    }
    if drawn == 0 {
        return Ok((
            "<section id=\"charts\"><h2>Charts</h2><p class=\"note\">No metric has a finite value yet.</p></section>\n"
                .to_string(),
            0,
        ));
    }
    Ok((
        format!("<div class=\"charts\" id=\"charts\">\n{figures}</div>\n<p></p>\n"),
        drawn,
    ))
}

/// A JSON value as a table cell.
fn config_value(value: &Value) -> String {
    match value {
        Value::Null => "–".to_string(),
        Value::String(s) => escape(s),
        other => escape(&other.to_string()),
    }
}

fn config_section(report: &RunReport) -> String {
    let mut out = String::from("<section id=\"config\">\n<h2>Configuration</h2>\n");
    let Some(config) = &report.config else {
        out.push_str("<p class=\"note\">Not found.</p>\n</section>\n");
        return out;
    };
    let _ = writeln!(
        out,
        "<p class=\"note\">From <code>{}</code>.</p>",
        escape(&config.source)
    );
    if let Some(checkpoint) = &report.checkpoint {
        let _ = writeln!(
            out,
            "<p class=\"note\">Newest checkpoint: <code>{}</code> (step {}; {} checkpoint{} kept).</p>",
            escape(&checkpoint.dir.display().to_string()),
            checkpoint.global_step,
            checkpoint.count,
            if checkpoint.count == 1 { "" } else { "s" }
        );
    }
    out.push_str("<div class=\"kv-wrap\"><table class=\"kv\">\n");
    match &config.values {
        Value::Object(map) => {
            for (key, value) in map {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    escape(key),
                    config_value(value)
                );
            }
        }
        other => {
            let _ = writeln!(
                out,
                "<tr><td>value</td><td>{}</td></tr>",
                config_value(other)
            );
        }
    }
    out.push_str("</table></div>\n</section>\n");
    out
}

fn optional(v: Option<usize>) -> String {
    v.map_or_else(|| "–".to_string(), |v| v.to_string())
}

fn data_section(data: Option<&DataSummary>) -> String {
    let mut out = String::from("<section id=\"data\">\n<h2>Data</h2>\n");
    let Some(data) = data else {
        out.push_str("<p class=\"note\">No data summary (no configuration to find the files).</p>\n</section>\n");
        return out;
    };
    if !data.source.is_empty() {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(&data.source));
    }
    if !data.splits.is_empty() {
        out.push_str(
            "<table>\n<tr><th>split</th><th>file</th><th class=\"num\">records</th>\
             <th class=\"num\">pairs</th><th class=\"num\">skipped invalid</th>\
             <th class=\"num\">dropped (truncation)</th><th class=\"num\">prompts truncated</th>\
             <th class=\"num\">over max_length</th></tr>\n",
        );
        for split in &data.splits {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&split.split),
                escape(&split.file.display().to_string()),
                split.records_read,
                split.pairs,
                split.skipped_invalid,
                optional(split.dropped_truncated),
                optional(split.prompts_truncated),
                optional(split.pairs_over_max_length),
            );
        }
        out.push_str("</table>\n");
        for split in data.splits.iter().filter(|s| !s.reasons.is_empty()) {
            let _ = writeln!(out, "<h3>Skipped in {}</h3>\n<ul>", escape(&split.split));
            for reason in &split.reasons {
                let _ = writeln!(out, "<li class=\"note\">{}</li>", escape(reason));
            }
            out.push_str("</ul>\n");
        }
    }
    for problem in &data.unreadable {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(problem));
    }
    out.push_str("</section>\n");
    out
}

/// Reads the run in `run_dir` and writes its report to `out_path` as one self-contained HTML
/// file (written to a temporary file next to it and renamed, so a browser never sees half a
/// report).
///
/// # Errors
/// Whatever [`RunReport::load`] reports, or a failure to write `out_path`.
pub fn write_run_report(run_dir: &Path, out_path: &Path) -> Result<(), ReportError> {
    let report = RunReport::load(run_dir)?;
    write_atomically(out_path, &render_run_report(&report)?)
}
