//! What a person's evaluations add to a group: levels, open windows, matched steps, times to
//! convert, audit rows; and the merge of partial results, in unit order.

use std::collections::BTreeMap;

use funnel_core::{FunnelSpec, Order};

use super::groups::Breakdown;
use crate::audit::AuditRow;
use crate::kernel::SKIPPED;
use crate::report::{GroupAcc, Key, Next};

/// Partial results of one funnel over some buckets.
#[derive(Default)]
pub(super) struct Partial {
    pub total: Option<GroupAcc>,
    pub by_key: BTreeMap<Key, GroupAcc>,
    /// Breakdown groups of the unit being walked, by value code; folded into `by_key` at the
    /// unit's end.
    pub by_code: Vec<Option<GroupAcc>>,
    pub trend: BTreeMap<Key, GroupAcc>,
    pub audit: Vec<AuditRow>,
}

impl Partial {
    pub fn merge(&mut self, other: Partial) {
        match (&mut self.total, other.total) {
            (Some(a), Some(b)) => a.merge(b),
            (None, b) => self.total = b,
            _ => {}
        }
        for (map, from) in [
            (&mut self.by_key, other.by_key),
            (&mut self.trend, other.trend),
        ] {
            for (k, acc) in from {
                match map.get_mut(&k) {
                    Some(a) => a.merge(acc),
                    None => {
                        map.insert(k, acc);
                    }
                }
            }
        }
        self.audit.extend(other.audit);
    }

    /// Folds the unit's groups by value code into the groups by key.
    pub fn fold_codes(&mut self, b: &Breakdown) {
        for (code, acc) in std::mem::take(&mut self.by_code).into_iter().enumerate() {
            if let Some(acc) = acc {
                match self.by_key.get_mut(&b.keys[code]) {
                    Some(a) => a.merge(acc),
                    None => {
                        self.by_key.insert(b.keys[code].clone(), acc);
                    }
                }
            }
        }
    }
}

/// Where one evaluation's audit row goes, and what it names.
pub(super) struct AuditCtx<'a> {
    pub rows: Vec<AuditRow>,
    pub funnel: usize,
    pub person: &'a str,
    pub event_ids: &'a [String],
}

/// What every group evaluation of one person and funnel shares.
pub(super) struct Recorder<'a> {
    pub spec: &'a FunnelSpec,
    pub ts: &'a [i64],
    pub cutoff: i64,
    pub closed_only: bool,
    /// The person's event types and `next_by` values, when "where the dropped went" is on.
    pub next: Option<NextView<'a>>,
}

/// One person's rows of the columns "where the dropped went" reads.
#[derive(Clone, Copy)]
pub(super) struct NextView<'a> {
    pub types: (&'a [u32], &'a [Option<String>]),
    pub by: Option<(&'a [u32], &'a [Option<String>])>,
}

impl NextView<'_> {
    /// What follows the chain `path` (non-empty) within the window from its first event.
    fn after(&self, path: &[u32], ts: &[i64], window_ms: i64, open: bool) -> Next {
        let last = path
            .iter()
            .rev()
            .find(|r| **r != SKIPPED)
            .map(|r| *r as usize)
            .expect("a chain of level > 0 has a matched step");
        let t0 = ts[path[0] as usize];
        let r = last + 1;
        if r < ts.len() && ts[r] <= t0 + window_ms {
            let value =
                |(codes, values): (&[u32], &[Option<String>])| values[codes[r] as usize].clone();
            Next::Event(value(self.types), self.by.and_then(value))
        } else if open {
            Next::Open
        } else {
            Next::Nothing
        }
    }
}

impl Recorder<'_> {
    /// Records into the accumulator of `key` in `map`, creating it on first use.
    pub fn add(
        &self,
        map: &mut BTreeMap<Key, GroupAcc>,
        key: Key,
        audit: Option<&mut AuditCtx<'_>>,
        level: u32,
        path: &[u32],
    ) {
        // The key is cloned only for a group's first person.
        if !map.contains_key(&key) {
            map.insert(key.clone(), GroupAcc::new(self.spec.steps.len()));
        }
        let acc = map.get_mut(&key).expect("inserted above");
        self.record(acc, audit, &key, level, path);
    }

    /// Records into the accumulator of breakdown value `code` of the unit.
    pub fn add_code(
        &self,
        by_code: &mut Vec<Option<GroupAcc>>,
        b: &Breakdown,
        code: u32,
        audit: Option<&mut AuditCtx<'_>>,
        level: u32,
        path: &[u32],
    ) {
        let code = code as usize;
        if by_code.len() <= code {
            by_code.resize_with(b.keys.len().max(code + 1), || None);
        }
        let acc = by_code[code].get_or_insert_with(|| GroupAcc::new(self.spec.steps.len()));
        self.record(acc, audit, &b.keys[code], level, path);
    }

    /// One group evaluation's effect on an accumulator (and the audit). `path` holds one row
    /// per step up to the level ([`SKIPPED`] for a skipped optional step).
    pub fn record(
        &self,
        acc: &mut GroupAcc,
        audit: Option<&mut AuditCtx<'_>>,
        key: &Key,
        level: u32,
        path: &[u32],
    ) {
        let Recorder {
            spec,
            ts,
            cutoff,
            closed_only,
            next,
        } = *self;
        let matched = || {
            path.iter()
                .enumerate()
                .filter(|(_, r)| **r != SKIPPED)
                .map(|(k, r)| (k, ts[*r as usize]))
        };
        let any_order = spec.order == Order::Any;
        let start = if any_order {
            matched().map(|(_, t)| t).min()
        } else {
            path.first().map(|r| ts[*r as usize])
        };
        let open = start.is_some_and(|t0| t0 + spec.window_ms > cutoff);
        if closed_only && open {
            acc.excluded += 1;
            return;
        }
        acc.levels[level as usize] += 1;
        if open && (level as usize) < spec.steps.len() {
            acc.open[level as usize] += 1;
        }
        if let Some(view) = next
            && level > 0
            && (level as usize) < spec.steps.len()
            && !any_order
        {
            let dest = view.after(path, ts, spec.window_ms, open);
            let by_level = acc
                .next
                .get_or_insert_with(|| vec![BTreeMap::new(); spec.steps.len()]);
            *by_level[level as usize].entry(dest).or_insert(0) += 1;
        }
        let mut previous: Option<i64> = None;
        for (k, t) in matched() {
            acc.matched[k] += 1;
            if k > 0 {
                if let (Some(p), false) = (previous, any_order) {
                    acc.from_previous[k].push(t - p);
                }
                if let Some(t0) = start {
                    acc.from_first[k].push(t - t0);
                }
            }
            previous = Some(t);
        }
        if let Some(a) = audit {
            a.rows.push(AuditRow {
                funnel: a.funnel,
                group: serde_json::to_string(key).expect("key serialises"),
                person_id: a.person.to_string(),
                level,
                window_open: open,
                chain: path
                    .iter()
                    .map(|r| {
                        if *r == SKIPPED {
                            None
                        } else {
                            Some((ts[*r as usize], a.event_ids[*r as usize].clone()))
                        }
                    })
                    .collect(),
            });
        }
    }
}
