//! Funnel reports in each output format, one file per format.

pub mod compare;
mod csv;
pub mod html;
mod json;
mod markdown;
mod svg;
mod table;

use funnel_analysis::{FunnelReport, GroupReport};

pub use compare::CompareFormat;

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
    let mut parts = if r.modes.is_empty() {
        vec!["default mode".to_string()]
    } else {
        r.modes.clone()
    };
    parts.extend(r.extensions.iter().cloned());
    parts.join("; ")
}

fn window_label(seconds: i64) -> String {
    for (unit, s) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= s && seconds % s == 0 {
            return format!("{}{unit}", seconds / s);
        }
    }
    format!("{seconds}s")
}

/// What a suppressed group shows instead of its numbers.
pub(crate) const SUPPRESSED: &str =
    "suppressed: fewer step-1 persons than --min-persons (totals and \"(other)\" still count them)";

/// A Markdown table cell: `|` escaped, line breaks as spaces.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// A duration in seconds as people read it: `42s`, `3.5m`, `2.1h`, `1.5d`.
pub(crate) fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{:.1}m", secs / 60.0)
    } else if secs < 86_400.0 {
        format!("{:.1}h", secs / 3600.0)
    } else {
        format!("{:.1}d", secs / 86_400.0)
    }
}

/// Median time from the previous step, or "-".
fn median_from_previous(s: &funnel_analysis::StepReport) -> String {
    s.time_to_convert
        .as_ref()
        .and_then(|t| t.from_previous.as_ref())
        .map_or_else(|| "-".to_string(), |d| duration(d.median))
}

/// "Where the dropped went" of a group, one row per step and destination: the step, the step
/// the persons stopped at, their next event (`type` or `type: value`), persons, and their share
/// of those who stopped. Empty without `--dropped-next`.
fn dropped_next_rows(g: &GroupReport) -> Vec<[String; 5]> {
    let mut rows = Vec::new();
    for (i, s) in g.steps.iter().enumerate().skip(1) {
        let Some(next) = &s.dropped_next else {
            continue;
        };
        let stopped: u64 = next.iter().map(|d| d.persons).sum();
        for d in next {
            let what = match &d.value {
                Some(Some(v)) => format!("{}: {v}", d.event_type),
                _ => d.event_type.clone(),
            };
            rows.push([
                s.name.clone(),
                g.steps[i - 1].name.clone(),
                what,
                crate::table::thousands(d.persons),
                pct(if stopped == 0 {
                    0.0
                } else {
                    d.persons as f64 / stopped as f64
                }),
            ]);
        }
    }
    rows
}

/// The trend groups of a report, one line per period: (label of the non-period key, rows).
fn trend_tables(r: &FunnelReport) -> Vec<(String, Vec<&GroupReport>)> {
    let mut out: Vec<(String, Vec<&GroupReport>)> = Vec::new();
    for g in &r.trend {
        let rest: Vec<String> = g
            .key
            .iter()
            .filter(|(k, _)| k.as_str() != "period")
            .map(|(k, v)| format!("{k} = {}", v.as_deref().unwrap_or("(none)")))
            .collect();
        let label = if rest.is_empty() {
            "all persons".to_string()
        } else {
            rest.join(", ")
        };
        match out.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(g),
            None => out.push((label, vec![g])),
        }
    }
    // All persons first, then the breakdown values in their order.
    out.sort_by_key(|(l, _)| l != "all persons");
    out
}

fn period(g: &GroupReport) -> String {
    g.key.get("period").cloned().flatten().unwrap_or_default()
}
