//! Charts drawn with `plotters`' SVG backend, returned as SVG text to inline in a page.
//! Lines break at NaN values (gaps); sparse series get markers so single points show.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::ReportError;

/// Colours of the series, in order (Okabe-Ito, readable for colour-blind readers).
pub(crate) const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
];

/// One line of a chart: `(x, y)` points in x order; NaN `y` values break the line.
pub(crate) struct Line {
    /// The legend entry.
    pub label: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// The line colour.
    pub color: RGBColor,
    /// Dashed (evaluation) instead of solid (training).
    pub dashed: bool,
}

/// A line chart.
pub(crate) struct LineChart {
    /// The chart's title (also its id in errors).
    pub title: String,
    /// The x axis description.
    pub x_label: String,
    /// The lines.
    pub lines: Vec<Line>,
}

/// A bar chart of counts over equal bins of [0, 1], one group of bars per bin.
pub(crate) struct BinChart {
    /// The chart's title.
    pub title: String,
    /// The x axis description.
    pub x_label: String,
    /// The y axis description.
    pub y_label: String,
    /// One `(label, colour, values per bin)` per bar series; all have the same bin count.
    pub bars: Vec<(String, RGBColor, Vec<f64>)>,
}

/// Series with at most this many finite points are drawn with markers.
const MARKER_LIMIT: usize = 40;

fn chart_error(title: &str) -> impl Fn(String) -> ReportError + '_ {
    move |reason| ReportError::Chart {
        chart: title.to_string(),
        reason,
    }
}

/// A readable tick label for `v` on an axis spanning `span`.
pub(crate) fn tick_label(v: f64, span: f64) -> String {
    let magnitude = v.abs().max(span.abs());
    // Ticks at zero come out as tiny non-zero values (-1e-17), which would print as "-0.0".
    if v == 0.0 || v.abs() <= span.abs() * 1e-9 {
        return "0".to_string();
    }
    if !(1e-2..1e5).contains(&magnitude) {
        return format!("{v:.1e}");
    }
    let decimals = if span > 0.0 {
        (-(span / 5.0).log10().floor() as i32).clamp(0, 6) as usize
    } else {
        3
    };
    format!("{v:.decimals$}")
}

/// The range of finite values, padded so lines do not touch the frame; a single value gets a
/// range around it.
fn padded_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()) {
        let half = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return Some((lo - half, hi + half));
    }
    let pad = (hi - lo) * 0.06;
    Some((lo - pad, hi + pad))
}

/// Splits points into runs of finite values (a NaN ends a run).
fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    points
        .split(|(x, y)| !(x.is_finite() && y.is_finite()))
        .filter(|run| !run.is_empty())
        .map(<[(f64, f64)]>::to_vec)
        .collect()
}

/// Draws `chart` as an SVG of `size` pixels; `None` when no line has a finite point.
pub(crate) fn line_chart_svg(
    chart: &LineChart,
    size: (u32, u32),
) -> Result<Option<String>, ReportError> {
    let all = chart.lines.iter().flat_map(|l| l.points.iter());
    let Some((x0, x1)) = padded_range(all.clone().filter(|(_, y)| y.is_finite()).map(|&(x, _)| x))
    else {
        return Ok(None);
    };
    let Some((y0, y1)) = padded_range(all.map(|&(_, y)| y)) else {
        return Ok(None);
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_lines(&root, chart, (x0, x1), (y0, y1))
            .map_err(|e| chart_error(&chart.title)(e.to_string()))?;
        root.present()
            .map_err(|e| chart_error(&chart.title)(e.to_string()))?;
    }
    Ok(Some(svg))
}

fn draw_lines(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &LineChart,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 17))
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(62)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let (x_span, y_span) = (x1 - x0, y1 - y0);
    let x_format = move |v: &f64| tick_label(*v, x_span);
    let y_format = move |v: &f64| tick_label(*v, y_span);
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .x_labels(8)
        .y_labels(7)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .light_line_style(RGBColor(247, 247, 247))
        .bold_line_style(RGBColor(222, 222, 222))
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .draw()?;
    for line in &chart.lines {
        let style = ShapeStyle::from(&line.color).stroke_width(2);
        let finite = line.points.iter().filter(|(_, y)| y.is_finite()).count();
        for segment in segments(&line.points) {
            if line.dashed {
                ctx.draw_series(DashedLineSeries::new(segment.clone(), 6, 4, style))?;
            } else {
                ctx.draw_series(LineSeries::new(segment.clone(), style))?;
            }
            if finite <= MARKER_LIMIT || segment.len() == 1 {
                let marker = ShapeStyle::from(&line.color).filled();
                ctx.draw_series(segment.iter().map(|&point| Circle::new(point, 3, marker)))?;
            }
        }
    }
    Ok(())
}

/// The legend of a line chart as HTML (below the chart, so it never hides a line): a colour
/// swatch, solid or dashed, and the label per line.
pub(crate) fn line_legend_html(chart: &LineChart) -> String {
    let mut out = String::from("<figcaption class=\"keys\">");
    for line in &chart.lines {
        let RGBColor(r, g, b) = line.color;
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "<span class=\"key\"><span class=\"swatch\" style=\"border-top:3px {} rgb({r},{g},{b})\"></span>{}</span>",
                if line.dashed { "dashed" } else { "solid" },
                crate::html::escape(&line.label)
            ),
        );
    }
    out.push_str("</figcaption>");
    out
}

/// Draws `chart` as an SVG of `size` pixels.
pub(crate) fn bin_chart_svg(chart: &BinChart, size: (u32, u32)) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_bins(&root, chart).map_err(|e| chart_error(&chart.title)(e.to_string()))?;
        root.present()
            .map_err(|e| chart_error(&chart.title)(e.to_string()))?;
    }
    Ok(svg)
}

fn draw_bins(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &BinChart,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let bins = chart.bars.first().map_or(1, |(_, _, v)| v.len().max(1));
    let top = chart
        .bars
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max); // nan-checked: non-finite values are filtered out above
    // Head room for the legend above the tallest bar.
    let top = if top > 0.0 { top * 1.45 } else { 1.0 };
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 17))
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..1.0, 0.0..top)?;
    // Counts: integer ticks only.
    let y_format = |v: &f64| {
        if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(bins + 1)
        .y_labels((top.ceil() as usize + 1).min(7))
        .x_label_formatter(&|v: &f64| format!("{v:.1}"))
        .y_label_formatter(&y_format)
        .disable_x_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .draw()?;
    let width = 1.0 / bins as f64;
    let groups = chart.bars.len().max(1) as f64;
    for (g, (label, color, values)) in chart.bars.iter().enumerate() {
        let bar = width * 0.8 / groups;
        let style = ShapeStyle::from(color).filled();
        let drawn = ctx.draw_series(values.iter().enumerate().map(|(i, &v)| {
            let left = i as f64 * width + width * 0.1 + g as f64 * bar;
            let v = if v.is_finite() { v } else { 0.0 };
            Rectangle::new([(left, 0.0), (left + bar, v)], style)
        }))?;
        let color = *color;
        drawn
            .label(label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    ctx.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(190, 190, 190))
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_break_at_nan_and_drop_empty_runs() {
        let points = [
            (1.0, 1.0),
            (2.0, f64::NAN),
            (3.0, 3.0),
            (4.0, 4.0),
            (5.0, f64::NAN),
            (6.0, f64::NAN),
        ];
        assert_eq!(
            segments(&points),
            vec![vec![(1.0, 1.0)], vec![(3.0, 3.0), (4.0, 4.0)]]
        );
    }

    #[test]
    fn constant_and_empty_ranges() {
        assert_eq!(padded_range([2.0, 2.0].into_iter()), Some((1.8, 2.2)));
        assert_eq!(padded_range([0.0].into_iter()), Some((-1.0, 1.0)));
        assert_eq!(padded_range([f64::NAN].into_iter()), None);
    }

    #[test]
    fn tick_labels_switch_to_scientific_for_small_values() {
        assert_eq!(tick_label(0.0005, 0.001), "5.0e-4");
        assert_eq!(tick_label(0.5, 1.0), "0.5");
        assert_eq!(tick_label(12.0, 100.0), "12");
        assert_eq!(tick_label(-1e-17, 0.5), "0");
    }
}
