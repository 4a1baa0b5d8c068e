//! Aligned text for a terminal, with a bar per step.

use funnel_analysis::FunnelReport;

use super::{
    SUPPRESSED, dropped_next_rows, key_label, median_from_previous, modes_label, pct, period,
    trend_tables, window_label,
};
use crate::table::{render as grid, thousands};

const BAR: usize = 24;

pub fn render(reports: &[FunnelReport]) -> String {
    let mut out = String::new();
    for (n, r) in reports.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}  (window {}, {})\n",
            r.funnel,
            window_label(r.window_seconds),
            modes_label(r)
        ));
        for g in &r.groups {
            out.push_str(&format!("\n {}\n", key_label(g)));
            if g.suppressed {
                out.push_str(&format!("  {SUPPRESSED}\n"));
                continue;
            }
            let first = g.steps.first().map_or(0, |s| s.persons);
            let rows: Vec<Vec<String>> = g
                .steps
                .iter()
                .map(|s| {
                    let filled = if first == 0 {
                        0
                    } else {
                        ((s.persons as f64 / first as f64) * BAR as f64).round() as usize
                    };
                    vec![
                        s.name.clone(),
                        thousands(s.persons),
                        pct(s.conversion_from_previous),
                        pct(s.conversion_from_first),
                        thousands(s.dropped_from_previous),
                        if s.pending > 0 {
                            thousands(s.pending)
                        } else {
                            String::new()
                        },
                        median_from_previous(s),
                        format!("{}{}", "#".repeat(filled), ".".repeat(BAR - filled)),
                    ]
                })
                .collect();
            out.push_str(&grid(
                &[
                    "step",
                    ">persons",
                    ">from prev",
                    ">from first",
                    ">dropped",
                    ">pending",
                    ">median time",
                    "",
                ],
                &rows,
            ));
            if g.excluded_open_windows > 0 {
                out.push_str(&format!(
                    "  ({} persons left out: window still open at the cutoff)\n",
                    thousands(g.excluded_open_windows)
                ));
            }
            let next = dropped_next_rows(g);
            if !next.is_empty() {
                out.push_str("  where the dropped went (their next event within the window)\n");
                let rows: Vec<Vec<String>> = next.into_iter().map(Vec::from).collect();
                out.push_str(&grid(
                    &[
                        "not reached",
                        "stopped at",
                        "next",
                        ">persons",
                        ">of stopped",
                    ],
                    &rows,
                ));
            }
        }
        for (label, groups) in trend_tables(r) {
            out.push_str(&format!(
                "\n trend by {}, {label}\n",
                r.interval.as_deref().unwrap_or("period")
            ));
            let mut headers: Vec<String> = vec![r.interval.clone().unwrap_or_default()];
            headers.extend(r.groups[0].steps.iter().map(|s| format!(">{}", s.name)));
            headers.push(">first to last".into());
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|g| {
                    let mut row = vec![period(g)];
                    if g.suppressed {
                        row.extend(g.steps.iter().map(|_| "-".to_string()));
                        row.push("suppressed".into());
                        return row;
                    }
                    row.extend(g.steps.iter().map(|s| thousands(s.persons)));
                    row.push(
                        g.steps
                            .last()
                            .map_or_else(String::new, |s| pct(s.conversion_from_first)),
                    );
                    row
                })
                .collect();
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            out.push_str(&grid(&headers, &rows));
        }
    }
    out
}
