//! Markdown: a section per funnel, a table per group.

use funnel_analysis::FunnelReport;

use super::{
    SUPPRESSED, cell, dropped_next_rows, key_label, median_from_previous, modes_label, pct, period,
    trend_tables, window_label,
};
use crate::table::thousands;

pub fn render(reports: &[FunnelReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!(
            "## {}\n\nWindow {} from the step-1 event, {}.\n\n",
            cell(&r.funnel),
            window_label(r.window_seconds),
            modes_label(r)
        ));
        for g in &r.groups {
            out.push_str(&format!("### {}\n\n", cell(&key_label(g))));
            if g.suppressed {
                out.push_str(&format!("{SUPPRESSED}\n\n"));
                continue;
            }
            out.push_str("| step | persons | from previous | from first | dropped | pending | median time from previous | |\n");
            out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
            for s in &g.steps {
                // A text bar, scaled to step 1, for terminals and pull requests.
                let filled = (s.conversion_from_first * 20.0).round() as usize;
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | `{}{}` |\n",
                    cell(&s.name),
                    thousands(s.persons),
                    pct(s.conversion_from_previous),
                    pct(s.conversion_from_first),
                    thousands(s.dropped_from_previous),
                    thousands(s.pending),
                    median_from_previous(s),
                    "█".repeat(filled.min(20)),
                    "·".repeat(20 - filled.min(20))
                ));
            }
            if g.excluded_open_windows > 0 {
                out.push_str(&format!(
                    "\n{} persons left out: window still open at the cutoff.\n",
                    thousands(g.excluded_open_windows)
                ));
            }
            let next = dropped_next_rows(g);
            if !next.is_empty() {
                out.push_str("\nWhere the dropped went (their next event within the window):\n\n| not reached | stopped at | next | persons | of stopped |\n| --- | --- | --- | ---: | ---: |\n");
                for r in next {
                    let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
                    out.push_str(&format!("| {} |\n", cells.join(" | ")));
                }
            }
            out.push('\n');
        }
        for (label, groups) in trend_tables(r) {
            let interval = r.interval.as_deref().unwrap_or("period");
            out.push_str(&format!("### Trend by {interval}: {}\n\n", cell(&label)));
            let names: Vec<String> = r.groups[0].steps.iter().map(|s| cell(&s.name)).collect();
            out.push_str(&format!(
                "| {interval} | {} | first to last |\n",
                names.join(" | ")
            ));
            out.push_str(&format!(
                "| --- |{} ---: |\n",
                " ---: |".repeat(names.len())
            ));
            for g in groups {
                if g.suppressed {
                    let dashes = vec!["-"; g.steps.len()].join(" | ");
                    out.push_str(&format!("| {} | {dashes} | suppressed |\n", period(g)));
                    continue;
                }
                let counts: Vec<String> = g.steps.iter().map(|s| thousands(s.persons)).collect();
                let conv = g
                    .steps
                    .last()
                    .map_or_else(String::new, |s| pct(s.conversion_from_first));
                out.push_str(&format!(
                    "| {} | {} | {conv} |\n",
                    period(g),
                    counts.join(" | ")
                ));
            }
            out.push('\n');
        }
    }
    out
}
