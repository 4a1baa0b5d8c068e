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

/// A difference (a fraction) in percentage points: `+3.1 pp` (also the report's).
pub(super) fn pp(x: f64) -> String {
    format!("{:+.1} pp", 100.0 * x)
}

/// A group or stratum value, `(none)` for a missing one (also the report's).
pub(super) fn label(v: &Option<String>) -> String {
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
        if g.suppressed {
            let mut row = vec![label(&g.value)];
            row.extend(["-"; 5].map(String::from));
            row.push("suppressed (under --min-persons)".into());
            rows.push(row);
            continue;
        }
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
    out.push_str(&adjusted_sections(c, markdown, &h));
    out.push_str(&split_sections(c, markdown, &h));
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

fn opt_pp(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), pp)
}

fn opt_p(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |p| format!("{p:.4}"))
}

fn ci_pp(ci: Option<[f64; 2]>) -> String {
    ci.map_or_else(|| "-".into(), |[l, h]| format!("{} – {}", pp(l), pp(h)))
}

/// A stratum as `column=value` pairs (`(none)` for a missing value).
fn stratum(v: &funnel_analysis::StratumValue) -> String {
    v.iter()
        .map(|(k, x)| format!("{k}={}", label(x)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The adjusted differences and their strata (`--adjust-for`).
fn adjusted_sections(c: &Comparison, markdown: bool, h: &dyn Fn(&str) -> String) -> String {
    let Some(by) = c.adjusted_by().map(|b| b.join(", ")) else {
        return String::new();
    };
    let mut out = h(&format!(
        "Difference to {} within {by} (Mantel-Haenszel, Sato 95% CI; odds ratio with RGB 95% CI; CMH and Breslow-Day-Tarone tests)",
        c.baseline
    ));
    let rows: Vec<Vec<String>> = c
        .differences
        .iter()
        .filter_map(|d| d.adjusted.as_ref().map(|a| (d, a)))
        .map(|(d, a)| {
            let flagged: Vec<String> = a
                .strata
                .iter()
                .filter(|s| s.disagrees)
                .map(|s| stratum(&s.value))
                .collect();
            vec![
                label(&d.group),
                d.step.clone(),
                pp(d.difference),
                opt_pp(a.mh_risk_difference),
                ci_pp(a.mh_risk_difference_ci),
                a.mh_odds_ratio.map_or_else(
                    || "-".into(),
                    |r| match a.mh_odds_ratio_ci {
                        Some([l, h]) => format!("{r:.3} ({l:.3} – {h:.3})"),
                        None => format!("{r:.3}"),
                    },
                ),
                opt_p(a.cmh_p),
                opt_p(a.cmh_p_holm),
                opt_p(a.homogeneity_p),
                if flagged.is_empty() {
                    String::new()
                } else {
                    format!("strata disagree: {}", flagged.join("; "))
                },
            ]
        })
        .collect();
    out.push_str(&table(
        markdown,
        &[
            &c.by,
            "step",
            ">raw",
            ">adjusted",
            ">95% CI",
            ">odds ratio (95% CI)",
            ">CMH p",
            ">Holm p",
            ">homogeneity p",
            "note",
        ],
        &rows,
    ));
    out.push_str(&h(&format!("Strata of {by}")));
    let mut rows = Vec::new();
    for d in &c.differences {
        let Some(a) = &d.adjusted else { continue };
        for s in &a.strata {
            rows.push(vec![
                label(&d.group),
                d.step.clone(),
                stratum(&s.value),
                format!(
                    "{} of {}",
                    thousands(s.group.reached),
                    thousands(s.group.persons)
                ),
                format!(
                    "{} of {}",
                    thousands(s.baseline.reached),
                    thousands(s.baseline.persons)
                ),
                pp(s.risk_difference),
                if s.disagrees { "disagrees" } else { "" }.to_string(),
            ]);
        }
        for v in &a.strata_left_out {
            rows.push(vec![
                label(&d.group),
                d.step.clone(),
                stratum(v),
                "-".into(),
                "-".into(),
                "-".into(),
                "left out: a side has no persons".into(),
            ]);
        }
    }
    out.push_str(&table(
        markdown,
        &[
            &c.by,
            "step",
            "stratum",
            ">group reached",
            ">baseline reached",
            ">difference",
            "note",
        ],
        &rows,
    ));
    out
}

/// The before/after changes and the differences-in-differences (`--split-at`).
fn split_sections(c: &Comparison, markdown: bool, h: &dyn Fn(&str) -> String) -> String {
    let (Some(at), Some(before_after)) = (&c.split_at, &c.before_after) else {
        return String::new();
    };
    let adjusted = before_after.iter().any(|b| b.adjusted.is_some());
    let mut out = h(&format!(
        "Before and after {at}: after minus before, Newcombe 95% intervals, Holm-adjusted p"
    ));
    let rows: Vec<Vec<String>> = before_after
        .iter()
        .map(|b| {
            let mut row = vec![
                label(&b.group),
                b.step.clone(),
                format!("{} ({})", pct(b.before.rate()), thousands(b.before.persons)),
                format!("{} ({})", pct(b.after.rate()), thousands(b.after.persons)),
                pp(b.difference),
                format!("{} – {}", pp(b.ci[0]), pp(b.ci[1])),
                format!("{} {:.4}", b.test, b.p),
                format!("{:.4}", b.p_holm),
            ];
            if adjusted {
                let a = b.adjusted.as_ref();
                row.push(opt_pp(a.and_then(|a| a.mh_risk_difference)));
                row.push(ci_pp(a.and_then(|a| a.mh_risk_difference_ci)));
            }
            row
        })
        .collect();
    let mut headers = vec![
        c.by.as_str(),
        "step",
        ">before (persons)",
        ">after (persons)",
        ">change",
        ">95% CI",
        ">test p",
        ">Holm p",
    ];
    if adjusted {
        headers.extend([">adjusted change", ">95% CI"]);
    }
    out.push_str(&table(markdown, &headers, &rows));
    let left_out = c.before_after_left_out.as_deref().unwrap_or_default();
    if !left_out.is_empty() {
        let names: Vec<String> = left_out.iter().map(label).collect();
        out.push_str(&format!(
            "\n Without persons on one side of the split: {}.\n",
            names.join(", ")
        ));
    }
    if let (Some(control), Some(did)) = (&c.control, &c.did) {
        out.push_str(&h(&format!(
            "Difference-in-differences against {control}: each group's change minus {control}'s, Wald 95% intervals"
        )));
        let rows: Vec<Vec<String>> = did
            .iter()
            .map(|d| {
                let mut row = vec![
                    label(&d.group),
                    d.step.clone(),
                    pp(d.estimate),
                    format!("{} – {}", pp(d.ci[0]), pp(d.ci[1])),
                    format!("{:.4}", d.p),
                    format!("{:.4}", d.p_holm),
                ];
                if adjusted {
                    let a = d.adjusted.as_ref();
                    row.push(opt_pp(a.and_then(|a| a.estimate)));
                    row.push(ci_pp(a.and_then(|a| a.ci)));
                }
                row
            })
            .collect();
        let mut headers = vec![
            c.by.as_str(),
            "step",
            ">estimate",
            ">95% CI",
            ">p",
            ">Holm p",
        ];
        if adjusted {
            headers.extend([">adjusted", ">95% CI"]);
        }
        out.push_str(&table(markdown, &headers, &rows));
    }
    out
}
