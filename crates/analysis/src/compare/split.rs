//! Before and after a date (`--split-at`): per group, the persons whose step-1 event is
//! before the instant against those at or after it, read from the comparison's funnel broken
//! down by the compared column and the derived [`schema::SPLIT`] column (so "before" and
//! "after" follow the same step-1 rule and attribution as the groups); with a control group,
//! the difference-in-differences.

use serde::Serialize;

use funnel_core::schema;

use super::adjusted::{Adjusted, Cells, SplitStratum, StratumValue, adjust, cells, side};
use super::test;
use crate::FunnelReport;
use crate::stats::{Estimate, Side, Z95, did, newcombe, pooled_did};
use funnel_core::FunnelSpec;

/// The instant of a split.
#[derive(Debug, Clone)]
pub struct Split {
    /// Epoch ms.
    pub at_ms: i64,
    /// The instant as given back in the output (RFC 3339).
    pub label: String,
    /// The group whose change the others' changes are measured against.
    pub control: Option<String>,
}

/// One group's change at one milestone (CONTRACT §8): after minus before.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BeforeAfter {
    pub group: Option<String>,
    pub step: String,
    pub before: Side,
    pub after: Side,
    /// after rate minus before rate, with its 95% Newcombe interval.
    pub difference: f64,
    pub ci: [f64; 2],
    /// `z` or `fisher`, by the rule of the differences.
    pub test: String,
    pub p: f64,
    pub p_holm: f64,
    /// Persons counted on both sides (step-1 events before and after the split).
    pub persons_on_both_sides: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjusted: Option<Adjusted<SplitStratum>>,
}

/// One stratum's difference-in-differences.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DidStratum {
    pub value: StratumValue,
    pub estimate: f64,
    pub ci: [f64; 2],
}

/// The difference-in-differences pooled over strata by inverse variance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdjustedDid {
    pub by: Vec<String>,
    pub strata: Vec<DidStratum>,
    pub estimate: Option<f64>,
    pub ci: Option<[f64; 2]>,
    pub p: Option<f64>,
    pub p_holm: Option<f64>,
    /// Strata where one of the four sides has no persons, or whose estimate has no variance.
    pub strata_left_out: Vec<StratumValue>,
}

/// A group's change minus the control's change at one milestone (CONTRACT §8).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Did {
    pub group: Option<String>,
    pub step: String,
    pub estimate: f64,
    pub ci: [f64; 2],
    /// Two-sided, normal (Wald) test of no difference.
    pub p: f64,
    pub p_holm: f64,
    pub se: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjusted: Option<AdjustedDid>,
}

/// What `--split-at` adds to a comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SplitResult {
    pub before_after: Vec<BeforeAfter>,
    /// Groups without persons on one side of the split.
    pub left_out: Vec<Option<String>>,
    pub did: Vec<Did>,
}

/// The before/after changes and, with a control, the differences-in-differences.
/// `plain`: the report broken down by `[by, SPLIT]`; `strata`: by `[by, SPLIT, adjust...]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn split(
    spec: &FunnelSpec,
    by: &str,
    adjust_for: &[String],
    control: Option<&str>,
    groups: &[(Option<String>, u64)],
    plain: &FunnelReport,
    strata: Option<&FunnelReport>,
) -> SplitResult {
    let sides = |report, g: &Option<String>, columns| halves(report, by, g, columns);
    let whole = StratumValue::new();
    let mut out = SplitResult::default();
    // Per group: its before and after cells (plain and stratified).
    let mut per_group: Vec<(Option<String>, Halves<'_>, Option<Halves<'_>>)> = Vec::new();
    for (g, clicks) in groups {
        let plain_halves = sides(plain, g, &[]);
        let (Some(b), Some(a)) = (
            side(&plain_halves.0, &whole, 0),
            side(&plain_halves.1, &whole, 0),
        ) else {
            out.left_out.push(g.clone());
            continue;
        };
        let strata_halves = strata.map(|r| sides(r, g, adjust_for));
        for k in 1..spec.steps.len() {
            let at = |half| side(half, &whole, k).expect("both sides have persons (above)");
            let (before, after) = (at(&plain_halves.0), at(&plain_halves.1));
            if spec.steps[k].optional && before.reached + after.reached == 0 {
                // A step this group does not go through.
                continue;
            }
            let (test_name, p) = test(after, before);
            let (lo, hi) = newcombe(
                after.reached,
                after.persons,
                before.reached,
                before.persons,
                Z95,
            );
            out.before_after.push(BeforeAfter {
                group: g.clone(),
                step: spec.steps[k].name.clone(),
                before,
                after,
                difference: after.rate() - before.rate(),
                ci: [lo, hi],
                test: test_name.to_string(),
                p,
                p_holm: 0.0,
                persons_on_both_sides: (a.persons + b.persons).saturating_sub(*clicks),
                adjusted: strata_halves.as_ref().map(|(sb, sa)| {
                    adjust(
                        adjust_for,
                        sa,
                        sb,
                        k,
                        |value, after, before, rd, disagrees| SplitStratum {
                            value,
                            before,
                            after,
                            risk_difference: rd,
                            disagrees,
                        },
                    )
                }),
            });
        }
        per_group.push((g.clone(), plain_halves, strata_halves));
    }
    let Some(control) = control else {
        return out;
    };
    let Some((_, control_plain, control_strata)) = per_group
        .iter()
        .find(|(g, _, _)| g.as_deref() == Some(control))
    else {
        return out;
    };
    for (g, plain_halves, strata_halves) in per_group
        .iter()
        .filter(|(g, _, _)| g.as_deref() != Some(control))
    {
        for k in 1..spec.steps.len() {
            let step = &spec.steps[k].name;
            // Only milestones both have a before/after change for.
            let has = |v: &Option<String>| {
                out.before_after
                    .iter()
                    .any(|b| &b.group == v && &b.step == step)
            };
            if !has(g) || !has(&Some(control.to_string())) {
                continue;
            }
            // Before and after at this milestone, both with persons.
            let four = |(b, a): &Halves<'_>, value: &StratumValue| -> Option<[Side; 2]> {
                Some([side(b, value, k)?, side(a, value, k)?])
            };
            let e = did(
                four(plain_halves, &whole).expect("both sides have persons"),
                four(control_plain, &whole).expect("both sides have persons"),
                Z95,
            );
            let adjusted = match (strata_halves, control_strata) {
                (Some(gs), Some(cs)) => Some(adjusted_did(adjust_for, gs, cs, &four)),
                _ => None,
            };
            out.did.push(Did {
                group: g.clone(),
                step: step.clone(),
                estimate: e.estimate,
                ci: [e.ci.0, e.ci.1],
                p: e.p,
                p_holm: 0.0,
                se: e.se,
                adjusted,
            });
        }
    }
    out
}

type Halves<'r> = (Cells<'r>, Cells<'r>);

/// A group's cells before and after the split, by their values of `columns`.
fn halves<'r>(
    report: &'r FunnelReport,
    by: &str,
    g: &Option<String>,
    columns: &[String],
) -> Halves<'r> {
    let half = |s: &str| {
        let key = [(by, g.as_deref()), (schema::SPLIT, Some(s))];
        cells(&report.groups[1..], &key, columns)
    };
    (half("before"), half("after"))
}

fn adjusted_did<'r>(
    by: &[String],
    group: &Halves<'r>,
    control: &Halves<'r>,
    four: &dyn Fn(&Halves<'r>, &StratumValue) -> Option<[Side; 2]>,
) -> AdjustedDid {
    let values: std::collections::BTreeSet<&StratumValue> =
        [&group.0, &group.1, &control.0, &control.1]
            .into_iter()
            .flat_map(|c| c.keys())
            .collect();
    let mut strata = Vec::new();
    let mut estimates: Vec<Estimate> = Vec::new();
    let mut strata_left_out = Vec::new();
    for value in values {
        match (four(group, value), four(control, value)) {
            (Some(g), Some(c)) => {
                let e = did(g, c, Z95);
                if e.se > 0.0 {
                    strata.push(DidStratum {
                        value: value.clone(),
                        estimate: e.estimate,
                        ci: [e.ci.0, e.ci.1],
                    });
                    estimates.push(e);
                    continue;
                }
                strata_left_out.push(value.clone());
            }
            _ => strata_left_out.push(value.clone()),
        }
    }
    let pooled = pooled_did(&estimates, Z95);
    AdjustedDid {
        by: by.to_vec(),
        strata,
        estimate: pooled.map(|p| p.estimate),
        ci: pooled.map(|p| [p.ci.0, p.ci.1]),
        p: pooled.map(|p| p.p),
        p_holm: None,
        strata_left_out,
    }
}
