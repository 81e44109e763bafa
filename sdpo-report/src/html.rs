//! Pieces shared by the HTML pages: escaping, number formatting, the page shell (inline
//! CSS, nothing fetched) and writing a page atomically.

use std::fmt::Write;
use std::path::Path;

use crate::error::{ReportError, io};

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number for tables and tooltips: 4 significant decimals, `NaN`, `inf`, `-inf` spelled out.
pub(crate) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// A fraction as a percentage with one decimal.
pub(crate) fn percent(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}%", v * 100.0)
    } else {
        number(v)
    }
}

/// The CSS both pages share.
const BASE_CSS: &str = "
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif;
  margin: 0; background: #f4f5f7; color: #1d2430; line-height: 1.45; }
header { background: #1d2a3a; color: #fff; padding: 18px 28px; }
header h1 { margin: 0; font-size: 22px; font-weight: 600; }
header p { margin: 4px 0 0; color: #c6d0dc; font-size: 14px; }
main { padding: 18px 28px 40px; max-width: 1500px; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 14px 18px;
  margin: 0 0 18px; }
h2 { font-size: 17px; margin: 0 0 10px; }
h3 { font-size: 15px; margin: 12px 0 6px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 3px 10px 3px 0; vertical-align: top; }
th { color: #4a5566; font-weight: 600; border-bottom: 1px solid #dde1e7; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace; }
.note { color: #5b6677; font-size: 13px; }
.warn { background: #fff6e0; border-color: #f0c36d; }
.warn li { font-size: 13px; }
";

/// A whole page: `title`, the header's subtitle, extra CSS and the body's `<main>` content.
pub(crate) fn page(title: &str, subtitle: &str, css: &str, main: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"sdpo-report {}\">\n<title>{}</title>\n\
         <style>{BASE_CSS}{css}</style>\n</head>\n<body>\n<header><h1>{}</h1><p>{}</p></header>\n\
         <main>\n{main}</main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        escape(title),
        escape(title),
        escape(subtitle),
    );
    out
}

/// Writes `text` to `path` through a temporary sibling file and a rename.
pub(crate) fn write_atomically(path: &Path, text: &str) -> Result<(), ReportError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report.html".to_string());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn numbers_spell_out_non_finite_values() {
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::NEG_INFINITY), "-inf");
        assert_eq!(number(0.5), "0.5000");
        assert_eq!(number(2e-5), "2.000e-5");
    }
}
