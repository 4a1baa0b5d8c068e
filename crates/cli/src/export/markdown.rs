//! Markdown: a section per funnel, a table per group.

use funnel_analysis::FunnelReport;

use super::{key_label, modes_label, pct, window_label};
use crate::table::thousands;

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

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
            out.push_str("| step | persons | from previous | from first | dropped |\n");
            out.push_str("| --- | ---: | ---: | ---: | ---: |\n");
            for s in &g.steps {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    cell(&s.name),
                    thousands(s.persons),
                    pct(s.conversion_from_previous),
                    pct(s.conversion_from_first),
                    thousands(s.dropped_from_previous)
                ));
            }
            out.push('\n');
        }
    }
    out
}
