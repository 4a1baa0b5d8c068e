//! The report's comparison section: differences to the baseline as a forest plot and a table,
//! the same differences adjusted for strata beside the raw ones (`--adjust-for`), and the
//! changes before and after a split instant against a control group (`--split-at`).

use std::fmt::Write;

use funnel_analysis::Comparison;

use super::table;
use crate::export::compare::{label, pp as points};
use crate::export::pct;
use crate::export::svg::{self, Estimate, esc};
use crate::table::thousands;

pub(super) fn section(c: &Comparison) -> String {
    let mut s = format!(
        "<h2>Journeys compared</h2><p>Every {by} on the same denominator: the persons of its step 1 (clicks). Differences to <b>{base}</b> with 95% Newcombe intervals; p-values from a two-proportion z-test (Fisher's exact test where a cell is under 5), Holm-adjusted across all {n} tests of the comparison. Groups under 30 clicks are flagged.</p>",
        by = esc(&c.by),
        base = esc(&c.baseline),
        n = c.tests()
    );
    if c.persons_in_several_groups > 0 {
        let _ = write!(
            s,
            "<p class=\"muted\">{} persons clicked in several groups and count in each.</p>",
            thousands(c.persons_in_several_groups)
        );
    }
    let estimates: Vec<Estimate> = c
        .differences
        .iter()
        .map(|d| Estimate {
            label: format!("{} · {}", d.group.as_deref().unwrap_or("(none)"), d.step),
            value: d.difference,
            low: d.ci_low,
            high: d.ci_high,
            strong: d.significant,
        })
        .collect();
    s.push_str(&svg::forest(&estimates));
    let rows: Vec<Vec<String>> = c
        .differences
        .iter()
        .map(|d| {
            vec![
                esc(d.group.as_deref().unwrap_or("(none)")),
                esc(&d.step),
                pct(d.rate),
                pct(d.baseline_rate),
                format!(
                    "{:+.1} pp ({:+.1} – {:+.1})",
                    d.difference * 100.0,
                    d.ci_low * 100.0,
                    d.ci_high * 100.0
                ),
                d.relative_lift
                    .map_or_else(|| "–".into(), |l| format!("{:+.1}%", l * 100.0)),
                format!("{} {:.4}", d.test, d.p_value),
                format!("{:.4}", d.p_holm),
                if d.insufficient_sample {
                    format!("<span class=\"flag\">{}</span>", d.verdict())
                } else {
                    d.verdict().to_string()
                },
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            &c.by,
            "step",
            ">rate",
            ">baseline",
            ">difference (95% CI)",
            ">lift",
            ">test p",
            ">Holm p",
            "verdict",
        ],
        &rows,
    ));
    if !c.extra_steps.is_empty() {
        let _ = write!(
            s,
            "<h3>What the steps {} does not have cost</h3>",
            esc(&c.baseline)
        );
        let rows: Vec<Vec<String>> = c
            .extra_steps
            .iter()
            .map(|x| {
                vec![
                    esc(x.group.as_deref().unwrap_or("(none)")),
                    esc(&x.step),
                    thousands(x.persons_through),
                    thousands(x.lost),
                    pct(x.share_of_clicks_lost),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                &c.by,
                "step",
                ">went through",
                ">lost there",
                ">share of clicks",
            ],
            &rows,
        ));
    }
    s.push_str(&adjusted(c));
    s.push_str(&before_after(c));
    s
}

/// Raw and adjusted differences side by side, and the strata that disagree.
fn adjusted(c: &Comparison) -> String {
    let Some(by) = c.adjusted_by().map(|b| b.join(", ")) else {
        return String::new();
    };
    let mut s = format!(
        "<h3>Within the same {by}</h3><p>Each difference again, within each {by} (the value on the click that puts a person in the group), pooled over them by Mantel-Haenszel: what remains when both sides had the same {by} mix. Grey: raw; red: adjusted (95% interval, Sato's variance). Where raw and adjusted differ, the raw difference was partly the mix. The homogeneity test (Breslow-Day with Tarone's correction) asks whether the {by} values agree; those that do not are named.</p>",
        by = esc(&by)
    );
    let mut estimates = Vec::new();
    for d in &c.differences {
        let Some(a) = &d.adjusted else { continue };
        let name = format!("{} · {}", label(&d.group), d.step);
        estimates.push(Estimate {
            label: format!("{name} · raw"),
            value: d.difference,
            low: d.ci_low,
            high: d.ci_high,
            strong: false,
        });
        if let (Some(v), Some([lo, hi])) = (a.mh_risk_difference, a.mh_risk_difference_ci) {
            estimates.push(Estimate {
                label: format!("{name} · adjusted"),
                value: v,
                low: lo,
                high: hi,
                strong: true,
            });
        }
    }
    s.push_str(&svg::forest(&estimates));
    let rows: Vec<Vec<String>> = c
        .differences
        .iter()
        .filter_map(|d| d.adjusted.as_ref().map(|a| (d, a)))
        .map(|(d, a)| {
            let opt = |x: Option<f64>| x.map_or_else(|| "–".into(), |p| format!("{p:.4}"));
            let disagree: Vec<String> = a
                .strata
                .iter()
                .filter(|s| s.disagrees)
                .map(|s| {
                    let v: Vec<String> = s
                        .value
                        .values()
                        .map(|x| esc(x.as_deref().unwrap_or("(none)")))
                        .collect();
                    format!("{} ({})", v.join(", "), points(s.risk_difference))
                })
                .collect();
            vec![
                esc(&label(&d.group)),
                esc(&d.step),
                points(d.difference),
                match (a.mh_risk_difference, a.mh_risk_difference_ci) {
                    (Some(v), Some([lo, hi])) => {
                        format!("{} ({:+.1} – {:+.1})", points(v), lo * 100.0, hi * 100.0)
                    }
                    _ => "–".into(),
                },
                a.mh_odds_ratio
                    .map_or_else(|| "–".into(), |r| format!("{r:.3}")),
                opt(a.cmh_p_holm),
                opt(a.homogeneity_p),
                if disagree.is_empty() {
                    String::new()
                } else {
                    format!("<span class=\"flag\">{}</span>", disagree.join("; "))
                },
                a.strata_left_out.len().to_string(),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            &c.by,
            "step",
            ">raw",
            ">adjusted (95% CI)",
            ">odds ratio",
            ">CMH Holm p",
            ">homogeneity p",
            "disagree",
            ">strata left out",
        ],
        &rows,
    ));
    s
}

/// Per group: its rate before and after the split beside the control's, with the path the
/// group would have taken had it changed as the control did; and the estimates.
fn before_after(c: &Comparison) -> String {
    let (Some(at), Some(ba)) = (&c.split_at, &c.before_after) else {
        return String::new();
    };
    let mut s = format!(
        "<h3>Before and after {}</h3><p>Per {by}, the persons whose click was before the instant against those at or after it (after minus before, 95% Newcombe interval).",
        esc(at),
        by = esc(&c.by)
    );
    let control = c.control.as_deref();
    if let Some(k) = control {
        let _ = write!(
            s,
            " Against <b>{k}</b>: whatever changed for everyone (the season, habits) moved {k} too, so each group's change minus {k}'s (the difference-in-differences) is what changed for that group alone. The dashed line (counterfactual) is where the group would have gone had it changed as {k} did; the gap at \"after\" is the difference-in-differences.",
            k = esc(k)
        );
    }
    s.push_str("</p>");
    // One chart per group at the funnel's last milestone shared by the group and the control.
    let last = |g: &Option<String>| ba.iter().rev().find(|b| &b.group == g);
    let groups: Vec<&Option<String>> = {
        let mut v: Vec<&Option<String>> = Vec::new();
        for b in ba {
            if !v.contains(&&b.group) {
                v.push(&b.group);
            }
        }
        v
    };
    let periods = ["before".to_string(), "after".to_string()];
    for g in &groups {
        if control.is_some_and(|k| g.as_deref() == Some(k)) {
            continue;
        }
        let Some(b) = last(g) else { continue };
        let mut series = vec![(
            label(g).to_string(),
            vec![Some(b.before.rate()), Some(b.after.rate())],
        )];
        if let Some(k) = control
            && let Some(cb) = ba
                .iter()
                .find(|x| x.group.as_deref() == Some(k) && x.step == b.step)
        {
            series.push((
                k.to_string(),
                vec![Some(cb.before.rate()), Some(cb.after.rate())],
            ));
            series.push((
                "counterfactual".to_string(),
                vec![
                    Some(b.before.rate()),
                    Some(b.before.rate() + cb.after.rate() - cb.before.rate()),
                ],
            ));
        }
        let _ = write!(
            s,
            "<h4>{} · {}</h4>{}",
            esc(&label(g)),
            esc(&b.step),
            svg::lines_dashed(&periods, &series, 2)
        );
    }
    let rows: Vec<Vec<String>> = ba
        .iter()
        .map(|b| {
            vec![
                esc(&label(&b.group)),
                esc(&b.step),
                format!(
                    "{} of {}",
                    pct(b.before.rate()),
                    thousands(b.before.persons)
                ),
                format!("{} of {}", pct(b.after.rate()), thousands(b.after.persons)),
                format!(
                    "{} ({:+.1} – {:+.1})",
                    points(b.difference),
                    b.ci[0] * 100.0,
                    b.ci[1] * 100.0
                ),
                format!("{:.4}", b.p_holm),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            &c.by,
            "step",
            ">before",
            ">after",
            ">change (95% CI)",
            ">Holm p",
        ],
        &rows,
    ));
    if let (Some(k), Some(did)) = (control, &c.did) {
        let _ = write!(s, "<h4>Difference-in-differences against {}</h4>", esc(k));
        let estimates: Vec<Estimate> = did
            .iter()
            .map(|d| Estimate {
                label: format!("{} · {}", label(&d.group), d.step),
                value: d.estimate,
                low: d.ci[0],
                high: d.ci[1],
                strong: d.p_holm < 0.05,
            })
            .collect();
        s.push_str(&svg::forest(&estimates));
        let rows: Vec<Vec<String>> = did
            .iter()
            .map(|d| {
                vec![
                    esc(&label(&d.group)),
                    esc(&d.step),
                    format!(
                        "{} ({:+.1} – {:+.1})",
                        points(d.estimate),
                        d.ci[0] * 100.0,
                        d.ci[1] * 100.0
                    ),
                    format!("{:.4}", d.p),
                    format!("{:.4}", d.p_holm),
                    d.adjusted
                        .as_ref()
                        .and_then(|a| a.estimate.zip(a.ci))
                        .map_or_else(String::new, |(e, [lo, hi])| {
                            format!("{} ({:+.1} – {:+.1})", points(e), lo * 100.0, hi * 100.0)
                        }),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                &c.by,
                "step",
                ">estimate (95% CI)",
                ">p",
                ">Holm p",
                ">within strata",
            ],
            &rows,
        ));
    }
    s
}
