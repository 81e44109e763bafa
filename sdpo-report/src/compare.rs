//! Several runs in one page (`sdpo report RUN_A RUN_B ...`): the run report's charts, one line
//! per run (train solid, eval dashed, one colour per run), the latest values side by side and
//! the configuration keys on which the runs differ.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::charts::{Line, PALETTE};
use crate::error::ReportError;
use crate::html::{escape, number, page};
use crate::metrics::{EVAL_PREFIX, MetricPoint};
use crate::run::RunReport;
use crate::run_html::{CHART_CSS, REPORT_CHARTS, points, uncharted_metrics, write_line_figure};

/// The metrics of the side-by-side table, in order.
const COMPARED: &[&str] = &[
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "sdpo/chosen_kept_fraction",
    "sdpo/rejected_kept_fraction",
    "entropy",
    "mean_token_accuracy",
    "num_tokens",
    "train_runtime",
];

const COMPARE_CSS: &str = "
td { font-family: ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace; }
";

/// Several loaded runs, each with the label its lines carry.
#[derive(Debug, Clone)]
pub struct RunComparison {
    /// `(label, run)` in the order given.
    pub runs: Vec<(String, RunReport)>,
}

/// Labels for `dirs`: the directory's name, or its whole path where two names are the same.
fn labels(dirs: &[PathBuf]) -> Vec<String> {
    let name = |d: &Path| {
        d.file_name().map_or_else(
            || d.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let names: Vec<String> = dirs.iter().map(|d| name(d)).collect();
    dirs.iter()
        .zip(&names)
        .map(|(dir, n)| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                dir.display().to_string()
            } else {
                n.clone()
            }
        })
        .collect()
}

impl RunComparison {
    /// Reads every run directory ([`RunReport::load`]).
    ///
    /// # Errors
    /// [`ReportError::TooFewRuns`] for fewer than two directories; otherwise the first run that
    /// cannot be read, by its path.
    pub fn load(run_dirs: &[PathBuf]) -> Result<Self, ReportError> {
        if run_dirs.len() < 2 {
            return Err(ReportError::TooFewRuns {
                count: run_dirs.len(),
            });
        }
        let runs = labels(run_dirs)
            .into_iter()
            .zip(run_dirs)
            .map(|(label, dir)| Ok((label, RunReport::load(dir)?)))
            .collect::<Result<_, ReportError>>()?;
        Ok(Self { runs })
    }

    /// Renders the page.
    ///
    /// # Errors
    /// [`ReportError::Chart`] if a chart cannot be drawn.
    pub fn to_html(&self) -> Result<String, ReportError> {
        let mut main = self.runs_section();
        main.push_str(&self.values_section());
        let (charts, drawn) = self.charts_section()?;
        main.push_str(&charts);
        main.push_str(&self.config_section());
        let subtitle = format!(
            "{} runs · {drawn} charts · one colour per run, train solid, eval dashed",
            self.runs.len()
        );
        Ok(page(
            &format!("Run comparison: {} runs", self.runs.len()),
            &subtitle,
            &format!("{CHART_CSS}{COMPARE_CSS}"),
            &main,
        ))
    }

    /// Writes [`Self::to_html`] to `path` (through a temporary file and a rename).
    ///
    /// # Errors
    /// As [`Self::to_html`], or a failure to write `path`.
    pub fn write_html(&self, path: &Path) -> Result<(), ReportError> {
        crate::html::write_atomically(path, &self.to_html()?)
    }

    fn runs_section(&self) -> String {
        let mut rows = String::new();
        for (i, (label, run)) in self.runs.iter().enumerate() {
            let rgb = PALETTE[i % PALETTE.len()];
            let _ = writeln!(
                rows,
                "<tr><td><span class=\"swatch\" style=\"border-top:3px solid rgb({},{},{})\"></span>\
                 {}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                rgb.0,
                rgb.1,
                rgb.2,
                escape(label),
                escape(&run.run_dir.display().to_string()),
                run.metrics.last_step().unwrap_or(0),
                run.metrics.records
            );
        }
        let repeat = if self.runs.len() > PALETTE.len() {
            format!(
                "<p class=\"note\">More runs than colours ({}): colours repeat.</p>",
                PALETTE.len()
            )
        } else {
            String::new()
        };
        format!(
            "<section id=\"runs\"><h2>Runs</h2>\n<table>\n<tr><th>run</th><th>directory</th>\
             <th class=\"num\">last step</th><th class=\"num\">records</th></tr>\n{rows}</table>\
             {repeat}</section>\n"
        )
    }

    fn values_section(&self) -> String {
        let last = |run: &RunReport, name: &str| -> Option<MetricPoint> {
            run.metrics
                .get(name)?
                .iter()
                .rev()
                .find(|p| p.value.is_finite())
                .copied()
        };
        let mut header = String::from("<tr><th>metric</th>");
        for (label, _) in &self.runs {
            let _ = write!(header, "<th class=\"num\">{}</th>", escape(label));
        }
        header.push_str("</tr>");
        let mut rows = String::new();
        for metric in COMPARED {
            for name in [metric.to_string(), format!("{EVAL_PREFIX}{metric}")] {
                let values: Vec<Option<MetricPoint>> =
                    self.runs.iter().map(|(_, run)| last(run, &name)).collect();
                if values.iter().all(Option::is_none) {
                    continue;
                }
                let _ = write!(rows, "<tr><td><code>{}</code></td>", escape(&name));
                for value in values {
                    let cell = value.map_or("–".to_string(), |p| {
                        format!(
                            "{} <span class=\"note\">@{}</span>",
                            number(p.value),
                            p.step
                        )
                    });
                    let _ = write!(rows, "<td class=\"num\">{cell}</td>");
                }
                rows.push_str("</tr>\n");
            }
        }
        format!(
            "<section id=\"latest\"><h2>Latest values</h2>\n<table>\n{header}\n{rows}</table>\
             </section>\n"
        )
    }

    fn charts_section(&self) -> Result<(String, usize), ReportError> {
        let mut charts: Vec<(String, String)> = Vec::new();
        for (title, names) in REPORT_CHARTS {
            for name in *names {
                let title = if names.len() > 1 {
                    format!("{title}: {name}")
                } else {
                    title.to_string()
                };
                charts.push((title, name.to_string()));
            }
        }
        let all_names = self
            .runs
            .iter()
            .flat_map(|(_, run)| run.metrics.series.keys().map(String::as_str));
        charts.extend(
            uncharted_metrics(all_names)
                .into_iter()
                .map(|n| (n.to_string(), n.to_string())),
        );
        let mut figures = String::new();
        let mut drawn = 0;
        for (title, name) in &charts {
            let mut lines = Vec::new();
            for (i, (label, run)) in self.runs.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                for (series, dashed, part) in [
                    (name.clone(), false, "train"),
                    (format!("{EVAL_PREFIX}{name}"), true, "eval"),
                ] {
                    if let Some(points_of_run) = run.metrics.get(&series) {
                        lines.push(Line {
                            label: format!("{label} ({part})"),
                            points: points(points_of_run),
                            color,
                            dashed,
                        });
                    }
                }
            }
            if write_line_figure(&mut figures, title, lines, name)? {
                drawn += 1;
            }
        }
        Ok((
            format!("<div class=\"charts\" id=\"charts\">\n{figures}</div>\n<p></p>\n"),
            drawn,
        ))
    }

    fn config_section(&self) -> String {
        let configs: Vec<BTreeMap<String, Value>> = self
            .runs
            .iter()
            .map(|(_, run)| match run.config.as_ref().map(|c| &c.values) {
                Some(Value::Object(map)) => map.clone().into_iter().collect(),
                _ => BTreeMap::new(),
            })
            .collect();
        let keys: BTreeSet<&String> = configs.iter().flat_map(BTreeMap::keys).collect();
        let mut rows = String::new();
        for key in keys {
            let values: Vec<Option<&Value>> = configs.iter().map(|c| c.get(key)).collect();
            if values.iter().all(|v| *v == values[0]) {
                continue;
            }
            let _ = write!(rows, "<tr><td><code>{}</code></td>", escape(key));
            for value in values {
                let text = match value {
                    None => "–".to_string(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                let _ = write!(rows, "<td>{}</td>", escape(&text));
            }
            rows.push_str("</tr>\n");
        }
        let mut header = String::from("<tr><th>key</th>");
        for (label, _) in &self.runs {
            let _ = write!(header, "<th>{}</th>", escape(label));
        }
        header.push_str("</tr>");
        let missing: Vec<&str> = self
            .runs
            .iter()
            .filter(|(_, run)| run.config.is_none())
            .map(|(label, _)| label.as_str())
            .collect();
        let note = if missing.is_empty() {
            String::new()
        } else {
            format!(
                "<p class=\"note\">No configuration found for {}.</p>",
                escape(&missing.join(", "))
            )
        };
        let body = if rows.is_empty() {
            "<p class=\"note\">The runs share every configuration key.</p>".to_string()
        } else {
            format!("<table>\n{header}\n{rows}</table>")
        };
        format!(
            "<section id=\"config\"><h2>Configuration differences</h2>\n{note}{body}</section>\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_names_unless_two_names_are_the_same() {
        let dirs = [
            PathBuf::from("runs/a"),
            PathBuf::from("runs/b"),
            PathBuf::from("other/a"),
        ];
        assert_eq!(labels(&dirs), vec!["runs/a", "b", "other/a"]);
    }
}
