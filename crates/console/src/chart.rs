//! Server-drawn SVG charts: a bar or line chart of one pre-aggregated series (one value per
//! label, e.g. per day), with an accessible `<title>`/`<desc>`, "nice" axis ticks, and a
//! data table that says the same in text. Input is aggregates only; this module never sees
//! call records. Output is deterministic, so it is snapshot-tested.

use std::fmt::Write;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    Bars,
    Line,
}

/// One chart: what it shows, and its points in order.
#[derive(Debug, Clone)]
pub struct Series {
    /// Short title, e.g. "Spend per day (USD)"; also the SVG `<title>`.
    pub title: String,
    /// One sentence for screen readers, e.g. "Spend per day over the last 30 days".
    pub description: String,
    pub points: Vec<(String, f64)>,
    /// How values are written in tick labels and the table.
    pub decimals: usize,
}

/// Tick values from 0 to at least `max`: 1, 2 or 5 times a power of ten apart, about five.
/// For a series of whole numbers (`whole`) ticks are whole numbers too.
pub fn ticks(max: f64, whole: bool) -> Vec<f64> {
    if !max.is_finite() || max <= 0.0 {
        return vec![0.0, 1.0];
    }
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= rough).unwrap_or(magnitude * 10.0);
    let step = if whole { step.max(1.0) } else { step };
    let count = (max / step).ceil() as usize;
    (0..=count.max(1)).map(|i| i as f64 * step).collect()
}

/// The chart as an inline `<svg>` element (`role="img"`, labelled by its title and description).
pub fn svg(series: &Series, kind: ChartKind, id: &str) -> String {
    let max = series.points.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let ticks = ticks(max, series.decimals == 0);
    let top_value = ticks.last().copied().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_h - (v / top_value) * plot_h;
    let n = series.points.len().max(1) as f64;
    let slot = plot_w / n;

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" id="{id}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title {id}-desc" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc>"#,
        escape(&series.title),
        escape(&series.description)
    );
    out.push_str(r#"<g class="axis">"#);
    for tick in &ticks {
        let ty = y(*tick);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{ty:.1}" y2="{ty:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            ty + 4.0,
            format_value(*tick, series.decimals)
        );
    }
    // Label about six points along the x axis, always the first and last.
    let every = (series.points.len() / 6).max(1);
    for (i, (label, _)) in series.points.iter().enumerate() {
        if i % every == 0 || i + 1 == series.points.len() {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                LEFT + slot * (i as f64 + 0.5),
                HEIGHT - BOTTOM + 18.0,
                escape(label)
            );
        }
    }
    out.push_str("</g>");
    match kind {
        ChartKind::Bars => {
            out.push_str(r#"<g class="bars">"#);
            for (i, (label, value)) in series.points.iter().enumerate() {
                let top = y(*value);
                let _ = write!(
                    out,
                    r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}"><title>{}: {}</title></rect>"#,
                    LEFT + slot * i as f64 + slot * 0.15,
                    slot * 0.7,
                    (TOP + plot_h - top).max(0.0),
                    escape(label),
                    format_value(*value, series.decimals)
                );
            }
            out.push_str("</g>");
        }
        ChartKind::Line => {
            let points: Vec<String> = series
                .points
                .iter()
                .enumerate()
                .map(|(i, (_, v))| format!("{:.1},{:.1}", LEFT + slot * (i as f64 + 0.5), y(*v)))
                .collect();
            let _ = write!(out, r#"<polyline class="line" fill="none" points="{}"/>"#, points.join(" "));
            for (i, (label, value)) in series.points.iter().enumerate() {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5"><title>{}: {}</title></circle>"#,
                    LEFT + slot * (i as f64 + 0.5),
                    y(*value),
                    escape(label),
                    format_value(*value, series.decimals)
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// The same data as a table (the chart's text alternative; shown in a `<details>`).
pub fn table(series: &Series) -> String {
    let mut out = format!(
        "<table class=\"chart-data\"><caption>{}</caption><thead><tr><th scope=\"col\">Day</th><th scope=\"col\">Value</th></tr></thead><tbody>",
        escape(&series.title)
    );
    for (label, value) in &series.points {
        let _ = write!(out, "<tr><td>{}</td><td>{}</td></tr>", escape(label), format_value(*value, series.decimals));
    }
    out.push_str("</tbody></table>");
    out
}

fn format_value(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// Minimal HTML/XML text escaping for the strings this module writes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Series {
        Series {
            title: "Calls per day".into(),
            description: "Calls per day, <last> 4 days".into(),
            points: vec![("12-01".into(), 3.0), ("12-02".into(), 0.0), ("12-03".into(), 7.0), ("12-04".into(), 1.0)],
            decimals: 0,
        }
    }

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(7.0, true), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(0.0, false), vec![0.0, 1.0]);
        assert_eq!(ticks(0.3, false), vec![0.0, 0.1, 0.2, 0.30000000000000004]);
        assert_eq!(ticks(1.0, true), vec![0.0, 1.0], "one call: no fractional ticks");
        assert!(ticks(123.0, false).last().copied().unwrap_or_default() >= 123.0);
    }

    #[test]
    fn bar_chart_snapshot() {
        insta::assert_snapshot!(svg(&sample(), ChartKind::Bars, "calls"));
    }

    #[test]
    fn line_chart_snapshot() {
        insta::assert_snapshot!(svg(&sample(), ChartKind::Line, "calls"));
    }

    #[test]
    fn table_snapshot_escapes_text() {
        let table = table(&sample());
        assert!(!table.contains("<last>"));
        insta::assert_snapshot!(table);
    }

    #[test]
    fn charts_are_labelled_for_assistive_technology() {
        let svg = svg(&sample(), ChartKind::Bars, "c");
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains(r#"<title id="c-title">Calls per day</title>"#));
        assert!(svg.contains("&lt;last&gt;"));
        assert_eq!(svg.matches("<rect").count(), 4);
    }
}
