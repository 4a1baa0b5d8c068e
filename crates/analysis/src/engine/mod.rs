//! Runs funnels over the store: one pass over the bucket files, however many funnels.
//!
//! Per bucket file (persons are never split across buckets, and each file is sorted by
//! `(person_id, ts, event_id)`), the units of work are row groups of whole persons (bucket
//! files end their row groups only where the person changes). Each unit is read once for all
//! funnels (`scan.rs`: per event and funnel a 64-bit step mask, and the grouping columns as
//! codes), then each person is walked once, for every funnel (`walk.rs`), into the groups
//! (`groups.rs`) and their accumulators (`accumulate.rs`). Units run in parallel and their
//! partial results are merged in unit order (`schedule.rs`), so the output does not depend on
//! scheduling. Memory is bounded by the units in flight and the merged results, not by the
//! store or its bucket size.

mod accumulate;
mod groups;
mod scan;
mod schedule;
mod walk;

use chrono_tz::Tz;
use funnel_core::{FunnelSpec, Generation};

pub use funnel_core::Interval;

use crate::AnalysisError;
use crate::audit::AuditRow;
use crate::kernel::FunnelKernel;
use crate::report::FunnelReport;
use accumulate::Partial;

/// Options of one analysis run.
#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    /// Events after this instant (epoch ms) are not read; default: the latest event in the store.
    pub cutoff_ms: Option<i64>,
    /// Leave out persons whose reported chain's window is still open at the cutoff.
    pub closed_windows_only: bool,
    /// Trends by the period of the step-1 event.
    pub interval: Option<Interval>,
    /// Only step-1 events at or after `from_ms` and before `to_ms` start chains.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// IANA zone for periods; default: the store's.
    pub timezone: Option<String>,
    /// Collect one audit row per person and group.
    pub audit: bool,
    /// The instant (epoch ms) of the derived [`funnel_core::schema::SPLIT`] breakdown column.
    pub split_at_ms: Option<i64>,
    /// Where the dropped went: per step, the next event of the persons whose chain stopped at
    /// the step before (its type, and its value of `next_by` when given).
    pub dropped_next: bool,
    pub next_by: Option<String>,
}

impl AnalyzeOptions {
    /// The columns "where the dropped went" reads: `event_type` and `next_by`.
    pub(crate) fn next_columns(&self) -> Vec<&str> {
        if !self.dropped_next {
            return Vec::new();
        }
        let mut c = vec![funnel_core::schema::EVENT_TYPE];
        c.extend(self.next_by.as_deref());
        c
    }
}

/// Reports, and the audit rows when asked for.
#[derive(Debug)]
pub struct Analysis {
    pub reports: Vec<FunnelReport>,
    pub audit: Vec<AuditRow>,
}

/// What every unit of one run reads.
struct Setup<'a> {
    specs: &'a [FunnelSpec],
    kernels: Vec<FunnelKernel>,
    opts: &'a AnalyzeOptions,
    cutoff: i64,
    tz: Tz,
    recodes: &'a scan::Recodes,
}

/// Computes every funnel over one generation of a store (opened, and so leased, by
/// [`funnel_core::StoreLayout::open_existing`]).
///
/// A funnel with `top = N` whose breakdown has more than N values is computed in two passes:
/// the first (that funnel alone, no audit) ranks the values by step-1 persons (ties by value
/// order); the second breaks it down by a derived column that keeps those N values and reads
/// every other value as `"(other)"`, so the `"(other)"` group is exactly the funnel whose step
/// 1 requires a value outside the N (the rule of every breakdown value).
pub fn analyze(
    store: &Generation,
    specs: &[FunnelSpec],
    opts: &AnalyzeOptions,
) -> Result<Analysis, AnalysisError> {
    for spec in specs {
        spec.check_columns(&store.manifest().properties)?;
    }
    if let Some(c) = &opts.next_by
        && !funnel_core::is_text_column(c, &store.manifest().properties)
    {
        return Err(AnalysisError::Option {
            option: "--next-by",
            value: format!("{c} (not a text column of the store)"),
        });
    }
    let tops: Vec<usize> = (0..specs.len())
        .filter(|i| specs[*i].top.is_some() && specs[*i].breakdown.len() == 1)
        .collect();
    let none = scan::Recodes::new();
    if tops.is_empty() {
        return run(store, specs, opts, &none);
    }
    let ranked: Vec<FunnelSpec> = tops.iter().map(|i| specs[*i].clone()).collect();
    let first = run(
        store,
        &ranked,
        &AnalyzeOptions {
            audit: false,
            ..opts.clone()
        },
        &none,
    )?;
    let mut recodes = scan::Recodes::new();
    let mut second = specs.to_vec();
    for (i, report) in tops.iter().zip(&first.reports) {
        let spec = &specs[*i];
        let column = &spec.breakdown[0];
        let n = spec.top.expect("a top funnel");
        let Some(kept) = crate::report::top_values(report, column, n) else {
            continue;
        };
        let derived = format!("(top {n} of {column} #{i})");
        recodes.insert(
            derived.clone(),
            scan::Recode {
                column: column.clone(),
                kept: kept.into_iter().collect(),
            },
        );
        second[*i].breakdown = vec![derived];
    }
    let mut analysis = run(store, &second, opts, &recodes)?;
    // Groups are keyed by the source column already (`Breakdown::new`); the report names it
    // too, and `(other)` is its last group.
    for (report, spec) in analysis.reports.iter_mut().zip(specs) {
        if report.breakdown.len() == 1 && recodes.contains_key(&report.breakdown[0]) {
            report.breakdown = spec.breakdown.clone();
            crate::report::other_last(report);
        }
    }
    Ok(analysis)
}

/// One pass over the store for `specs`, their derived columns in `recodes`.
fn run(
    store: &Generation,
    specs: &[FunnelSpec],
    opts: &AnalyzeOptions,
    recodes: &scan::Recodes,
) -> Result<Analysis, AnalysisError> {
    let (dir, manifest) = (store.dir(), store.manifest());
    let tz_name = opts
        .timezone
        .clone()
        .unwrap_or_else(|| manifest.timezone.clone());
    let tz: Tz = tz_name.parse().map_err(|_| AnalysisError::Option {
        option: "--timezone",
        value: tz_name.clone(),
    })?;
    let cutoff = opts
        .cutoff_ms
        .unwrap_or_else(|| manifest.max_ts_ms().unwrap_or(0));
    let setup = Setup {
        specs,
        kernels: specs.iter().map(FunnelKernel::new).collect(),
        opts,
        cutoff,
        tz,
        recodes,
    };
    let mut units = Vec::new();
    for file in &manifest.event_files {
        if file.min_ts_ms <= cutoff {
            units.extend(scan::person_units(
                &dir.join(&file.path),
                file.max_ts_ms > cutoff,
                &setup,
            )?);
        }
    }
    // A unit whose every event is after the cutoff holds nothing the run sees, not even in the
    // audit.
    units.retain(|u| !u.after(cutoff));
    if !opts.audit {
        // A unit without events in --from/--to has no step-1 event: its persons are at level 0,
        // which no report shows (the audit does, so it reads them all).
        units.retain(|u| !u.outside(opts.from_ms, opts.to_ms));
    }
    let mut merged: Vec<Partial> = specs.iter().map(|_| Partial::default()).collect();
    schedule::in_order(
        &units,
        |unit| scan::read(unit, &setup).map(|events| walk::walk_unit(&events, &setup)),
        |part| {
            for (m, p) in merged.iter_mut().zip(part) {
                m.merge(p);
            }
        },
    )?;
    let mut audit = Vec::new();
    let reports = specs
        .iter()
        .zip(merged)
        .map(|(spec, p)| {
            audit.extend(p.audit);
            crate::report::from_groups(spec, opts, cutoff, &tz_name, p.total, p.by_key, p.trend)
        })
        .collect();
    Ok(Analysis { reports, audit })
}
