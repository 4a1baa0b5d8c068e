//! Report assembly: a funnel's accumulated groups, from the embedded engine or from a cluster
//! engine's level counts, into the [`FunnelReport`] every exporter reads.

use std::collections::BTreeMap;

use funnel_core::{Attribution, CountUnit, FunnelSpec, Order};

use super::{FunnelReport, GroupAcc, GroupReport, Key};
use crate::AnalyzeOptions;

/// The report of one funnel from the embedded engine's accumulated groups: the total, one per
/// breakdown value and one per trend group.
pub(crate) fn from_groups(
    spec: &FunnelSpec,
    opts: &AnalyzeOptions,
    cutoff: i64,
    tz_name: &str,
    total: Option<GroupAcc>,
    by_key: BTreeMap<Key, GroupAcc>,
    trend: BTreeMap<Key, GroupAcc>,
) -> FunnelReport {
    let n = spec.steps.len();
    // Where the dropped went: persons mode, chains in order.
    let next_by =
        (opts.dropped_next && spec.count == CountUnit::Persons && spec.order != Order::Any)
            .then_some(opts.next_by.as_deref());
    let mut groups =
        vec![
            total
                .unwrap_or_else(|| GroupAcc::new(n))
                .report(spec, Key::new(), next_by),
        ];
    groups.extend(
        sorted(by_key)
            .into_iter()
            .map(|(k, a)| a.report(spec, k, next_by)),
    );
    let trend: Vec<GroupReport> = sorted(trend)
        .into_iter()
        .map(|(k, a)| a.report(spec, k, next_by))
        .collect();
    assemble(spec, opts, cutoff, tz_name, groups, trend)
}

fn assemble(
    spec: &FunnelSpec,
    opts: &AnalyzeOptions,
    cutoff: i64,
    tz_name: &str,
    groups: Vec<GroupReport>,
    trend: Vec<GroupReport>,
) -> FunnelReport {
    FunnelReport {
        funnel: spec.name.clone(),
        window_seconds: spec.window_ms / 1000,
        modes: spec.modes.iter().map(|m| m.as_str().to_string()).collect(),
        extensions: extensions(spec),
        breakdown: spec.breakdown.clone(),
        cutoff: funnel_core::time::format_ms(cutoff),
        closed_windows_only: opts.closed_windows_only,
        from: opts.from_ms.map(funnel_core::time::format_ms),
        to: opts.to_ms.map(funnel_core::time::format_ms),
        groups,
        interval: opts.interval.map(|i| i.name().to_string()),
        trend,
        timezone: tz_name.to_string(),
    }
}

/// The report of a funnel computed elsewhere (a cluster engine): persons per group, exact
/// level and window state at `cutoff_ms`. Time to convert is not known (`None`).
pub fn report_from_levels(
    spec: &FunnelSpec,
    rows: &[funnel_core::LevelCount],
    opts: &AnalyzeOptions,
    cutoff_ms: i64,
) -> FunnelReport {
    let n = spec.steps.len();
    let untimed = || GroupAcc {
        timed: false,
        ..GroupAcc::new(n)
    };
    let mut total = untimed();
    let mut by_key: BTreeMap<Key, GroupAcc> = BTreeMap::new();
    for row in rows {
        let acc = match &row.key {
            None => &mut total,
            Some(values) => by_key
                .entry(
                    spec.breakdown
                        .iter()
                        .cloned()
                        .zip(values.iter().cloned())
                        .collect(),
                )
                .or_insert_with(untimed),
        };
        let level = (row.level as usize).min(n);
        if opts.closed_windows_only && row.window_open {
            acc.excluded += row.persons;
            continue;
        }
        acc.levels[level] += row.persons;
        if row.window_open && level < n {
            acc.open[level] += row.persons;
        }
        for m in &mut acc.matched[..level] {
            *m += row.persons;
        }
    }
    let mut groups = vec![total.report(spec, Key::new(), None)];
    groups.extend(
        sorted(by_key)
            .into_iter()
            .map(|(k, a)| a.report(spec, k, None)),
    );
    assemble(
        spec,
        opts,
        cutoff_ms,
        opts.timezone.as_deref().unwrap_or("UTC"),
        groups,
        Vec::new(),
    )
}

/// Human descriptions of the extensions a funnel uses.
fn extensions(spec: &FunnelSpec) -> Vec<String> {
    let mut out = Vec::new();
    if spec.order == Order::Any {
        out.push("order: any".to_string());
    }
    if spec.count == CountUnit::Attempts {
        out.push("count: attempts".to_string());
    }
    for s in &spec.steps {
        if s.optional {
            out.push(format!("optional: {}", s.name));
        }
        if let Some(w) = s.within_ms {
            out.push(format!("within {}s: {}", w / 1000, s.name));
        }
    }
    if !spec.hold_constant.is_empty() {
        out.push(format!("hold_constant: {}", spec.hold_constant.join(", ")));
    }
    for x in &spec.exclusions {
        out.push(format!(
            "exclusion: {} between {} and {}",
            x.event_type, spec.steps[x.after].name, spec.steps[x.before].name
        ));
    }
    match spec.attribution {
        Attribution::Step1 => {}
        a => out.push(format!("attribution: {}", a.as_str())),
    }
    out
}

/// Groups in key order: values in order, a missing value (null) after them; `period` first.
fn sorted(map: BTreeMap<Key, GroupAcc>) -> Vec<(Key, GroupAcc)> {
    let mut v: Vec<(Key, GroupAcc)> = map.into_iter().collect();
    let rank = |k: &Key| {
        let period = k.get("period").cloned().flatten();
        let rest: Vec<(bool, Option<String>)> = k
            .iter()
            .filter(|(c, _)| c.as_str() != "period")
            .map(|(_, v)| (v.is_none(), v.clone()))
            .collect();
        (period, rest.len(), rest)
    };
    v.sort_by_cached_key(|a| rank(&a.0));
    v
}
