//! Funnel reports in each output format, one file per format.

mod csv;
mod json;
mod markdown;
mod table;

use funnel_analysis::{FunnelReport, GroupReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Markdown,
}

pub fn render(reports: &[FunnelReport], format: Format) -> String {
    match format {
        Format::Table => table::render(reports),
        Format::Json => json::render(reports),
        Format::Csv => csv::render(reports),
        Format::Markdown => markdown::render(reports),
    }
}

/// `journey = external_link, chat_type = (none)`, or `all persons` for the empty key.
fn key_label(g: &GroupReport) -> String {
    if g.key.is_empty() {
        return "all persons".into();
    }
    g.key
        .iter()
        .map(|(k, v)| format!("{k} = {}", v.as_deref().unwrap_or("(none)")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn modes_label(r: &FunnelReport) -> String {
    if r.modes.is_empty() {
        "default mode".into()
    } else {
        r.modes.join(", ")
    }
}

fn window_label(seconds: i64) -> String {
    for (unit, s) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= s && seconds % s == 0 {
            return format!("{}{unit}", seconds / s);
        }
    }
    format!("{seconds}s")
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}
