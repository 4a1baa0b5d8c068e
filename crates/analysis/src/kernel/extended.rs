//! The extended kernel: funnels with chain extensions beyond windowFunnel (README "Extensions").
//!
//! A chain starts at a step-1 event and matches the later steps in order (`order = "strict"`),
//! each by an event later in the (time, step) order of entries, as in windowFunnel, or skips an
//! optional step. It must keep every matched event within `window` of the step-1 event, each
//! `within` gap from the previous matched event, equal `hold_constant` values, and no exclusion
//! event strictly between the events of an exclusion's `after` and `before` steps. A chain's
//! level is the index of its last matched step. The search is exhaustive (memoised), so the
//! level is the best any chain reaches; with no extension in use it equals windowFunnel's
//! default mode (checked by property tests).
//!
//! `order = "any"`: steps may happen in any order; the level is the last step index k such that
//! every required step up to k (and k itself) has a matching event, all with equal
//! `hold_constant` values, within `window` of the earliest of them.

use std::collections::HashMap;

use funnel_core::{FunnelSpec, Order};

/// Marks a skipped (optional) step in a reported chain.
pub const SKIPPED: u32 = u32::MAX;

/// One person's events for the extended kernel.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub ts: &'a [i64],
    /// Step bitmask per event.
    pub masks: &'a [u64],
    /// Exclusion bitmask per event (bit j: the event matches exclusion j).
    pub excluded: &'a [u64],
    /// `hold_constant` value code per event (equal codes, equal values).
    pub hold: &'a [u32],
}

#[derive(Debug, Clone)]
pub struct ExtKernel {
    steps: usize,
    window: i64,
    optional: Vec<bool>,
    within: Vec<Option<i64>>,
    /// (after, before) step indexes.
    exclusions: Vec<(usize, usize)>,
    any_order: bool,
}

/// A chain's quality: higher level, then more matched steps, then a later start.
type Score = (u32, u32, i64);

impl ExtKernel {
    pub fn new(spec: &FunnelSpec) -> ExtKernel {
        ExtKernel {
            steps: spec.steps.len(),
            window: spec.window_ms,
            optional: spec.steps.iter().map(|s| s.optional).collect(),
            within: spec.steps.iter().map(|s| s.within_ms).collect(),
            exclusions: spec
                .exclusions
                .iter()
                .map(|x| (x.after, x.before))
                .collect(),
            any_order: spec.order == Order::Any,
        }
    }

    /// The best chain; `only_start` restricts chains to those starting at that event (attempts).
    /// `path` receives one entry per step up to the level: the event's row, or [`SKIPPED`].
    pub fn best(&self, rows: Rows<'_>, only_start: Option<usize>, path: &mut Vec<u32>) -> u32 {
        path.clear();
        if self.any_order {
            self.best_any(rows, path)
        } else {
            self.best_strict(rows, only_start, path)
        }
    }

    fn best_strict(&self, rows: Rows<'_>, only_start: Option<usize>, path: &mut Vec<u32>) -> u32 {
        // Entries in (ts, step, row) order, as windowFunnel orders them.
        let mut entries: Vec<(i64, usize, usize)> = Vec::new();
        for (r, &m) in rows.masks.iter().enumerate() {
            let mut bits = m;
            while bits != 0 {
                let k = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                entries.push((rows.ts[r], k, r));
            }
        }
        entries.sort_unstable();
        // Times of the events of each exclusion, sorted.
        let excl_times: Vec<Vec<i64>> = (0..self.exclusions.len())
            .map(|j| {
                (0..rows.ts.len())
                    .filter(|r| rows.excluded[*r] & (1 << j) != 0)
                    .map(|r| rows.ts[r])
                    .collect()
            })
            .collect();
        let mut best: Option<(Score, Vec<u32>)> = None;
        for (p, &(t0, k, r)) in entries.iter().enumerate() {
            if k != 0 || only_start.is_some_and(|s| s != r) {
                continue;
            }
            let mut search = Search {
                kernel: self,
                rows,
                entries: &entries,
                excl_times: &excl_times,
                t0,
                hold: rows.hold[r],
                memo: HashMap::new(),
            };
            let after_ts: Vec<Option<i64>> = self
                .exclusions
                .iter()
                .map(|&(after, _)| (after == 0).then_some(t0))
                .collect();
            let (level, matched, mut tail) = search.solve(1, p, 1, &after_ts);
            let score = (level, matched + 1, t0);
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                tail.insert(0, r as u32);
                tail.truncate(level as usize);
                best = Some((score, tail));
            }
        }
        match best {
            Some(((level, _, _), chain)) => {
                path.extend(chain);
                level
            }
            None => 0,
        }
    }

    fn best_any(&self, rows: Rows<'_>, path: &mut Vec<u32>) -> u32 {
        let mut best: Option<(Score, Vec<u32>)> = None;
        let mut starts: Vec<(i64, u32)> = (0..rows.ts.len())
            .filter(|r| rows.masks[*r] != 0)
            .map(|r| (rows.ts[r], rows.hold[r]))
            .collect();
        starts.sort_unstable();
        starts.dedup();
        for (t0, h) in starts {
            let mut chain = Vec::new();
            let mut level = 0;
            let mut matched = 0;
            for k in 0..self.steps {
                let hit = (0..rows.ts.len()).find(|&r| {
                    rows.masks[r] & (1 << k) != 0
                        && rows.hold[r] == h
                        && rows.ts[r] >= t0
                        && rows.ts[r] <= t0 + self.window
                });
                match hit {
                    Some(r) => {
                        chain.push(r as u32);
                        level = k as u32 + 1;
                        matched += 1;
                    }
                    None if self.optional[k] => chain.push(SKIPPED),
                    None => break,
                }
            }
            chain.truncate(level as usize);
            let first = chain
                .iter()
                .filter(|r| **r != SKIPPED)
                .map(|r| rows.ts[*r as usize])
                .min();
            let score = (level, matched, first.unwrap_or(i64::MIN));
            if level > 0 && best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, chain));
            }
        }
        match best {
            Some(((level, _, _), chain)) => {
                path.extend(chain);
                level
            }
            None => 0,
        }
    }
}

/// (next step, position of the last matched entry, exclusion after-times).
type MemoKey = (usize, usize, Vec<Option<i64>>);
/// (level, matched steps, rows of the remaining steps up to the level).
type Best = (u32, u32, Vec<u32>);

struct Search<'a> {
    kernel: &'a ExtKernel,
    rows: Rows<'a>,
    entries: &'a [(i64, usize, usize)],
    excl_times: &'a [Vec<i64>],
    t0: i64,
    hold: u32,
    /// (next step, position of the last matched entry, exclusion after-times) ->
    /// (level, matched steps, rows of steps k..level).
    memo: HashMap<MemoKey, Best>,
}

impl Search<'_> {
    /// Best continuation from step `k`, the last matched entry at `last`, level so far `level`.
    fn solve(
        &mut self,
        k: usize,
        last: usize,
        level: u32,
        after_ts: &[Option<i64>],
    ) -> (u32, u32, Vec<u32>) {
        let kern = self.kernel;
        if k == kern.steps {
            return (level, 0, Vec::new());
        }
        let key = (k, last, after_ts.to_vec());
        if let Some(hit) = self.memo.get(&key) {
            return hit.clone();
        }
        // Stopping here.
        let mut best: (u32, u32, Vec<u32>) = (level, 0, Vec::new());
        let last_ts = self.entries[last].0;
        for q in last + 1..self.entries.len() {
            let (t, step, r) = self.entries[q];
            if t > self.t0 + kern.window {
                break;
            }
            if step != k || self.rows.hold[r] != self.hold {
                continue;
            }
            if kern.within[k].is_some_and(|w| t - last_ts > w) {
                continue;
            }
            let blocked = kern.exclusions.iter().enumerate().any(|(j, &(_, before))| {
                before == k
                    && after_ts[j].is_some_and(|a| {
                        let times = &self.excl_times[j];
                        let i = times.partition_point(|x| *x <= a);
                        i < times.len() && times[i] < t
                    })
            });
            if blocked {
                continue;
            }
            let mut next = after_ts.to_vec();
            for (j, &(after, _)) in kern.exclusions.iter().enumerate() {
                if after == k {
                    next[j] = Some(t);
                }
            }
            let (lv, m, tail) = self.solve(k + 1, q, k as u32 + 1, &next);
            if (lv, m + 1) > (best.0, best.1) {
                let mut chain = Vec::with_capacity(tail.len() + 1);
                chain.push(r as u32);
                chain.extend(tail);
                best = (lv, m + 1, chain);
            }
        }
        if kern.optional[k] {
            let (lv, m, tail) = self.solve(k + 1, last, level, after_ts);
            if (lv, m) > (best.0, best.1) {
                let mut chain = Vec::with_capacity(tail.len() + 1);
                chain.push(SKIPPED);
                chain.extend(tail);
                best = (lv, m, chain);
            }
        }
        self.memo.insert(key, best.clone());
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_core::ModeSet;

    use crate::kernel::Kernel;
    use proptest::prelude::*;

    fn spec(text: &str) -> FunnelSpec {
        funnel_core::parse_funnel(text, "t.toml").unwrap()
    }

    fn steps(names: &[(&str, &str)]) -> String {
        names
            .iter()
            .map(|(n, extra)| format!("[[steps]]\nname = \"{n}\"\nevent_type = \"{n}\"\n{extra}\n"))
            .collect()
    }

    /// Events as (ts, steps satisfied 1-based, excluded?, hold code).
    fn run(k: &ExtKernel, events: &[(i64, &[u32], bool, u32)]) -> (u32, Vec<u32>) {
        let ts: Vec<i64> = events.iter().map(|e| e.0).collect();
        let masks: Vec<u64> = events
            .iter()
            .map(|e| e.1.iter().fold(0, |m, s| m | 1 << (s - 1)))
            .collect();
        let ex: Vec<u64> = events.iter().map(|e| u64::from(e.2)).collect();
        let hold: Vec<u32> = events.iter().map(|e| e.3).collect();
        let mut path = Vec::new();
        let level = k.best(
            Rows {
                ts: &ts,
                masks: &masks,
                excluded: &ex,
                hold: &hold,
            },
            None,
            &mut path,
        );
        (level, path)
    }

    #[test]
    fn optional_within_hold_exclusions_any() {
        // click -> warning (optional) -> purchase: a journey without the warning page still converts.
        let k = ExtKernel::new(&spec(&format!(
            "name = \"f\"\nwindow = \"1h\"\n{}",
            steps(&[
                ("click", ""),
                ("warning", "optional = true"),
                ("purchase", "")
            ])
        )));
        assert_eq!(
            run(&k, &[(0, &[1], false, 0), (5, &[3], false, 0)]),
            (3, vec![0, SKIPPED, 1])
        );
        assert_eq!(
            run(
                &k,
                &[
                    (0, &[1], false, 0),
                    (2, &[2], false, 0),
                    (5, &[3], false, 0)
                ]
            ),
            (3, vec![0, 1, 2])
        );
        assert_eq!(
            run(&k, &[(0, &[1], false, 0), (2, &[2], false, 0)]),
            (2, vec![0, 1])
        );

        // within: the purchase must follow the view by at most 10 s; a later view helps.
        let k = ExtKernel::new(&spec(&format!(
            "name = \"f\"\nwindow = \"1h\"\n{}",
            steps(&[("a", ""), ("b", ""), ("c", "within = \"10s\"")])
        )));
        let ev: &[(i64, &[u32], bool, u32)] = &[
            (0, &[1], false, 0),
            (1000, &[2], false, 0),
            (50_000, &[2], false, 0),
            (55_000, &[3], false, 0),
        ];
        assert_eq!(run(&k, ev), (3, vec![0, 2, 3]));
        assert_eq!(run(&k, &ev[..3]).0, 2);

        // hold_constant: the purchase must be of the clicked item.
        let k = ExtKernel::new(&spec(&format!(
            "name = \"f\"\nwindow = \"1h\"\nhold_constant = \"item_id\"\n{}",
            steps(&[("a", ""), ("b", "")])
        )));
        assert_eq!(run(&k, &[(0, &[1], false, 1), (5, &[2], false, 2)]).0, 1);
        assert_eq!(
            run(
                &k,
                &[
                    (0, &[1], false, 1),
                    (5, &[2], false, 2),
                    (6, &[1], false, 2),
                    (7, &[2], false, 2)
                ]
            )
            .0,
            2
        );

        // An exclusion event between click and purchase loses that chain, not a later one.
        let text = format!(
            "name = \"f\"\nwindow = \"1h\"\n{}[[exclusions]]\nevent_type = \"report\"\n",
            steps(&[("a", ""), ("b", "")])
        );
        let k = ExtKernel::new(&spec(&text));
        assert_eq!(
            run(
                &k,
                &[(0, &[1], false, 0), (5, &[], true, 0), (9, &[2], false, 0)]
            )
            .0,
            1
        );
        assert_eq!(
            run(
                &k,
                &[
                    (0, &[1], false, 0),
                    (5, &[], true, 0),
                    (6, &[1], false, 0),
                    (9, &[2], false, 0)
                ]
            ),
            (2, vec![2, 3])
        );
        // At the same instant as a step it is not "between".
        assert_eq!(
            run(
                &k,
                &[(0, &[1], false, 0), (9, &[], true, 0), (9, &[2], false, 0)]
            )
            .0,
            2
        );

        // Any order: purchase before the click still counts within the window.
        let k = ExtKernel::new(&spec(&format!(
            "name = \"f\"\nwindow = \"10s\"\norder = \"any\"\n{}",
            steps(&[("a", ""), ("b", "")])
        )));
        assert_eq!(
            run(&k, &[(0, &[2], false, 0), (5_000, &[1], false, 0)]),
            (2, vec![1, 0])
        );
        assert_eq!(
            run(&k, &[(0, &[2], false, 0), (11_000, &[1], false, 0)]).0,
            1
        );
        assert_eq!(run(&k, &[(0, &[2], false, 0)]).0, 0, "no step 1");
    }

    /// Brute force: every chain, checked against every rule.
    fn reference(k: &ExtKernel, ts: &[i64], masks: &[u64], ex: &[u64], hold: &[u32]) -> (u32, u32) {
        let mut entries: Vec<(i64, usize, usize)> = Vec::new();
        for r in 0..ts.len() {
            for s in 0..k.steps {
                if masks[r] & (1 << s) != 0 {
                    entries.push((ts[r], s, r));
                }
            }
        }
        entries.sort();
        let mut best = (0u32, 0u32);
        // chain[s] = Some(entry position) or None (skipped); positions strictly increase.
        fn go(
            k: &ExtKernel,
            e: &[(i64, usize, usize)],
            ts: &[i64],
            ex: &[u64],
            hold: &[u32],
            chain: &mut Vec<Option<usize>>,
            best: &mut (u32, u32),
        ) {
            let s = chain.len();
            let level = chain
                .iter()
                .rposition(|c| c.is_some())
                .map_or(0, |p| p as u32 + 1);
            let matched = chain.iter().filter(|c| c.is_some()).count() as u32;
            *best = (*best).max((level, matched));
            if s == k.steps {
                return;
            }
            let last = chain
                .iter()
                .rev()
                .flatten()
                .next()
                .copied()
                .expect("step 1 is matched");
            let first = chain[0].expect("step 1 is matched");
            for q in last + 1..e.len() {
                let (t, step, r) = e[q];
                if step != s || t > e[first].0 + k.window || hold[r] != hold[e[first].2] {
                    continue;
                }
                if k.within[s].is_some_and(|w| t - e[last].0 > w) {
                    continue;
                }
                let blocked = k.exclusions.iter().enumerate().any(|(j, &(a, b))| {
                    b == s
                        && chain[a].is_some_and(|pa| {
                            (0..ts.len())
                                .any(|x| ex[x] & (1 << j) != 0 && ts[x] > e[pa].0 && ts[x] < t)
                        })
                });
                if blocked {
                    continue;
                }
                chain.push(Some(q));
                go(k, e, ts, ex, hold, chain, best);
                chain.pop();
            }
            if k.optional[s] {
                chain.push(None);
                go(k, e, ts, ex, hold, chain, best);
                chain.pop();
            }
        }
        for (p, e) in entries.iter().enumerate() {
            if e.1 == 0 {
                let mut chain = vec![Some(p)];
                go(k, &entries, ts, ex, hold, &mut chain, &mut best);
            }
        }
        best
    }

    /// (steps, events as (ts, mask, excluded, hold), optional, within, window, exclusion?)
    type World = (
        usize,
        Vec<(i64, u64, bool, u32)>,
        Vec<bool>,
        Vec<Option<i64>>,
        i64,
        bool,
    );

    fn world() -> impl Strategy<Value = World> {
        (2usize..=4).prop_flat_map(|n| {
            (
                Just(n),
                prop::collection::vec(
                    (0i64..10, 0..(1u64 << n), prop::bool::weighted(0.2), 0u32..2),
                    0..9,
                ),
                prop::collection::vec(prop::bool::weighted(0.3), n),
                prop::collection::vec(prop::option::weighted(0.3, 0i64..4), n),
                prop::sample::select(vec![0i64, 2, 5, 20]),
                any::<bool>(),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn extended_matches_brute_force((n, events, optional, within, window, exclusion) in world()) {
            let mut events = events;
            events.sort_by_key(|e| e.0);
            let k = ExtKernel {
                steps: n,
                window,
                optional: optional.iter().enumerate().map(|(i, o)| i > 0 && *o).collect(),
                within: within.iter().enumerate().map(|(i, w)| if i > 0 { *w } else { None }).collect(),
                exclusions: if exclusion { vec![(0, n - 1)] } else { vec![] },
                any_order: false,
            };
            let ts: Vec<i64> = events.iter().map(|e| e.0).collect();
            let masks: Vec<u64> = events.iter().map(|e| e.1).collect();
            let ex: Vec<u64> = events.iter().map(|e| u64::from(e.2)).collect();
            let hold: Vec<u32> = events.iter().map(|e| e.3).collect();
            let mut path = Vec::new();
            let level = k.best(Rows { ts: &ts, masks: &masks, excluded: &ex, hold: &hold }, None, &mut path);
            let (want_level, want_matched) = reference(&k, &ts, &masks, &ex, &hold);
            prop_assert_eq!(level, want_level);
            prop_assert_eq!(path.len(), level as usize);
            prop_assert_eq!(path.iter().filter(|r| **r != SKIPPED).count() as u32, want_matched, "matched steps of the reported chain");
        }

        /// With no extension in use, the extended kernel is windowFunnel's default mode.
        #[test]
        fn without_extensions_it_is_window_funnel(n in 1usize..=4, events in prop::collection::vec((0i64..10, 0u64..16), 0..10), window in prop::sample::select(vec![0i64, 1, 3, 10])) {
            let mut events = events;
            events.sort_by_key(|e| e.0);
            let masks: Vec<u64> = events.iter().map(|e| e.1 & ((1 << n) - 1)).collect();
            let ts: Vec<i64> = events.iter().map(|e| e.0).collect();
            let zeros = vec![0u64; ts.len()];
            let hold = vec![0u32; ts.len()];
            let k = ExtKernel { steps: n, window, optional: vec![false; n], within: vec![None; n], exclusions: vec![], any_order: false };
            let mut path = Vec::new();
            let got = k.best(Rows { ts: &ts, masks: &masks, excluded: &zeros, hold: &hold }, None, &mut path);
            prop_assert_eq!(got, Kernel::new(n, window, ModeSet::default()).level(&ts, &masks));
        }
    }
}
