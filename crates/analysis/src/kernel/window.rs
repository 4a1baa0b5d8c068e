//! The per-person funnel state machine: ClickHouse `windowFunnel`, exactly.
//!
//! Input: one person's events in time order (ties in store order), each reduced to a step
//! bitmask (bit k set = the event satisfies step k+1). Output: the level reached, as
//! `windowFunnel(window)(ts, cond1, ..., condN)` returns it.
//!
//! How ClickHouse evaluates (and so this kernel): each event contributes one entry per step it
//! satisfies (and, under `strict_order`, an "other" entry when it satisfies none); entries are
//! ordered by (timestamp, step), "other" first. For each level the kernel keeps the latest chain
//! that reached it: a step-1 entry starts a chain; a step-k entry extends the level-(k-1) chain
//! when `ts <= chain start + window` (and, under `strict_increase`, when its timestamp is
//! greater than that chain's last one). The level is the highest level ever reached.
//! `strict_deduplication` stops at a step whose level was already reached; `strict_order` stops
//! at an "other" entry or a step whose previous level was not reached, once a chain has started
//! (`allow_reentry` skips such a step instead); `strict_once` forbids using one event for two
//! steps of a chain, and then all chains per level are tracked, not just the latest.
//!
//! The kernel allocates nothing per person outside `strict_once`.

use funnel_core::{MAX_STEPS, ModeSet};

/// A funnel's parameters for the kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    steps: u32,
    window: i64,
    modes: ModeSet,
}

/// What one entry does to the computation.
enum Flow {
    Continue,
    /// The result is final.
    Return(u32),
    /// Stop reading entries; the result is the highest level reached.
    Stop,
}

/// Number of levels reached, given the bitmask of reached levels (always a prefix).
fn highest(reached: u64) -> u32 {
    u64::BITS - reached.leading_zeros()
}

// A step is a bit of a `u64` mask: the spec's step limit must fit.
const _: () = assert!(MAX_STEPS <= u64::BITS as usize);

impl Kernel {
    /// `steps` in 1..=[`MAX_STEPS`]; `window` in the timestamps' unit (milliseconds in the
    /// engine).
    pub fn new(steps: usize, window: i64, modes: ModeSet) -> Kernel {
        assert!(
            (1..=MAX_STEPS).contains(&steps),
            "1 to {MAX_STEPS} steps, not {steps}"
        );
        Kernel {
            steps: steps as u32,
            window,
            modes,
        }
    }

    /// The level reached by one person. `ts` is non-decreasing; `masks[i]` is event i's step
    /// bitmask (bits at or above `steps` must be clear).
    pub fn level(&self, ts: &[i64], masks: &[u64]) -> u32 {
        self.run(ts, masks, &mut Scratch::default())
    }

    /// Like [`Kernel::level`], and leaves in `scratch.path` the rows (indexes into `ts`) of the
    /// reported chain, one per step reached: the most recent chain to reach the final level
    /// (for a full conversion, the first chain to complete; under `strict_once`, the last chain
    /// recorded at that level).
    pub fn run(&self, ts: &[i64], masks: &[u64], scratch: &mut Scratch) -> u32 {
        scratch.path.clear();
        scratch.nodes.clear();
        debug_assert_eq!(ts.len(), masks.len());
        debug_assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "events must be in time order"
        );
        let has_entries = if self.modes.strict_order {
            !ts.is_empty()
        } else {
            masks.iter().any(|m| *m != 0)
        };
        if !has_entries {
            return 0;
        }
        if !self.modes.strict_order && self.steps == 1 {
            // ClickHouse answers 1 at once; the chain reported is the first step-1 event.
            if let Some(r) = masks.iter().position(|m| *m & 1 != 0) {
                scratch.path.push(r as u32);
            }
            return 1;
        }
        if self.modes.strict_once {
            StrictOnce::new(self).run(ts, masks, &mut scratch.path)
        } else {
            self.run_latest_chain(ts, masks, scratch)
        }
    }

    /// Calls `f(step, row)` for every entry in (ts, step, row) order; `step` is `None` for the
    /// "other" entry of an event matching no step (strict_order only).
    #[allow(clippy::needless_range_loop)] // `r` is the row index handed to `f`
    fn for_each_entry(
        &self,
        ts: &[i64],
        masks: &[u64],
        mut f: impl FnMut(Option<u32>, usize) -> Flow,
    ) -> Option<u32> {
        let mut i = 0;
        while i < ts.len() {
            let mut j = i + 1;
            while j < ts.len() && ts[j] == ts[i] {
                j += 1;
            }
            if j == i + 1 {
                // The common case: one event at this timestamp.
                if masks[i] == 0 {
                    if self.modes.strict_order {
                        match f(None, i) {
                            Flow::Continue => {}
                            Flow::Return(l) => return Some(l),
                            Flow::Stop => return None,
                        }
                    }
                } else {
                    let mut bits = masks[i];
                    while bits != 0 {
                        let k = bits.trailing_zeros();
                        bits &= bits - 1;
                        match f(Some(k), i) {
                            Flow::Continue => {}
                            Flow::Return(l) => return Some(l),
                            Flow::Stop => return None,
                        }
                    }
                }
            } else {
                if self.modes.strict_order {
                    for r in i..j {
                        if masks[r] == 0 {
                            match f(None, r) {
                                Flow::Continue => {}
                                Flow::Return(l) => return Some(l),
                                Flow::Stop => return None,
                            }
                        }
                    }
                }
                let mut bits = masks[i..j].iter().fold(0u64, |a, m| a | m);
                while bits != 0 {
                    let k = bits.trailing_zeros();
                    bits &= bits - 1;
                    for r in i..j {
                        if masks[r] & (1 << k) != 0 {
                            match f(Some(k), r) {
                                Flow::Continue => {}
                                Flow::Return(l) => return Some(l),
                                Flow::Stop => return None,
                            }
                        }
                    }
                }
            }
            i = j;
        }
        None
    }

    /// All modes but strict_once: one (start, last) chain per level, the latest to reach it.
    /// Chains are kept as linked nodes (row, parent) in `scratch.nodes`.
    fn run_latest_chain(&self, ts: &[i64], masks: &[u64], scratch: &mut Scratch) -> u32 {
        // Per level, the latest chain to reach it: (start, last, node). Read only for levels
        // reached in this run, so the buffer is reused uncleared.
        if scratch.chain.len() < self.steps as usize {
            scratch.chain.resize(self.steps as usize, (0, 0, 0));
        }
        let chain = &mut scratch.chain;
        let nodes = &mut scratch.nodes;
        let mut reached = 0u64;
        let mut started = false;
        let m = self.modes;
        let result = self.for_each_entry(ts, masks, |step, row| {
            let t = ts[row];
            let Some(k) = step else {
                return if started { Flow::Stop } else { Flow::Continue };
            };
            if k == 0 {
                nodes.push((row as u32, NO_PARENT));
                chain[0] = (t, t, nodes.len() as u32 - 1);
                reached |= 1;
                started = true;
            } else if m.strict_deduplication && reached & (1 << k) != 0 {
                return Flow::Return(highest(reached));
            } else if m.strict_order && started && reached & (1 << (k - 1)) == 0 {
                if !m.allow_reentry {
                    return Flow::Return(highest(reached));
                }
            } else if reached & (1 << (k - 1)) != 0 {
                let (start, last, parent) = chain[k as usize - 1];
                if t <= start + self.window && (!m.strict_increase || last < t) {
                    nodes.push((row as u32, parent));
                    chain[k as usize] = (start, t, nodes.len() as u32 - 1);
                    reached |= 1 << k;
                    if k + 1 == self.steps {
                        return Flow::Return(self.steps);
                    }
                }
            }
            Flow::Continue
        });
        let level = result.unwrap_or_else(|| highest(reached));
        if level > 0 {
            let mut node = chain[level as usize - 1].2;
            while node != NO_PARENT {
                let (row, parent) = scratch.nodes[node as usize];
                scratch.path.push(row);
                node = parent;
            }
            scratch.path.reverse();
        }
        level
    }
}

const NO_PARENT: u32 = u32::MAX;

/// Reusable buffers of the kernel, and the reported chain of the last run.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    nodes: Vec<(u32, u32)>,
    chain: Vec<(i64, i64, u32)>,
    /// Rows of the reported chain, step 1 first.
    pub path: Vec<u32>,
}

/// strict_once: every chain per level, each with the events it used.
struct StrictOnce<'k> {
    kernel: &'k Kernel,
    /// Per level: (start, last, rows used for steps 1..=level).
    levels: Vec<Vec<(i64, i64, Vec<u32>)>>,
}

impl<'k> StrictOnce<'k> {
    fn new(kernel: &'k Kernel) -> StrictOnce<'k> {
        StrictOnce {
            kernel,
            levels: vec![Vec::new(); kernel.steps as usize],
        }
    }

    fn highest(&self) -> u32 {
        self.levels
            .iter()
            .rposition(|l| !l.is_empty())
            .map_or(0, |p| p as u32 + 1)
    }

    fn run(mut self, ts: &[i64], masks: &[u64], path: &mut Vec<u32>) -> u32 {
        let kernel = self.kernel;
        let m = kernel.modes;
        let mut started = false;
        let result = kernel.for_each_entry(ts, masks, |step, row| {
            let t = ts[row];
            let row = row as u32;
            let Some(k) = step else {
                return if started { Flow::Stop } else { Flow::Continue };
            };
            let k = k as usize;
            if k == 0 {
                self.levels[0].push((t, t, vec![row]));
                started = true;
            } else if m.strict_deduplication && !self.levels[k].is_empty() {
                return Flow::Return(self.highest());
            } else if m.strict_order && started && self.levels[k - 1].is_empty() {
                if !m.allow_reentry {
                    let first_empty = self
                        .levels
                        .iter()
                        .position(Vec::is_empty)
                        .unwrap_or(self.levels.len());
                    return Flow::Return(first_empty as u32);
                }
            } else if !self.levels[k - 1].is_empty() {
                let (before, after) = self.levels.split_at_mut(k);
                let (prev, cur) = (&mut before[k - 1], &mut after[0]);
                let mut i = 0;
                while i < prev.len() {
                    let (start, last, ref used) = prev[i];
                    let in_window = t <= start + kernel.window;
                    if !in_window && prev.len() > 1 {
                        // ClickHouse drops chains that fell out of the window, keeping one.
                        prev.remove(i);
                        continue;
                    }
                    let ok = in_window && !used.contains(&row) && (!m.strict_increase || last < t);
                    if ok {
                        let mut chain = used.clone();
                        chain.push(row);
                        cur.push((start, t, chain));
                        if k + 1 == kernel.steps as usize {
                            return Flow::Return(kernel.steps);
                        }
                    }
                    i += 1;
                }
            }
            Flow::Continue
        });
        let level = result.unwrap_or_else(|| self.highest());
        if level > 0
            && let Some((_, _, chain)) = self.levels[level as usize - 1].last()
        {
            path.extend_from_slice(&chain[..level as usize]);
        }
        level
    }
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use funnel_core::Mode;

    use super::*;

    fn k(steps: usize, window: i64, modes: &[Mode]) -> Kernel {
        Kernel::new(steps, window, modes.iter().copied().collect::<ModeSet>())
    }

    /// Events as (ts, steps satisfied, 1-based).
    fn lv(kernel: &Kernel, events: &[(i64, &[u32])]) -> u32 {
        let ts: Vec<i64> = events.iter().map(|e| e.0).collect();
        let masks: Vec<u64> = events
            .iter()
            .map(|e| e.1.iter().fold(0, |m, s| m | 1 << (s - 1)))
            .collect();
        kernel.level(&ts, &masks)
    }

    #[test]
    fn default_mode_basics() {
        let f = k(3, 10, &[]);
        assert_eq!(lv(&f, &[]), 0);
        assert_eq!(lv(&f, &[(0, &[2]), (1, &[3])]), 0, "no step 1");
        assert_eq!(
            lv(&f, &[(0, &[1]), (5, &[2]), (10, &[3])]),
            3,
            "window is inclusive"
        );
        assert_eq!(
            lv(&f, &[(0, &[1]), (5, &[2]), (11, &[3])]),
            2,
            "one unit over"
        );
        assert_eq!(
            lv(&f, &[(0, &[1]), (20, &[1]), (25, &[2]), (30, &[3])]),
            3,
            "a later step 1 starts a new chain"
        );
        assert_eq!(
            lv(&f, &[(0, &[1, 2, 3])]),
            3,
            "one event may satisfy several steps"
        );
        assert_eq!(
            lv(&f, &[(0, &[3]), (0, &[2]), (0, &[1])]),
            3,
            "ties are ordered by step"
        );
        assert_eq!(lv(&k(1, 0, &[]), &[(5, &[1])]), 1);
    }

    /// ClickHouse's own windowFunnel tests, re-run on ClickHouse 26.9 (testdata/README.md).
    #[test]
    fn clickhouse_test_cases() {
        let text = include_str!("../../testdata/clickhouse_window_funnel_cases.json");
        let cases: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert!(cases.len() >= 100);
        for (i, case) in cases.iter().enumerate() {
            let modes: BTreeSet<Mode> = case["modes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Mode::parse(m.as_str().unwrap()).unwrap())
                .collect();
            let steps = case["steps"].as_u64().unwrap() as usize;
            let window = case["window"].as_i64().unwrap();
            // Rows come in insertion order; the store holds them in time order (stable).
            let mut rows: Vec<(i64, u64)> = case["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let conds = r[1].as_array().unwrap();
                    let mask = conds.iter().enumerate().fold(0u64, |m, (k, c)| {
                        if c.as_bool().unwrap() { m | 1 << k } else { m }
                    });
                    (r[0].as_i64().unwrap(), mask)
                })
                .collect();
            rows.sort_by_key(|r| r.0);
            let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let masks: Vec<u64> = rows.iter().map(|r| r.1).collect();
            let got = Kernel::new(steps, window, ModeSet::from(&modes)).level(&ts, &masks);
            assert_eq!(
                u64::from(got),
                case["expected"].as_u64().unwrap(),
                "case {i}: {} / {}",
                case["source"],
                case["note"]
            );
        }
    }

    #[test]
    fn strict_modes() {
        // A -> B -> D -> C stops at D under strict_order (ClickHouse docs).
        let events: &[(i64, &[u32])] = &[(0, &[1]), (1, &[2]), (2, &[]), (3, &[3])];
        assert_eq!(lv(&k(3, 10, &[]), events), 3);
        assert_eq!(lv(&k(3, 10, &[Mode::StrictOrder]), events), 2);
        // Repeated B stops under strict_deduplication.
        let events: &[(i64, &[u32])] = &[(0, &[1]), (1, &[2]), (2, &[2]), (3, &[3])];
        assert_eq!(lv(&k(3, 10, &[Mode::StrictDeduplication]), events), 2);
        // Equal timestamps do not advance under strict_increase.
        let events: &[(i64, &[u32])] = &[(0, &[1]), (0, &[2]), (1, &[2])];
        assert_eq!(lv(&k(2, 10, &[Mode::StrictIncrease]), events), 2);
        assert_eq!(lv(&k(2, 10, &[Mode::StrictIncrease]), &events[..2]), 1);
        // One event cannot be two steps under strict_once.
        assert_eq!(lv(&k(2, 10, &[Mode::StrictOnce]), &[(0, &[1, 2])]), 1);
        assert_eq!(lv(&k(2, 10, &[]), &[(0, &[1, 2])]), 2);
        // The ClickHouse greedy chain under strict_increase (checked with chDB 26.9: 2, and 3 with strict_once).
        let events: &[(i64, &[u32])] = &[(0, &[1]), (5, &[2]), (10, &[2]), (10, &[3])];
        assert_eq!(lv(&k(3, 100, &[Mode::StrictIncrease]), events), 2);
        assert_eq!(
            lv(
                &k(3, 100, &[Mode::StrictIncrease, Mode::StrictOnce]),
                events
            ),
            3
        );
        // allow_reentry skips a step that comes too early instead of stopping.
        let events: &[(i64, &[u32])] = &[(0, &[1]), (1, &[3]), (2, &[2]), (3, &[3])];
        assert_eq!(lv(&k(3, 10, &[Mode::StrictOrder]), events), 1);
        assert_eq!(
            lv(&k(3, 10, &[Mode::StrictOrder, Mode::AllowReentry]), events),
            3
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::kernel::reference;
    use proptest::prelude::*;

    /// Small worlds rich in ties, window edges and events matching several steps.
    fn person() -> impl Strategy<Value = (usize, i64, Vec<(i64, u64)>)> {
        (1usize..=4, prop::sample::select(vec![0i64, 1, 2, 3, 5, 10])).prop_flat_map(
            |(steps, window)| {
                let mask = prop_oneof![
                    3 => 0..1u64 << steps,
                    1 => Just(0u64),
                    1 => (0..steps).prop_map(|s| 1u64 << s),
                ];
                let events = prop::collection::vec((0i64..12, mask), 0..10).prop_map(|mut v| {
                    v.sort_by_key(|e| e.0);
                    v
                });
                (Just(steps), Just(window), events)
            },
        )
    }

    fn modes() -> impl Strategy<Value = ModeSet> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(o, i, d, once, r)| ModeSet {
                strict_order: o,
                strict_increase: i,
                strict_deduplication: d,
                strict_once: once,
                allow_reentry: o && r,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        #[test]
        fn kernel_matches_reference((steps, window, events) in person(), modes in modes()) {
            let ts: Vec<i64> = events.iter().map(|e| e.0).collect();
            let masks: Vec<u64> = events.iter().map(|e| e.1).collect();
            let got = Kernel::new(steps, window, modes).level(&ts, &masks);
            let want = reference::level(steps, window, modes, &ts, &masks);
            prop_assert_eq!(got, want, "steps {} window {} modes {:?} events {:?}", steps, window, modes, events);
        }

        /// The reported chain is a real chain of the level reached.
        #[test]
        fn reported_chain_is_valid((steps, window, events) in person(), modes in modes()) {
            let ts: Vec<i64> = events.iter().map(|e| e.0).collect();
            let masks: Vec<u64> = events.iter().map(|e| e.1).collect();
            let mut scratch = Scratch::default();
            let level = Kernel::new(steps, window, modes).run(&ts, &masks, &mut scratch);
            let path = &scratch.path;
            prop_assert_eq!(path.len(), level as usize);
            for (k, &r) in path.iter().enumerate() {
                prop_assert!(masks[r as usize] & (1 << k) != 0, "row {} does not satisfy step {}", r, k + 1);
            }
            for w in path.windows(2) {
                let (a, b) = (ts[w[0] as usize], ts[w[1] as usize]);
                prop_assert!(a <= b);
                if modes.strict_increase {
                    prop_assert!(a < b);
                }
            }
            if let (Some(&f), Some(&l)) = (path.first(), path.last()) {
                prop_assert!(ts[l as usize] <= ts[f as usize] + window);
            }
            if modes.strict_once {
                let mut rows = path.clone();
                rows.sort_unstable();
                rows.dedup();
                prop_assert_eq!(rows.len(), path.len());
            }
        }
    }
}
