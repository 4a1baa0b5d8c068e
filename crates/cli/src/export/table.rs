//! Aligned text for a terminal, with a bar per step.

use funnel_analysis::FunnelReport;

use super::{key_label, modes_label, pct, window_label};
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
                    "",
                ],
                &rows,
            ));
        }
    }
    out
}
