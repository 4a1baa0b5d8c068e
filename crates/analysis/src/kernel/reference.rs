//! A reference windowFunnel for the kernel's property tests: slow and simple, written from the
//! rules (README "Funnel semantics"), sharing no code with the kernel.
//!
//! Entries are listed explicitly and sorted; the level is found by exhaustive search over chains
//! (default mode, strict_once) or by replaying ClickHouse's latest-chain rule (strict_increase
//! without strict_once, where ClickHouse is greedy); the stop rules of strict_order and
//! strict_deduplication are checked before each entry against the level of the entries before it.

use funnel_core::ModeSet;

#[derive(Debug, Clone, Copy)]
struct Entry {
    ts: i64,
    /// 0 for an event that matches no step (listed under strict_order only).
    step: usize,
    row: usize,
}

fn entries(steps: usize, strict_order: bool, ts: &[i64], masks: &[u64]) -> Vec<Entry> {
    let mut list = Vec::new();
    for row in 0..ts.len() {
        let matched: Vec<usize> = (1..=steps)
            .filter(|s| masks[row] & (1 << (s - 1)) != 0)
            .collect();
        if matched.is_empty() && strict_order {
            list.push(Entry {
                ts: ts[row],
                step: 0,
                row,
            });
        }
        for s in matched {
            list.push(Entry {
                ts: ts[row],
                step: s,
                row,
            });
        }
    }
    // Insertion sort by (ts, step, row): obviously stable and obviously right.
    for i in 1..list.len() {
        let mut j = i;
        while j > 0
            && (list[j - 1].ts, list[j - 1].step, list[j - 1].row)
                > (list[j].ts, list[j].step, list[j].row)
        {
            list.swap(j - 1, j);
            j -= 1;
        }
    }
    list
}

/// Longest chain: entries for steps 1, 2, ..., L at increasing positions, the last within
/// `window` of the first; `once`: no event used twice; `increase`: timestamps strictly increase.
fn longest_chain(list: &[Entry], window: i64, once: bool, increase: bool) -> usize {
    fn extend(
        list: &[Entry],
        from: usize,
        chain: &mut Vec<Entry>,
        window: i64,
        once: bool,
        increase: bool,
    ) -> usize {
        let mut best = chain.len();
        let want = chain.len() + 1;
        for p in from..list.len() {
            let e = list[p];
            let first = chain[0];
            let last = *chain.last().expect("chains are never empty");
            if e.step != want || e.ts > first.ts + window {
                continue;
            }
            if once && chain.iter().any(|c| c.row == e.row) {
                continue;
            }
            if increase && e.ts <= last.ts {
                continue;
            }
            chain.push(e);
            best = best.max(extend(list, p + 1, chain, window, once, increase));
            chain.pop();
        }
        best
    }
    let mut best = 0;
    for (p, e) in list.iter().enumerate() {
        if e.step == 1 {
            let mut chain = vec![*e];
            best = best.max(extend(list, p + 1, &mut chain, window, once, increase));
        }
    }
    best
}

/// strict_increase without strict_once: ClickHouse remembers, per level, only the chain that
/// reached it last, and a step extends that chain if it is later than the chain's last step.
fn latest_chain_increasing(list: &[Entry], steps: usize, window: i64) -> usize {
    let mut latest: Vec<Option<(i64, i64)>> = vec![None; steps + 1];
    for e in list {
        if e.step == 1 {
            latest[1] = Some((e.ts, e.ts));
        } else if e.step > 1
            && let Some((start, last)) = latest[e.step - 1]
            && e.ts <= start + window
            && last < e.ts
        {
            latest[e.step] = Some((start, e.ts));
        }
    }
    (1..=steps)
        .filter(|s| latest[*s].is_some())
        .max()
        .unwrap_or(0)
}

pub fn level(steps: usize, window: i64, modes: ModeSet, ts: &[i64], masks: &[u64]) -> u32 {
    let list = entries(steps, modes.strict_order, ts, masks);
    if list.is_empty() {
        return 0;
    }
    if !modes.strict_order && steps == 1 {
        return 1;
    }
    let reached = |prefix: &[Entry]| -> usize {
        if modes.strict_once {
            longest_chain(prefix, window, true, modes.strict_increase)
        } else if modes.strict_increase {
            latest_chain_increasing(prefix, steps, window)
        } else {
            longest_chain(prefix, window, false, false)
        }
    };
    let mut started = false;
    let mut kept: Vec<Entry> = Vec::new();
    for e in &list {
        let so_far = reached(&kept);
        if so_far == steps {
            return steps as u32;
        }
        match e.step {
            0 if started => return so_far as u32,
            0 => continue,
            1 => started = true,
            s if modes.strict_deduplication && so_far >= s => return so_far as u32,
            s if modes.strict_order && started && so_far < s - 1 => {
                if modes.allow_reentry {
                    continue;
                }
                return so_far as u32;
            }
            _ => {}
        }
        kept.push(*e);
    }
    reached(&kept) as u32
}
