//! Seeing what a run did, without burn: the run report (charts of `metrics.jsonl`, the
//! configuration and the data, as one self-contained HTML file) and the views of `sdpo inspect`
//! (which tokens SDPO keeps, as HTML or terminal text).
//!
//! - [`write_run_report`] / [`RunReport`]: read a run directory (`output_dir`) and render it.
//! - [`RunComparison`]: several runs in one page, the same charts with one line per run.
//! - [`InspectReport`]: the data model of `sdpo inspect`, filled by the trainer from
//!   `sdpo-core`'s selection; [`render_inspect_html`] and [`render_inspect_text`] render it.
//!
//! Charts are drawn with `plotters`' SVG backend and inlined; the pages fetch nothing.

#![warn(missing_docs)]

mod charts;
mod compare;
mod error;
mod floats;
mod html;
mod inspect;
mod inspect_html;
mod inspect_text;
mod metrics;
mod run;
mod run_html;

pub use compare::RunComparison;
pub use error::ReportError;
pub use inspect::{
    ColumnSummary, InspectColumn, InspectPair, InspectReport, InspectToken, KeptToken,
    POSITION_BINS, PairSelection, SequenceSelection, Side, TOP_TOKENS, visible_text,
};
pub use inspect_html::{render_inspect_html, write_inspect_html};
pub use inspect_text::{TextStyle, render_inspect_text};
pub use metrics::{END_OF_RUN_METRICS, EVAL_PREFIX, MetricPoint, MetricsLog, read_metrics_file};
pub use run::{CheckpointInfo, RunConfig, RunReport};
pub use run_html::{NOT_CHARTED, REPORT_CHARTS, write_run_report};
/// The run directory's names and summaries (`sdpo-run`), as the report reads them.
pub use sdpo_run::{
    DATA_SUMMARY_FILE, DataSummary, METRICS_FILE, RUN_CONFIG_FILE, SplitSummary, TRAINER_STATE_FILE,
};

impl RunReport {
    /// Renders the report as one self-contained HTML page.
    ///
    /// # Errors
    /// [`ReportError::Chart`] if a chart cannot be drawn.
    pub fn to_html(&self) -> Result<String, ReportError> {
        run_html::render_run_report(self)
    }

    /// Writes [`Self::to_html`] to `path` (through a temporary file and a rename).
    ///
    /// # Errors
    /// As [`Self::to_html`], or a failure to write `path`.
    pub fn write_html(&self, path: &std::path::Path) -> Result<(), ReportError> {
        html::write_atomically(path, &self.to_html()?)
    }
}
