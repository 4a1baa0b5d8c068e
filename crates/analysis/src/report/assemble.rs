//! Report assembly: a funnel's accumulated groups, from the embedded engine or from a cluster
//! engine's level counts, into the [`FunnelReport`] every exporter reads.

use std::collections::BTreeMap;

use funnel_core::{Attribution, CountUnit, FunnelSpec, Order};

use super::{FunnelReport, GroupAcc, GroupReport, Key, Next};
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
    let next_by = next_by(spec, opts);
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

/// "Where the dropped went" in the report: persons mode, chains in order; `Some` naming the
/// `next_by` column, if any.
fn next_by<'o>(spec: &FunnelSpec, opts: &'o AnalyzeOptions) -> Option<Option<&'o str>> {
    (opts.dropped_next && spec.count == CountUnit::Persons && spec.order != Order::Any)
        .then_some(opts.next_by.as_deref())
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

/// The report of a funnel computed elsewhere (a cluster engine): persons per group (total,
/// breakdown values, trend periods), exact level and window state at `cutoff_ms`, and the
/// distribution of the reported chains' times to convert, from which the same median,
/// percentiles, mean and histogram are computed as from the embedded engine's samples.
pub fn report_from_levels(
    spec: &FunnelSpec,
    rows: &[funnel_core::LevelCount],
    durations: &[funnel_core::DurationCount],
    nexts: &[funnel_core::NextCount],
    opts: &AnalyzeOptions,
    cutoff_ms: i64,
) -> FunnelReport {
    let n = spec.steps.len();
    let mut groups = Groups {
        spec,
        total: GroupAcc::new(n),
        by_key: BTreeMap::new(),
        trend: BTreeMap::new(),
    };
    for row in rows {
        let acc = groups.get(&row.key, &row.period);
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
    for d in durations {
        let step = d.step as usize;
        if (opts.closed_windows_only && d.window_open) || step == 0 || step >= n {
            continue;
        }
        let acc = groups.get(&d.key, &d.period);
        let samples = if d.from_first {
            &mut acc.from_first[step]
        } else {
            &mut acc.from_previous[step]
        };
        samples.push_count(d.ms, d.persons);
    }
    for x in nexts {
        let level = x.level as usize;
        if (opts.closed_windows_only && x.window_open) || level == 0 || level >= n {
            continue;
        }
        let acc = groups.get(&x.key, &x.period);
        let dest = match &x.next {
            Some((event_type, value)) => Next::Event(event_type.clone(), value.clone()),
            None if x.window_open => Next::Open,
            None => Next::Nothing,
        };
        let by_level = acc.next.get_or_insert_with(|| vec![BTreeMap::new(); n]);
        *by_level[level].entry(dest).or_insert(0) += x.persons;
    }
    let next_by = next_by(spec, opts);
    let Groups {
        total,
        by_key,
        trend,
        ..
    } = groups;
    let mut groups = vec![total.report(spec, Key::new(), next_by)];
    groups.extend(
        sorted(by_key)
            .into_iter()
            .map(|(k, a)| a.report(spec, k, next_by)),
    );
    let trend = sorted(trend)
        .into_iter()
        .map(|(k, a)| a.report(spec, k, next_by))
        .collect();
    assemble(
        spec,
        opts,
        cutoff_ms,
        opts.timezone.as_deref().unwrap_or("UTC"),
        groups,
        trend,
    )
}

/// The accumulators of a cluster engine's answer, by group.
struct Groups<'s> {
    spec: &'s FunnelSpec,
    total: GroupAcc,
    by_key: BTreeMap<Key, GroupAcc>,
    trend: BTreeMap<Key, GroupAcc>,
}

impl Groups<'_> {
    /// The group of an answer row: all persons, a breakdown value, or a trend period (alone or
    /// with a breakdown value).
    fn get(&mut self, key: &Option<Vec<Option<String>>>, period: &Option<String>) -> &mut GroupAcc {
        let n = self.spec.steps.len();
        let mut values: Key = self
            .spec
            .breakdown
            .iter()
            .cloned()
            .zip(key.iter().flatten().cloned())
            .collect();
        match (key, period) {
            (None, None) => &mut self.total,
            (Some(_), None) => self
                .by_key
                .entry(values)
                .or_insert_with(|| GroupAcc::new(n)),
            (_, Some(label)) => {
                values.insert("period".into(), Some(label.clone()));
                self.trend.entry(values).or_insert_with(|| GroupAcc::new(n))
            }
        }
    }
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
