//! Funnel results as reported (CONTRACT §6, plus pending persons, time to convert and trends).

mod assemble;
mod suppress;

use std::collections::BTreeMap;

use funnel_core::FunnelSpec;
use serde::Serialize;

pub(crate) use assemble::from_groups;
pub use assemble::report_from_levels;
pub use suppress::suppress;

/// A group's key: breakdown column (or `period`) -> value, `None` for a missing value.
pub(crate) type Key = BTreeMap<String, Option<String>>;

/// Distribution of the time between two steps of the reported chains, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Durations {
    /// Persons measured.
    pub persons: u64,
    /// Exact median (mean of the two middle values for an even count).
    pub median: f64,
    /// Nearest-rank percentiles: the smallest value with at least 90% (99%) of values at or below it.
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    /// Persons per bucket of [`HISTOGRAM_BOUNDS_SECS`]: bucket i holds the times above bound
    /// i-1 and at most bound i (the last bucket: above the last bound).
    pub histogram: Vec<u64>,
}

/// Upper bounds (seconds) of the time-to-convert histogram's buckets: 1s, 5s, 10s, 30s, 1m,
/// 5m, 10m, 30m, 1h, 3h, 6h, 12h, 1d, 3d, 7d; one more bucket holds the longer times.
pub const HISTOGRAM_BOUNDS_SECS: [i64; 15] = [
    1, 5, 10, 30, 60, 300, 600, 1800, 3600, 10_800, 21_600, 43_200, 86_400, 259_200, 604_800,
];

/// The histogram of (milliseconds, persons) pairs (any order).
fn histogram(values: impl IntoIterator<Item = (i64, u64)>) -> Vec<u64> {
    let mut out = vec![0u64; HISTOGRAM_BOUNDS_SECS.len() + 1];
    for (ms, persons) in values {
        out[HISTOGRAM_BOUNDS_SECS.partition_point(|b| b * 1000 < ms)] += persons;
    }
    out
}

/// 0-based positions, among `n` sorted values, of the nearest-rank percentile `p`.
fn rank(n: usize, p: f64) -> usize {
    ((p * n as f64).ceil() as usize).clamp(1, n) - 1
}

/// The positions the statistics read: the two middle values, p90 and p99.
fn positions(n: usize) -> [usize; 4] {
    [n.saturating_sub(1) / 2, n / 2, rank(n, 0.9), rank(n, 0.99)]
}

/// The distribution of `n` (at least 1) values, given the value at each of [`positions`]
/// (`value`), their sum (milliseconds) and their histogram.
fn from_order_statistics(
    n: usize,
    value: impl Fn(usize) -> f64,
    sum: i128,
    histogram: Vec<u64>,
) -> Durations {
    let secs = |ms: f64| ms / 1000.0;
    let [lo, hi, p90, p99] = positions(n);
    Durations {
        persons: n as u64,
        median: secs((value(lo) + value(hi)) / 2.0),
        p90: secs(value(p90)),
        p99: secs(value(p99)),
        mean: secs(sum as f64 / n as f64),
        histogram,
    }
}

impl Durations {
    /// From milliseconds (any order); `None` for no values.
    #[cfg(test)]
    pub(crate) fn of(values: &mut [i64]) -> Option<Durations> {
        values.sort_unstable();
        Durations::of_sorted(values)
    }

    /// From milliseconds in any order (reordered in place); `None` for no values. The median
    /// and percentiles are order statistics, found by selection (O(n)) rather than a full
    /// sort: the same values a sort gives.
    fn of_unsorted<T: Copy + Ord + Into<i64>>(values: &mut [T]) -> Option<Durations> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        // The positions needed, ascending: each selection leaves the values ranked after it to
        // its right, so the next one searches only there (a repeated position finds the same
        // value again: the smallest of what is left).
        let mut wanted = positions(n);
        wanted.sort_unstable();
        let mut at = [0i64; 4];
        let mut from = 0;
        for (slot, &k) in wanted.iter().enumerate() {
            let (_, v, _) = values[from..].select_nth_unstable(k - from);
            at[slot] = (*v).into();
            from = k;
        }
        let value = |k: usize| at[wanted.iter().position(|w| *w == k).expect("selected")] as f64;
        let sum: i128 = values.iter().map(|v| i128::from((*v).into())).sum();
        let histogram = histogram(values.iter().map(|v| ((*v).into(), 1)));
        Some(from_order_statistics(n, value, sum, histogram))
    }

    /// From (milliseconds, persons) pairs in any order (reordered in place); `None` for no
    /// persons. The same order statistics, mean and histogram as [`Durations::of_unsorted`]
    /// over the values repeated, computed with the same arithmetic (a cluster engine's answer
    /// is a distribution of this kind).
    fn of_counts(counts: &mut [(i64, u64)]) -> Option<Durations> {
        counts.sort_unstable();
        let n = counts.iter().map(|(_, c)| c).sum::<u64>() as usize;
        if n == 0 {
            return None;
        }
        // The value at 0-based position k of the sorted, repeated values.
        let value = |k: usize| -> f64 {
            let mut seen = 0usize;
            for &(v, c) in counts.iter() {
                seen += c as usize;
                if k < seen {
                    return v as f64;
                }
            }
            unreachable!("position {k} of {n}")
        };
        let sum: i128 = counts
            .iter()
            .map(|&(v, c)| i128::from(v) * i128::from(c))
            .sum();
        Some(from_order_statistics(
            n,
            value,
            sum,
            histogram(counts.iter().copied()),
        ))
    }

    /// From milliseconds in ascending order; `None` for no values (the reference of
    /// [`Durations::of_unsorted`]).
    #[cfg(test)]
    fn of_sorted<T: Copy + Into<i64>>(values: &[T]) -> Option<Durations> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let at = |i: usize| values[i].into() as f64;
        let secs = |ms: f64| ms / 1000.0;
        let median = if n % 2 == 1 {
            at(n / 2)
        } else {
            (at(n / 2 - 1) + at(n / 2)) / 2.0
        };
        let rank = |p: f64| at(((p * n as f64).ceil() as usize).clamp(1, n) - 1);
        let sum: i128 = values.iter().map(|v| i128::from((*v).into())).sum();
        // The histogram from the sorted values: the count at or below each bound, differenced.
        let mut at_most: Vec<u64> = HISTOGRAM_BOUNDS_SECS
            .iter()
            .map(|b| values.partition_point(|v| (*v).into() <= b * 1000) as u64)
            .collect();
        at_most.push(n as u64);
        let histogram = (0..at_most.len())
            .map(|i| at_most[i] - if i == 0 { 0 } else { at_most[i - 1] })
            .collect();
        Some(Durations {
            persons: n as u64,
            median: secs(median),
            p90: secs(rank(0.9)),
            p99: secs(rank(0.99)),
            mean: secs(sum as f64 / n as f64),
            histogram,
        })
    }
}

/// Durations in milliseconds, all kept (the median and percentiles are exact): as `u32` where
/// they fit, which is every duration of a funnel whose window is under 49 days, else as `i64`.
/// Half the memory of keeping them all as `i64`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Samples {
    narrow: Vec<u32>,
    wide: Vec<i64>,
    /// (milliseconds, persons): a distribution read from a cluster engine.
    counted: Vec<(i64, u64)>,
}

impl Samples {
    pub fn push(&mut self, ms: i64) {
        match u32::try_from(ms) {
            Ok(v) => self.narrow.push(v),
            Err(_) => self.wide.push(ms),
        }
    }

    /// `persons` durations of `ms` each.
    pub fn push_count(&mut self, ms: i64, persons: u64) {
        self.counted.push((ms, persons));
    }

    pub fn append(&mut self, other: Samples) {
        self.narrow.extend(other.narrow);
        self.wide.extend(other.wide);
        self.counted.extend(other.counted);
    }

    fn durations(&mut self) -> Option<Durations> {
        if !self.counted.is_empty() {
            let mut all = std::mem::take(&mut self.counted);
            all.extend(self.narrow.iter().map(|v| (i64::from(*v), 1)));
            all.extend(self.wide.iter().map(|v| (*v, 1)));
            return Durations::of_counts(&mut all);
        }
        if self.wide.is_empty() {
            return Durations::of_unsorted(&mut self.narrow);
        }
        let mut all: Vec<i64> = self.narrow.iter().map(|v| i64::from(*v)).collect();
        all.extend(&self.wide);
        Durations::of_unsorted(&mut all)
    }
}

/// Time to convert to a step, on the chains that gave each person their level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeToConvert {
    pub from_previous: Option<Durations>,
    pub from_first: Option<Durations>,
}

/// What a person whose chain stopped did next, within the window from its step-1 event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Next {
    /// Their next event (in the store's order: time, then event_id): its type and its value of
    /// `next_by`.
    Event(Option<String>, Option<String>),
    /// No event within the window, which has closed by the cutoff.
    Nothing,
    /// No event yet, and the window is still open at the cutoff.
    Open,
}

/// Label of [`Next::Nothing`] in reports.
pub const NOTHING_MORE: &str = "(nothing more)";
/// Label of [`Next::Open`] in reports.
pub const WINDOW_OPEN: &str = "(window still open)";

/// Persons who stopped before a step and did the same next.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Destination {
    /// The next event's type, or [`NOTHING_MORE`] / [`WINDOW_OPEN`].
    pub event_type: String,
    /// Its value of the `next_by` column (absent without `next_by` and for nothing more;
    /// `null` where the event has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Option<String>>,
    pub persons: u64,
}

/// One step of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub name: String,
    /// Persons whose level is at least this step.
    pub persons: u64,
    /// persons / persons of the previous step (0 when that is 0; 1 for a non-empty first step).
    pub conversion_from_previous: f64,
    /// persons / persons of step 1 (0 when that is 0).
    pub conversion_from_first: f64,
    /// persons of the previous step minus persons (0 for the first step).
    pub dropped_from_previous: u64,
    /// Of those dropped, persons whose chain's window was still open at the cutoff: they may
    /// yet reach this step.
    pub pending: u64,
    /// Persons whose chain ended at the step before this one: lost here. Equals
    /// `dropped_from_previous` unless optional steps are involved (0 for the first step).
    pub stopped_before: u64,
    /// `None` for the first step.
    pub time_to_convert: Option<TimeToConvert>,
    /// Where the dropped went (`--dropped-next`): of the persons whose chain stopped at the
    /// step before this one, what they did next, most persons first. Absent without the option
    /// and for the first step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_next: Option<Vec<Destination>>,
}

/// The funnel for all persons (`key` empty) or for one breakdown value.
///
/// Serialised as its fields, except that a [`suppressed`](Self::suppressed) group has `null`
/// for every count, rate and time, and `"suppressed": true` (`suppress.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupReport {
    /// Breakdown column -> value of the step-1 event (`null` where it lacks the column); in
    /// trends also `period`.
    pub key: BTreeMap<String, Option<String>>,
    /// Persons left out because their window had not closed by the cutoff
    /// (`--closed-windows-only`).
    pub excluded_open_windows: u64,
    pub steps: Vec<StepReport>,
    /// Fewer step-1 persons than `--min-persons`: no number of it is shown.
    pub suppressed: bool,
}

/// The result of one funnel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelReport {
    pub funnel: String,
    pub window_seconds: i64,
    /// windowFunnel modes in effect (empty: default mode).
    pub modes: Vec<String>,
    /// Extensions beyond windowFunnel in effect, e.g. `optional: login`, `hold_constant: item_id`.
    pub extensions: Vec<String>,
    pub breakdown: Vec<String>,
    /// Events after this instant were not read; windows open at it are `pending`.
    pub cutoff: String,
    pub closed_windows_only: bool,
    /// Step-1 events considered: from (inclusive) .. to (exclusive), if restricted.
    pub from: Option<String>,
    pub to: Option<String>,
    /// The first group has the empty key (no breakdown); one group per breakdown value follows.
    pub groups: Vec<GroupReport>,
    /// `day`, `week` or `month` when trends were asked for.
    pub interval: Option<String>,
    /// Per period of the step-1 event (in `timezone`), all persons and each breakdown value.
    pub trend: Vec<GroupReport>,
    pub timezone: String,
}

/// The destinations of one level, most persons first (then by label).
fn destinations(next: Option<&BTreeMap<Next, u64>>, with_value: bool) -> Vec<Destination> {
    let mut out: Vec<Destination> = next
        .into_iter()
        .flatten()
        .map(|(k, n)| {
            let (event_type, value) = match k {
                Next::Event(t, v) => (
                    t.clone().unwrap_or_else(|| "(none)".into()),
                    with_value.then(|| v.clone()),
                ),
                Next::Nothing => (NOTHING_MORE.to_string(), None),
                Next::Open => (WINDOW_OPEN.to_string(), None),
            };
            Destination {
                event_type,
                value,
                persons: *n,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.persons
            .cmp(&a.persons)
            .then_with(|| a.event_type.cmp(&b.event_type))
            .then_with(|| a.value.cmp(&b.value))
    });
    out
}

/// The values a `top = n` breakdown by `column` keeps, from the funnel's report broken down by
/// that column alone: the `n` with the most step-1 persons, ties by value order (null first, as
/// keys sort). `None` when there are no more than `n` values (nothing to fold into
/// `"(other)"`). The embedded engine and the cluster engines rank with this one rule.
pub fn top_values(report: &FunnelReport, column: &str, n: usize) -> Option<Vec<Option<String>>> {
    let mut values: Vec<(u64, Option<String>)> = report.groups[1..]
        .iter()
        .map(|g| (g.steps[0].persons, g.key.get(column).cloned().flatten()))
        .collect();
    if values.len() <= n {
        return None;
    }
    values.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    Some(values.into_iter().take(n).map(|(_, v)| v).collect())
}

/// Orders the groups of `report` by key again with `"(other)"` after every value (keys sort
/// `"("` before letters).
pub fn other_last(report: &mut FunnelReport) {
    let order = |k: &Key| -> Vec<(String, bool, Option<String>)> {
        k.iter()
            .map(|(c, v)| {
                let other = v.as_deref() == Some(funnel_core::schema::OTHER);
                (c.clone(), other, v.clone())
            })
            .collect()
    };
    report.groups[1..].sort_by_key(|g| order(&g.key));
    report.trend.sort_by_key(|g| order(&g.key));
}

/// Everything measured for one group.
#[derive(Debug, Clone)]
pub(crate) struct GroupAcc {
    /// Persons by exact level.
    pub levels: Vec<u64>,
    /// Persons by exact level whose chain's window is open at the cutoff.
    pub open: Vec<u64>,
    /// Per step: persons whose reported chain matched it (differs from "level at least" only
    /// for optional steps).
    pub matched: Vec<u64>,
    pub excluded: u64,
    /// Per step (index 1..), milliseconds from the previous step and from step 1.
    pub from_previous: Vec<Samples>,
    pub from_first: Vec<Samples>,
    /// Per exact level: what the persons stopped there did next (`--dropped-next` only).
    pub next: Option<Vec<BTreeMap<Next, u64>>>,
}

impl GroupAcc {
    pub fn new(steps: usize) -> GroupAcc {
        GroupAcc {
            levels: vec![0; steps + 1],
            open: vec![0; steps + 1],
            matched: vec![0; steps],
            excluded: 0,
            from_previous: vec![Samples::default(); steps],
            from_first: vec![Samples::default(); steps],
            next: None,
        }
    }

    pub fn merge(&mut self, other: GroupAcc) {
        for (a, b) in self.levels.iter_mut().zip(other.levels) {
            *a += b;
        }
        for (a, b) in self.open.iter_mut().zip(other.open) {
            *a += b;
        }
        for (a, b) in self.matched.iter_mut().zip(other.matched) {
            *a += b;
        }
        self.excluded += other.excluded;
        for (a, b) in self.from_previous.iter_mut().zip(other.from_previous) {
            a.append(b);
        }
        for (a, b) in self.from_first.iter_mut().zip(other.from_first) {
            a.append(b);
        }
        match (&mut self.next, other.next) {
            (Some(a), Some(b)) => {
                for (x, y) in a.iter_mut().zip(b) {
                    for (k, n) in y {
                        *x.entry(k).or_insert(0) += n;
                    }
                }
            }
            (a @ None, b) => *a = b,
            (Some(_), None) => {}
        }
    }

    /// The group's report; `next_by`: `Some` with "where the dropped went" on (naming the
    /// `next_by` column, if any).
    pub fn report(
        mut self,
        spec: &FunnelSpec,
        key: BTreeMap<String, Option<String>>,
        next_by: Option<Option<&str>>,
    ) -> GroupReport {
        let n = spec.steps.len();
        let mut at_least = vec![0u64; n + 2];
        for l in (1..=n).rev() {
            at_least[l] = at_least[l + 1] + self.levels[l];
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let first = at_least[1];
        // An optional step counts the persons whose chain went through it; "previous" for any
        // step is the nearest earlier step that is not optional.
        let mut prev_required = first;
        let steps = spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let persons = if s.optional {
                    self.matched[i]
                } else {
                    at_least[i + 1]
                };
                let prev = if i == 0 { persons } else { prev_required };
                if !s.optional {
                    prev_required = persons;
                }
                StepReport {
                    name: s.name.clone(),
                    persons,
                    conversion_from_previous: ratio(persons, prev),
                    conversion_from_first: ratio(persons, first),
                    dropped_from_previous: prev.saturating_sub(persons),
                    pending: if i == 0 || s.optional {
                        0
                    } else {
                        self.open[i]
                    },
                    stopped_before: if i == 0 { 0 } else { self.levels[i] },
                    time_to_convert: (i > 0).then(|| TimeToConvert {
                        from_previous: self.from_previous[i].durations(),
                        from_first: self.from_first[i].durations(),
                    }),
                    dropped_next: next_by.filter(|_| i > 0).map(|by| {
                        destinations(self.next.as_ref().and_then(|n| n.get(i)), by.is_some())
                    }),
                }
            })
            .collect();
        GroupReport {
            key,
            excluded_open_windows: self.excluded,
            steps,
            suppressed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates() {
        let spec = funnel_core::parse_funnel(
            "name = \"f\"\nwindow = \"1d\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n[[steps]]\nname = \"b\"\nevent_type = \"warning\"\n[[steps]]\nname = \"c\"\nevent_type = \"purchase\"\n",
            "f.toml",
        )
        .unwrap();
        // 10 persons at level 0 (not counted), 360 at 1, 440 at 2, 200 at 3.
        let mut acc = GroupAcc::new(3);
        acc.levels = vec![10, 360, 440, 200];
        acc.open = vec![0, 7, 3, 0];
        let g = acc.report(&spec, BTreeMap::new(), None);
        let persons: Vec<u64> = g.steps.iter().map(|s| s.persons).collect();
        assert_eq!(persons, vec![1000, 640, 200]);
        assert_eq!(g.steps[0].conversion_from_previous, 1.0);
        assert_eq!(g.steps[1].conversion_from_previous, 0.64);
        assert_eq!(g.steps[1].dropped_from_previous, 360);
        assert_eq!(g.steps[1].pending, 7);
        assert_eq!(g.steps[2].pending, 3);
        assert_eq!(g.steps[2].conversion_from_first, 0.2);
        assert!(g.steps[0].time_to_convert.is_none());
        assert_eq!(
            g.steps[1].time_to_convert,
            Some(TimeToConvert {
                from_previous: None,
                from_first: None
            })
        );
        let empty = GroupAcc::new(3).report(&spec, BTreeMap::new(), None);
        assert!(
            empty
                .steps
                .iter()
                .all(|s| s.persons == 0 && s.conversion_from_previous == 0.0)
        );
    }

    #[test]
    fn durations_are_exact() {
        let d = Durations::of(&mut [4000, 1000, 3000, 2000]).unwrap();
        assert_eq!((d.persons, d.median, d.mean), (4, 2.5, 2.5));
        assert_eq!((d.p90, d.p99), (4.0, 4.0));
        let mut v: Vec<i64> = (1..=100).map(|s| s * 1000).collect();
        let d = Durations::of(&mut v).unwrap();
        assert_eq!((d.median, d.p90, d.p99, d.mean), (50.5, 90.0, 99.0, 50.5));
        let d = Durations::of(&mut [7]).unwrap();
        // Samples keep durations beyond u32 (and negative ones) exactly, mixed with the rest.
        let mut s = Samples::default();
        let mut mixed = vec![5_000_000_000i64, 3, -2, 4_294_967_295, 4_294_967_296, 7, 1];
        for v in &mixed {
            s.push(*v);
        }
        let mut other = Samples::default();
        other.push(9);
        mixed.push(9);
        s.append(other);
        assert_eq!(s.durations(), Durations::of(&mut mixed));
        assert_eq!(s.durations().unwrap().median, 0.008);
        assert_eq!((d.median, d.p90, d.p99), (0.007, 0.007, 0.007));
        assert!(Durations::of(&mut []).is_none());
    }

    proptest::proptest! {
        /// Selection gives the order statistics a full sort gives.
        #[test]
        fn selected_durations_equal_sorted_ones(
            mut values in proptest::collection::vec(-5i64..2_000_000, 0..300),
        ) {
            let mut sorted = values.clone();
            sorted.sort_unstable();
            proptest::prop_assert_eq!(
                Durations::of_unsorted(&mut values),
                Durations::of_sorted(&sorted)
            );
        }

        /// A distribution of (value, persons) gives exactly what the values repeated give,
        /// however it is split between counted and single samples.
        #[test]
        fn counted_durations_equal_repeated_ones(
            pairs in proptest::collection::vec((-5i64..200_000, 1u64..6), 0..60),
            singles in proptest::collection::vec(0i64..200_000, 0..20),
        ) {
            let mut repeated: Vec<i64> = pairs
                .iter()
                .flat_map(|&(v, c)| std::iter::repeat_n(v, c as usize))
                .chain(singles.iter().copied())
                .collect();
            let mut mixed = Samples::default();
            for &(v, c) in &pairs {
                mixed.push_count(v, c);
            }
            for &v in &singles {
                mixed.push(v);
            }
            repeated.sort_unstable();
            proptest::prop_assert_eq!(mixed.durations(), Durations::of_sorted(&repeated));
        }
    }
}
