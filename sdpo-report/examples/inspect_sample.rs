//! Writes the inspect views of the small hand-built report the tests use (not model output):
//! `cargo run -p sdpo-report --example inspect_sample -- OUT.html [OUT.txt]`. For trying the
//! renderers and `ci/html-check.sh` without a model.

#[path = "../tests/common/mod.rs"]
mod common;

use sdpo_report::{TextStyle, render_inspect_text, write_inspect_html};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let html = args
        .next()
        .ok_or("usage: inspect_sample OUT.html [OUT.txt]")?;
    let report = common::sample_report();
    write_inspect_html(&report, std::path::Path::new(&html))?;
    if let Some(text) = args.next() {
        std::fs::write(text, render_inspect_text(&report, TextStyle::Ansi)?)?;
    }
    eprintln!(
        "{html}: {} token elements, {} charts",
        report.html_token_elements(),
        report.columns.len()
    );
    Ok(())
}
