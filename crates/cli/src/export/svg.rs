//! Small SVG charts for the HTML report.
//!
//! Written by hand rather than with a plotting crate: the report must be byte-identical for the
//! same store and options, self-contained (no fonts, scripts or network), and small; the charts
//! are bars, whiskers and polylines with text labels, which the browser lays out itself.

use std::fmt::Write;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One bar of a funnel chart.
pub struct Bar {
    pub label: String,
    pub value: u64,
    pub note: String,
    /// Marked with a hatched extension: persons whose window is still open.
    pub pending: u64,
}

/// Horizontal funnel bars, scaled to the longest bar, with conversion notes.
pub fn funnel(bars: &[Bar]) -> String {
    let max = bars.iter().map(|b| b.value + b.pending).max().unwrap_or(0);
    funnel_scaled(bars, max)
}

/// [`funnel`] with bars scaled to `max` (a full-width bar).
pub fn funnel_scaled(bars: &[Bar], max: u64) -> String {
    let (w, row, label_w, bar_w) = (900, 34, 180, 330);
    let h = row * bars.len() + 10;
    let max = max.max(1);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#
    );
    for (i, b) in bars.iter().enumerate() {
        let y = 5 + i * row;
        let len = (b.value as f64 / max as f64 * bar_w as f64).round() as usize;
        let pend = (b.pending as f64 / max as f64 * bar_w as f64).round() as usize;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end" class="lbl">{}</text><rect x="{label_w}" y="{y}" width="{len}" height="{}" class="bar"/>"#,
            label_w - 8,
            y + 19,
            esc(&b.label),
            row - 10
        );
        if pend > 0 {
            let _ = write!(
                s,
                r#"<rect x="{}" y="{y}" width="{pend}" height="{}" class="pending"><title>{} pending</title></rect>"#,
                label_w + len,
                row - 10,
                b.pending
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="val">{}</text>"#,
            label_w + len + pend + 6,
            y + 19,
            esc(&b.note)
        );
    }
    s.push_str("</svg>");
    s
}

/// One estimate with its interval, for a forest plot.
pub struct Estimate {
    pub label: String,
    pub value: f64,
    pub low: f64,
    pub high: f64,
    pub strong: bool,
}

/// Differences with 95% intervals around a zero line (values are fractions, shown in points).
pub fn forest(items: &[Estimate]) -> String {
    let (w, row, label_w, plot_w) = (720, 26, 260, 380);
    let h = row * items.len() + 30;
    let span = items
        .iter()
        .flat_map(|e| [e.low.abs(), e.high.abs()])
        .fold(0.05f64, f64::max);
    let x = |v: f64| label_w as f64 + (v + span) / (2.0 * span) * plot_w as f64;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#
    );
    let _ = write!(
        s,
        r#"<line x1="{0:.1}" x2="{0:.1}" y1="0" y2="{1}" class="zero"/>"#,
        x(0.0),
        h - 20
    );
    for (i, e) in items.iter().enumerate() {
        let y = 14 + i * row;
        let cls = if e.strong { "est strong" } else { "est" };
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end" class="lbl">{}</text><line x1="{:.1}" x2="{:.1}" y1="{y}" y2="{y}" class="{cls}"/><circle cx="{:.1}" cy="{y}" r="4" class="{cls}"/>"#,
            label_w - 8,
            y + 4,
            esc(&e.label),
            x(e.low),
            x(e.high),
            x(e.value)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{}" class="axis" text-anchor="middle">{:+.0} pp</text><text x="{:.1}" y="{}" class="axis" text-anchor="middle">0</text><text x="{:.1}" y="{}" class="axis" text-anchor="middle">{:+.0} pp</text>"#,
        x(-span),
        h - 5,
        -span * 100.0,
        x(0.0),
        h - 5,
        x(span),
        h - 5,
        span * 100.0
    );
    s.push_str("</svg>");
    s
}

/// Lines over periods; values are fractions.
pub fn lines(periods: &[String], series: &[(String, Vec<Option<f64>>)]) -> String {
    lines_dashed(periods, series, series.len())
}

/// [`lines`], with the series from `dashed_from` on drawn dashed (what would have been).
pub fn lines_dashed(
    periods: &[String],
    series: &[(String, Vec<Option<f64>>)],
    dashed_from: usize,
) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 260.0, 50.0, 170.0, 15.0, 40.0);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .fold(0.01f64, f64::max)
        * 1.1;
    let n = periods.len().max(2) - 1;
    let x = |i: usize| left + i as f64 / n as f64 * (w - left - right);
    let y = |v: f64| top + (1.0 - v / max) * (h - top - bottom);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = write!(
            s,
            r#"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="axis" text-anchor="end">{:.0}%</text>"#,
            w - right,
            y(v),
            y(v),
            left - 6.0,
            y(v) + 4.0,
            v * 100.0
        );
    }
    for (i, p) in periods.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" class="axis" text-anchor="middle">{}</text>"#,
            x(i),
            h - bottom + 18.0,
            esc(p)
        );
    }
    for (k, (name, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" class="line s{}{}"/>"#,
            points.join(" "),
            k % 6,
            if k >= dashed_from { " dashed" } else { "" }
        );
        if let Some((i, v)) = values
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, v)| v.map(|v| (i, v)))
        {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" class="lbl s{}t">{}</text>"#,
                x(i) + 8.0,
                y(v) + 4.0,
                k % 6,
                esc(name)
            );
        }
    }
    s.push_str("</svg>");
    s
}
