//! The groups a person is counted in: breakdown values and `hold_constant` values of one unit,
//! as codes of value tuples, and trend periods.

use std::collections::HashMap;

use foldhash::fast::FixedState;
use funnel_core::FunnelSpec;

use super::scan::{Coded, Events, Recodes};
use crate::report::Key;

/// Codes of equal value tuples of `columns`, per row (0 for every row when there are no
/// columns), and the first row of each code.
pub(super) fn tuple_codes(columns: &[&Coded], len: usize) -> (Vec<u32>, Vec<usize>) {
    let mut firsts = Vec::new();
    match columns {
        [] => {
            if len > 0 {
                firsts.push(0);
            }
            (vec![0; len], firsts)
        }
        [c] => {
            // Codes of one column follow first appearance already.
            let mut seen = vec![false; c.values.len()];
            for (r, &code) in c.codes.iter().enumerate() {
                if !std::mem::replace(&mut seen[code as usize], true) {
                    firsts.push(r);
                }
            }
            (c.codes.clone(), firsts)
        }
        [c, rest @ ..] => {
            let mut codes = c.codes.clone();
            for next in rest {
                let mut dict: HashMap<(u32, u32), u32, FixedState> = HashMap::default();
                firsts.clear();
                for (r, (code, &other)) in codes.iter_mut().zip(&next.codes).enumerate() {
                    *code = *dict.entry((*code, other)).or_insert_with(|| {
                        firsts.push(r);
                        (firsts.len() - 1) as u32
                    });
                }
            }
            (codes, firsts)
        }
    }
}

/// The codes of `names` (the unit's coded columns) in one unit.
fn columns<'e>(events: &'e Events, names: &[String]) -> Vec<&'e Coded> {
    names.iter().map(|n| &events.columns[n.as_str()]).collect()
}

/// Per row, a code of the `hold_constant` values (equal codes: equal values).
pub(super) fn hold_codes(spec: &FunnelSpec, events: &Events) -> Vec<u32> {
    tuple_codes(&columns(events, &spec.hold_constant), events.ts.len()).0
}

/// A funnel's breakdown values in one unit, interned: the per-person work compares codes,
/// and group keys are built once per value and unit.
pub(super) struct Breakdown {
    /// No breakdown columns.
    pub none: bool,
    /// Per row of the unit.
    pub codes: Vec<u32>,
    /// Per code.
    pub keys: Vec<Key>,
    /// Per code: its key's place in key order (evaluations run in key order, as the audit
    /// rows have always been written).
    pub rank: Vec<u32>,
}

impl Breakdown {
    /// A derived `top` column (in `recodes`) is keyed by the column it derives from.
    pub(super) fn new(spec: &FunnelSpec, events: &Events, recodes: &Recodes) -> Breakdown {
        let cols = columns(events, &spec.breakdown);
        let (codes, firsts) = tuple_codes(&cols, events.ts.len());
        let names: Vec<&String> = spec
            .breakdown
            .iter()
            .map(|n| recodes.get(n).map_or(n, |r| &r.column))
            .collect();
        let keys: Vec<Key> = firsts
            .iter()
            .map(|&r| {
                names
                    .iter()
                    .zip(&cols)
                    .map(|(name, c)| ((*name).clone(), c.values[c.codes[r] as usize].clone()))
                    .collect()
            })
            .collect();
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
        let mut rank = vec![0; keys.len()];
        for (place, code) in order.into_iter().enumerate() {
            rank[code] = place as u32;
        }
        Breakdown {
            none: cols.is_empty(),
            codes,
            keys,
            rank,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(values: &[Option<&str>]) -> Coded {
        let mut out = Coded::default();
        for v in values {
            let v = v.map(str::to_string);
            let code = match out.values.iter().position(|x| *x == v) {
                Some(c) => c,
                None => {
                    out.values.push(v);
                    out.values.len() - 1
                }
            };
            out.codes.push(code as u32);
        }
        out
    }

    #[test]
    fn equal_tuples_and_only_they_share_a_code() {
        let a = coded(&[Some("x"), Some("x"), None, Some("y"), Some("x"), None]);
        let b = coded(&[
            Some("1"),
            Some("2"),
            Some("1"),
            Some("1"),
            Some("1"),
            Some("1"),
        ]);
        let c = coded(&[None, None, None, None, None, Some("z")]);
        for cols in [vec![], vec![&a], vec![&a, &b], vec![&a, &b, &c]] {
            let (codes, firsts) = tuple_codes(&cols, 6);
            let tuple = |r: usize| -> Vec<&Option<String>> {
                cols.iter()
                    .map(|c| &c.values[c.codes[r] as usize])
                    .collect()
            };
            for r in 0..6 {
                for s in 0..6 {
                    assert_eq!(codes[r] == codes[s], tuple(r) == tuple(s), "rows {r} {s}");
                }
                assert_eq!(codes[firsts[codes[r] as usize]], codes[r]);
            }
            // Codes follow first appearance.
            assert!(firsts.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(
                firsts.len(),
                codes.iter().max().map_or(0, |m| *m as usize + 1)
            );
        }
    }
}
