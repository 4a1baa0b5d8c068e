//! `funnel compare` output: rates with intervals, differences and extra-step costs, as aligned
//! text, Markdown (also the comparison section of `funnel report`) or JSON.

use funnel_analysis::Comparison;

use super::{cell, pct};
use crate::table::{render as grid, thousands};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompareFormat {
    Table,
    Json,
    Markdown,
}

pub fn render(c: &Comparison, format: CompareFormat) -> String {
    match format {
        CompareFormat::Json => {
            serde_json::to_string_pretty(c).expect("a comparison serialises") + "\n"
        }
        CompareFormat::Table => render_text(c, false),
        CompareFormat::Markdown => render_text(c, true),
    }
}

fn pp(x: f64) -> String {
    format!("{:+.1} pp", 100.0 * x)
}

fn label(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".into())
}

/// A table as Markdown (pipe table) or as aligned text.
fn table(markdown: bool, headers: &[&str], rows: &[Vec<String>]) -> String {
    if !markdown {
        return grid(headers, rows);
    }
    let names: Vec<&str> = headers.iter().map(|h| h.trim_start_matches('>')).collect();
    let align: Vec<&str> = headers
        .iter()
        .map(|h| if h.starts_with('>') { "---:" } else { "---" })
        .collect();
    let cells = |row: &[&str]| -> String {
        let escaped: Vec<String> = row.iter().map(|c| cell(c)).collect();
        escaped.join(" | ")
    };
    let mut out = format!("| {} |\n| {} |\n", cells(&names), align.join(" | "));
    for r in rows {
        let row: Vec<&str> = r.iter().map(String::as_str).collect();
        out.push_str(&format!("| {} |\n", cells(&row)));
    }
    out
}

/// The comparison for people: rates with intervals, differences, and extra-step costs.
fn render_text(c: &Comparison, markdown: bool) -> String {
    let h = |s: &str| {
        if markdown {
            format!("\n### {s}\n\n")
        } else {
            format!("\n {s}\n")
        }
    };
    let mut out = if markdown {
        format!("## {} by {} (baseline {})\n", c.funnel, c.by, c.baseline)
    } else {
        let attribution = c.attribution.as_str();
        format!(
            "{} by {} (baseline {}; persons grouped by {attribution})\n",
            c.funnel, c.by, c.baseline
        )
    };
    if c.persons_in_several_groups > 0 {
        out.push_str(&format!(
            "\n {} persons are in several groups (their step-1 events have several values); the tests treat groups as independent samples.\n",
            thousands(c.persons_in_several_groups)
        ));
    }
    out.push_str(&h("Conversion from step 1, 95% Wilson intervals"));
    let mut rows = Vec::new();
    for g in &c.groups {
        for r in &g.rates {
            rows.push(vec![
                label(&g.value),
                r.step.clone(),
                thousands(g.clicks),
                thousands(r.persons),
                pct(r.rate),
                format!("{} – {}", pct(r.ci_low), pct(r.ci_high)),
                if g.insufficient_sample {
                    "insufficient sample".into()
                } else {
                    String::new()
                },
            ]);
        }
    }
    out.push_str(&table(
        markdown,
        &[
            &c.by, "step", ">clicks", ">persons", ">rate", ">95% CI", "note",
        ],
        &rows,
    ));
    out.push_str(&h(&format!(
        "Difference to {}, Newcombe 95% intervals, Holm-adjusted p",
        c.baseline
    )));
    let rows: Vec<Vec<String>> = c
        .differences
        .iter()
        .map(|d| {
            vec![
                label(&d.group),
                d.step.clone(),
                pp(d.difference),
                format!("{} – {}", pp(d.ci_low), pp(d.ci_high)),
                d.relative_lift
                    .map_or_else(|| "-".into(), |l| format!("{:+.1}%", 100.0 * l)),
                format!("{} {:.4}", d.test, d.p_value),
                format!("{:.4}", d.p_holm),
                d.verdict().to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        markdown,
        &[
            &c.by,
            "step",
            ">difference",
            ">95% CI",
            ">lift",
            ">test p",
            ">Holm p",
            "verdict",
        ],
        &rows,
    ));
    if !c.extra_steps.is_empty() {
        out.push_str(&h(&format!(
            "Steps {} does not have: share of clicks lost there",
            c.baseline
        )));
        let rows: Vec<Vec<String>> = c
            .extra_steps
            .iter()
            .map(|s| {
                vec![
                    label(&s.group),
                    s.step.clone(),
                    thousands(s.persons_through),
                    thousands(s.lost),
                    pct(s.share_of_clicks_lost),
                ]
            })
            .collect();
        out.push_str(&table(
            markdown,
            &[&c.by, "step", ">went through", ">lost there", ">of clicks"],
            &rows,
        ));
    }
    out
}
