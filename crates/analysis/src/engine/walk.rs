//! The per-person walk: each person of a unit, once, evaluated for every funnel of the run, into
//! the total, breakdown and trend groups (CONTRACT §5).

use funnel_core::{Attribution, CountUnit, FunnelSpec};

use super::Setup;
use super::accumulate::{AuditCtx, NextView, Partial, Recorder};
use super::groups::{Breakdown, hold_codes};
use super::scan::Events;
use crate::kernel::{FunnelKernel, PersonView, Scratch};
use crate::report::{GroupAcc, Key};

/// One funnel in one unit: what the evaluation of each person reads.
struct FunnelUnit<'a> {
    setup: &'a Setup<'a>,
    spec: &'a FunnelSpec,
    kernel: &'a FunnelKernel,
    breakdown: &'a Breakdown,
    /// The unit's event types and `next_by` values ("where the dropped went").
    next: Option<NextView<'a>>,
}

impl FunnelUnit<'_> {
    /// What every group evaluation of person `p`, whose rows start at `offset`, records with.
    fn recorder<'p>(&self, p: &PersonView<'p>, offset: usize) -> Recorder<'p>
    where
        Self: 'p,
    {
        let rows = offset..offset + p.ts.len();
        let slice =
            |(codes, values): (&'p [u32], &'p [Option<String>])| (&codes[rows.clone()], values);
        Recorder {
            spec: self.spec,
            ts: p.ts,
            cutoff: self.setup.cutoff,
            closed_only: self.setup.opts.closed_windows_only,
            next: self.next.map(|v| NextView {
                types: slice(v.types),
                by: v.by.map(slice),
            }),
        }
    }
}

/// Buffers reused from person to person.
#[derive(Default)]
struct Work {
    scratch: Scratch,
    /// Step masks with step 1 restricted to one group.
    restricted: Vec<u64>,
    /// The chain of the person's unrestricted evaluation.
    full_path: Vec<u32>,
    /// The person's step-1 rows.
    step1: Vec<usize>,
    /// The restricted evaluations of one person.
    evals: Vec<Eval>,
}

/// `from` with step 1 kept only on the rows `keep` accepts, evaluated: the level, and whether
/// the restriction dropped a step-1 event (then the restricted masks are in `out`; otherwise
/// they equal `from`, `out` is left alone, and the level and chain are `same`, those of `from`
/// itself, without running the kernel again: most persons click in one group and period).
fn eval_kept(
    kernel: &FunnelKernel,
    p: &PersonView<'_>,
    scratch: &mut Scratch,
    out: &mut Vec<u64>,
    from: &[u64],
    keep: &dyn Fn(usize) -> bool,
    same: (u32, &[u32]),
) -> (u32, bool) {
    let dropped = |r: usize, mask: u64| mask & 1 != 0 && !keep(r);
    if !from.iter().enumerate().any(|(r, &mask)| dropped(r, mask)) {
        scratch.path.clear();
        scratch.path.extend_from_slice(same.1);
        return (same.0, false);
    }
    out.clear();
    out.extend(
        from.iter()
            .enumerate()
            .map(|(r, &mask)| if dropped(r, mask) { mask & !1 } else { mask }),
    );
    (kernel.eval(p, out, None, scratch), true)
}

/// Every person of one unit, for every funnel: one partial result per funnel.
pub(super) fn walk_unit(events: &Events, setup: &Setup<'_>) -> Vec<Partial> {
    let specs = setup.specs;
    let len = events.ts.len();
    // Only the extended kernel reads exclusions and hold_constant codes; funnels without them
    // share one row of zeros (none, for a unit of window funnels only).
    let extended = specs.iter().any(|s| s.is_extended());
    let zeros = vec![0u64; if extended { len } else { 0 }];
    let no_hold = vec![0u32; if extended { len } else { 0 }];
    let holds: Vec<Option<Vec<u32>>> = specs
        .iter()
        .map(|s| (!s.hold_constant.is_empty()).then(|| hold_codes(s, events)))
        .collect();
    // Funnels with the same breakdown columns share their codes.
    let mut breakdowns: Vec<Breakdown> = Vec::new();
    let mut breakdown_of: Vec<usize> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        match specs[..i]
            .iter()
            .position(|s| s.breakdown == spec.breakdown)
        {
            Some(j) => breakdown_of.push(breakdown_of[j]),
            None => {
                breakdown_of.push(breakdowns.len());
                breakdowns.push(Breakdown::new(spec, events, setup.recodes));
            }
        }
    }
    let coded = |name: &str| {
        let c = &events.columns[name];
        (c.codes.as_slice(), c.values.as_slice())
    };
    let next = setup.opts.dropped_next.then(|| NextView {
        types: coded(funnel_core::schema::EVENT_TYPE),
        by: setup.opts.next_by.as_deref().map(coded),
    });
    let funnels: Vec<FunnelUnit<'_>> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| FunnelUnit {
            setup,
            spec,
            kernel: &setup.kernels[i],
            breakdown: &breakdowns[breakdown_of[i]],
            next,
        })
        .collect();
    let mut out: Vec<Partial> = specs.iter().map(|_| Partial::default()).collect();
    let mut work = Work::default();
    for (person, rows) in events.person_starts.windows(2).enumerate() {
        let (start, end) = (rows[0], rows[1]);
        for (i, f) in funnels.iter().enumerate() {
            let view = PersonView {
                ts: &events.ts[start..end],
                masks: &events.masks[i][start..end],
                excluded: rows_of(events.excluded[i].as_deref(), &zeros, start, end),
                hold: rows_of(holds[i].as_deref(), &no_hold, start, end),
            };
            let mut audit = setup.opts.audit.then(|| AuditCtx {
                rows: Vec::new(),
                funnel: i,
                person: &events.person_ids[person],
                event_ids: &events.event_ids[start..end],
            });
            person_funnel(f, &view, start, &mut out[i], audit.as_mut(), &mut work);
            if let Some(a) = audit {
                out[i].audit.extend(a.rows);
            }
        }
    }
    for (part, f) in out.iter_mut().zip(&funnels) {
        part.fold_codes(f.breakdown);
    }
    out
}

/// Rows `start..end` of a funnel's column, or of the shared zeros (empty where no funnel reads
/// them).
fn rows_of<'a, T>(column: Option<&'a [T]>, zeros: &'a [T], start: usize, end: usize) -> &'a [T] {
    match column {
        Some(c) => &c[start..end],
        None => zeros.get(start..end).unwrap_or_default(),
    }
}

/// What one evaluation of a person restricts step 1 to.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Eval {
    /// A breakdown value (step-1 attribution), by its rank in key order, then its code.
    Value(u32, u32),
    /// A trend period.
    Period(Key),
}

/// One person, one funnel: the total, breakdown and trend groups. `offset`: the person's first
/// row in the unit.
fn person_funnel(
    f: &FunnelUnit<'_>,
    p: &PersonView<'_>,
    offset: usize,
    part: &mut Partial,
    mut audit: Option<&mut AuditCtx<'_>>,
    work: &mut Work,
) {
    let (spec, setup) = (f.spec, f.setup);
    let n = spec.steps.len();
    let rec = f.recorder(p, offset);
    let m = p.masks;
    let attempts = spec.count == CountUnit::Attempts;
    if !m.iter().any(|mask| mask & 1 != 0) {
        // No step-1 event: no attempt to count, and the window kernel's level is 0 (most
        // persons of a narrow funnel end here, without the kernel).
        if attempts {
            return;
        }
        if f.kernel.zero_without_step1() {
            let total = part.total.get_or_insert_with(|| GroupAcc::new(n));
            match audit {
                // What recording level 0 without a chain comes to.
                None => total.levels[0] += 1,
                Some(_) => rec.record(total, audit, &Key::new(), 0, &[]),
            }
            return;
        }
    }
    let mut step1 = std::mem::take(&mut work.step1);
    step1.clear();
    step1.extend((0..m.len()).filter(|r| m[*r] & 1 != 0));
    let b = f.breakdown;
    let code = |r: usize| b.codes[offset + r];
    let period = |r: usize| setup.opts.interval.map(|iv| iv.label(p.ts[r], &setup.tz));
    let attribution = spec.attribution;

    // The units counted: the person (all chains), or each step-1 event (attempts).
    let units = if attempts { step1.len() } else { 1 };
    let scratch = &mut work.scratch;
    let mut full_level = 0;
    for u in 0..units {
        let unit = attempts.then(|| step1[u]);
        let level = f.kernel.eval(p, m, unit, scratch);
        full_level = level;
        let total = part.total.get_or_insert_with(|| GroupAcc::new(n));
        rec.record(
            total,
            audit.as_deref_mut(),
            &Key::new(),
            level,
            &scratch.path,
        );
        if level == 0 {
            continue;
        }
        // First- and last-touch attribution: one value per unit, from the unrestricted chain.
        if !b.none && (attempts || attribution != Attribution::Step1) {
            let r = match (unit, attribution) {
                (Some(r), _) => r,
                (None, Attribution::FirstTouch) => step1[0],
                (None, _) => scratch.path[0] as usize,
            };
            rec.add_code(
                &mut part.by_code,
                b,
                code(r),
                audit.as_deref_mut(),
                level,
                &scratch.path,
            );
        }
        if let (Some(r), Some(label)) = (unit, unit.and_then(period)) {
            // An attempt falls in the period of its own step-1 event.
            let mut key = Key::new();
            key.insert("period".into(), Some(label));
            let mut keys = vec![key.clone()];
            if !b.none {
                key.extend(b.keys[code(r) as usize].clone());
                keys.push(key);
            }
            for key in keys {
                rec.add(
                    &mut part.trend,
                    key,
                    audit.as_deref_mut(),
                    level,
                    &scratch.path,
                );
            }
        }
    }
    if !attempts && !step1.is_empty() {
        // The person's one unit: `scratch.path` still holds its chain.
        work.full_path.clone_from(&work.scratch.path);
        restricted_groups(f, p, offset, &step1, full_level, part, audit, work);
    }
    work.step1 = step1;
}

/// Per key K of a person's step-1 events, the funnel as if step 1 also required K (CONTRACT
/// §5): breakdown values (step-1 attribution) and trend periods. `full_level` and
/// `work.full_path`: the person's unrestricted evaluation.
#[allow(clippy::too_many_arguments)]
fn restricted_groups(
    f: &FunnelUnit<'_>,
    p: &PersonView<'_>,
    offset: usize,
    step1: &[usize],
    full_level: u32,
    part: &mut Partial,
    mut audit: Option<&mut AuditCtx<'_>>,
    work: &mut Work,
) {
    let (spec, setup, b, kernel) = (f.spec, f.setup, f.breakdown, f.kernel);
    let rec = f.recorder(p, offset);
    let m = p.masks;
    let code = |r: usize| b.codes[offset + r];
    let period = |r: usize| setup.opts.interval.map(|iv| iv.label(p.ts[r], &setup.tz));
    let attribution = spec.attribution;
    let Work {
        scratch,
        restricted,
        full_path,
        evals,
        ..
    } = work;
    let full = (full_level, full_path.as_slice());
    evals.clear();
    for &r in step1 {
        if !b.none && attribution == Attribution::Step1 {
            let c = code(r);
            evals.push(Eval::Value(b.rank[c as usize], c));
        }
        if let Some(label) = period(r) {
            let mut k = Key::new();
            k.insert("period".into(), Some(label));
            evals.push(Eval::Period(k));
        }
    }
    evals.sort();
    evals.dedup();
    for eval in evals.drain(..) {
        let key = match eval {
            Eval::Value(_, c) => {
                let (level, _) =
                    eval_kept(kernel, p, scratch, restricted, m, &|r| code(r) == c, full);
                rec.add_code(
                    &mut part.by_code,
                    b,
                    c,
                    audit.as_deref_mut(),
                    level,
                    &scratch.path,
                );
                continue;
            }
            Eval::Period(key) => key,
        };
        let label = key.get("period").cloned().flatten();
        let (level, written) = eval_kept(
            kernel,
            p,
            scratch,
            restricted,
            m,
            &|r| period(r) == label,
            full,
        );
        let by_period: &[u64] = if written { restricted } else { m };
        rec.add(
            &mut part.trend,
            key.clone(),
            audit.as_deref_mut(),
            level,
            &scratch.path,
        );
        // Trends by breakdown value: the value of the period's chain (last touch), the
        // period-restricted earliest step-1 event (first touch), or every value (step1).
        if b.none || level == 0 {
            continue;
        }
        let values: Vec<u32> = match attribution {
            Attribution::Step1 => {
                let mut v: Vec<u32> = (0..m.len())
                    .filter(|r| by_period[*r] & 1 != 0)
                    .map(code)
                    .collect();
                v.sort_by_key(|c| b.rank[*c as usize]);
                v.dedup();
                v
            }
            Attribution::FirstTouch => vec![code(
                (0..m.len())
                    .find(|r| by_period[*r] & 1 != 0)
                    .expect("level > 0 has a step-1 event"),
            )],
            Attribution::LastTouch => vec![code(scratch.path[0] as usize)],
        };
        let period_path = scratch.path.clone();
        let mut twice = Vec::new();
        for c in values {
            let mut k = key.clone();
            k.extend(b.keys[c as usize].clone());
            let (level, path) = if attribution == Attribution::Step1 {
                // Step 1 restricted to both the period and the value.
                let same = (level, period_path.as_slice());
                let (level, _) = eval_kept(
                    kernel,
                    p,
                    scratch,
                    &mut twice,
                    by_period,
                    &|r| code(r) == c,
                    same,
                );
                (level, scratch.path.clone())
            } else {
                (level, period_path.clone())
            };
            rec.add(&mut part.trend, k, audit.as_deref_mut(), level, &path);
        }
    }
}
