//! Differences adjusted for strata (`--adjust-for`): the per-stratum 2x2 tables of a
//! milestone, read from the comparison's funnel broken down by the compared column and the
//! stratum columns together (so a person is in a stratum by the step-1 event that puts them in
//! the group, under the same attribution), and their Mantel-Haenszel pooling
//! (`stats::stratified`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::stats::{Side, Table, Z95, mantel_haenszel};
use crate::{GroupReport, StepReport};

/// A stratum: stratum column -> value (`null` is a value).
pub type StratumValue = BTreeMap<String, Option<String>>;

/// One stratum of a difference: the group's and the baseline's persons and reached persons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stratum {
    pub value: StratumValue,
    pub group: Side,
    pub baseline: Side,
    /// The stratum's own difference (group minus baseline).
    pub risk_difference: f64,
    /// The homogeneity test rejects at 5% and this stratum's Breslow-Day term is one of
    /// those that make it.
    pub disagrees: bool,
}

/// One stratum of a before/after change: the persons before and after the split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitStratum {
    pub value: StratumValue,
    pub before: Side,
    pub after: Side,
    /// after minus before.
    pub risk_difference: f64,
    pub disagrees: bool,
}

/// The pooled figures of one difference (CONTRACT §8). Fractions, not percentage points;
/// `null` where no stratum has persons on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Adjusted<S> {
    pub by: Vec<String>,
    pub strata: Vec<S>,
    pub mh_risk_difference: Option<f64>,
    pub mh_risk_difference_ci: Option<[f64; 2]>,
    pub mh_odds_ratio: Option<f64>,
    pub mh_odds_ratio_ci: Option<[f64; 2]>,
    pub cmh_p: Option<f64>,
    /// Holm-adjusted over every test of the comparison.
    pub cmh_p_holm: Option<f64>,
    pub homogeneity_p: Option<f64>,
    /// Strata where a side has no persons: listed, not pooled.
    pub strata_left_out: Vec<StratumValue>,
}

/// The groups of a stratified report that belong to one side, by stratum.
pub(super) type Cells<'r> = BTreeMap<StratumValue, &'r [StepReport]>;

/// The groups of `groups` whose key has every `(column, value)` of `side`, by their values of
/// `columns`.
pub(super) fn cells<'r>(
    groups: &'r [GroupReport],
    side: &[(&str, Option<&str>)],
    columns: &[String],
) -> Cells<'r> {
    groups
        .iter()
        .filter(|g| {
            side.iter()
                .all(|(c, v)| g.key.get(*c).map(Option::as_deref) == Some(*v))
        })
        .map(|g| {
            let value = columns
                .iter()
                .map(|c| (c.clone(), g.key.get(c).cloned().flatten()))
                .collect();
            (value, g.steps.as_slice())
        })
        .collect()
}

/// Persons at step 1 and at `step` of a side's stratum (`None`: no persons).
pub(super) fn side(cells: &Cells<'_>, value: &StratumValue, step: usize) -> Option<Side> {
    cells
        .get(value)
        .map(|st| Side {
            persons: st[0].persons,
            reached: st[step].persons,
        })
        .filter(|s| s.persons > 0)
}

/// The strata of `one` against `other` at `step`, pooled; `make` builds a stratum entry from
/// its value, the two sides, its own difference and its homogeneity flag.
pub(super) fn adjust<S>(
    by: &[String],
    one: &Cells<'_>,
    other: &Cells<'_>,
    step: usize,
    make: impl Fn(StratumValue, Side, Side, f64, bool) -> S,
) -> Adjusted<S> {
    let values: BTreeSet<&StratumValue> = one.keys().chain(other.keys()).collect();
    let mut pooled = Vec::new();
    let mut strata_left_out = Vec::new();
    for value in values {
        match (side(one, value, step), side(other, value, step)) {
            (Some(a), Some(b)) => pooled.push((value.clone(), a, b)),
            _ => strata_left_out.push(value.clone()),
        }
    }
    let tables: Vec<Table> = pooled
        .iter()
        .map(|(_, a, b)| Table {
            x1: a.reached,
            n1: a.persons,
            x0: b.reached,
            n0: b.persons,
        })
        .collect();
    let p = mantel_haenszel(&tables, Z95);
    let strata = pooled
        .into_iter()
        .enumerate()
        .map(|(i, (value, a, b))| {
            let disagrees = p.as_ref().is_some_and(|p| p.disagrees[i]);
            make(value, a, b, a.rate() - b.rate(), disagrees)
        })
        .collect();
    Adjusted {
        by: by.to_vec(),
        strata,
        mh_risk_difference: p.as_ref().map(|p| p.risk_difference),
        mh_risk_difference_ci: p
            .as_ref()
            .map(|p| [p.risk_difference_ci.0, p.risk_difference_ci.1]),
        mh_odds_ratio: p.as_ref().and_then(|p| p.odds_ratio),
        mh_odds_ratio_ci: p
            .as_ref()
            .and_then(|p| p.odds_ratio_ci.map(|(l, h)| [l, h])),
        cmh_p: p.as_ref().map(|p| p.cmh_p),
        cmh_p_holm: None,
        homogeneity_p: p.as_ref().and_then(|p| p.homogeneity_p),
        strata_left_out,
    }
}
