//! Runs funnels over the store: one pass over the bucket files, however many funnels.
//!
//! Per bucket file (persons are never split across buckets, and each file is sorted by
//! `(person_id, ts, event_id)`), the step conditions of every funnel are evaluated column-wise
//! by polars into one 64-bit step mask per event and funnel; the kernel then walks each person's
//! events. The units of work are row groups (bucket files end their row groups only where the
//! person changes): they are processed in parallel and their partial results merged in unit
//! order, so the output does not depend on scheduling. Memory is bounded by the units in
//! flight and the merged results, not by the store or its bucket size.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{Datelike, TimeZone};
use chrono_tz::Tz;
use foldhash::fast::FixedState;
use funnel_core::{Attribution, CountUnit, FunnelSpec, Generation, Order, schema};
use polars::prelude::*;

use crate::AnalysisError;
use crate::extended::{ExtKernel, Rows, SKIPPED};
use crate::kernel::{Kernel, Modes, Scratch};
use crate::report::{FunnelReport, GroupAcc, GroupReport};

/// Calendar periods for trends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    /// ISO weeks, labelled by their Monday.
    Week,
    Month,
}

impl Interval {
    pub fn name(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }

    fn label(self, ms: i64, tz: &Tz) -> String {
        let local = tz
            .timestamp_millis_opt(ms)
            .single()
            .expect("UTC instants map to one local time")
            .date_naive();
        match self {
            Interval::Day => local.format("%Y-%m-%d").to_string(),
            Interval::Week => {
                let monday =
                    local - chrono::Days::new(u64::from(local.weekday().num_days_from_monday()));
                monday.format("%Y-%m-%d").to_string()
            }
            Interval::Month => local.format("%Y-%m").to_string(),
        }
    }
}

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
}

/// One person in one group of one funnel, with the reported chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub funnel: usize,
    /// The group key as JSON (`{}` for all persons).
    pub group: String,
    pub person_id: String,
    pub level: u32,
    /// The chain's window had not closed by the cutoff.
    pub window_open: bool,
    /// (ts ms, event_id) of each step of the reported chain up to the level (`None` for a
    /// skipped optional step).
    pub chain: Vec<Option<(i64, String)>>,
}

/// Reports, and the audit rows when asked for.
#[derive(Debug)]
pub struct Analysis {
    pub reports: Vec<FunnelReport>,
    pub audit: Vec<AuditRow>,
}

type Key = BTreeMap<String, Option<String>>;

/// Partial results of one funnel over some buckets.
#[derive(Default)]
struct Partial {
    total: Option<GroupAcc>,
    by_key: BTreeMap<Key, GroupAcc>,
    /// Breakdown groups of the unit being walked, by value code; folded into `by_key` at the
    /// unit's end.
    by_code: Vec<Option<GroupAcc>>,
    trend: BTreeMap<Key, GroupAcc>,
    audit: Vec<AuditRow>,
}

impl Partial {
    fn merge(&mut self, other: Partial) {
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
}

struct Setup<'a> {
    specs: &'a [FunnelSpec],
    kernels: Vec<FunnelKernel>,
    opts: &'a AnalyzeOptions,
    cutoff: i64,
    tz: Tz,
}

/// Computes every funnel over one generation of a store (opened, and so leased, by
/// [`funnel_core::StoreLayout::open_existing`]).
pub fn analyze(
    store: &Generation,
    specs: &[FunnelSpec],
    opts: &AnalyzeOptions,
) -> Result<Analysis, AnalysisError> {
    let (dir, manifest) = (store.dir(), store.manifest());
    for spec in specs {
        spec.check_columns(&manifest.properties)?;
    }
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
    };
    let name = store.root().display().to_string();
    let mut units = Vec::new();
    for file in &manifest.event_files {
        if file.min_ts_ms <= cutoff {
            units.extend(person_units(
                &dir.join(&file.path),
                file.max_ts_ms > cutoff,
            )?);
        }
    }
    let mut merged: Vec<Partial> = specs.iter().map(|_| Partial::default()).collect();
    in_order(
        &units,
        |unit| walk_bucket(&unit_frame(unit, &setup)?, &setup),
        |part| {
            for (m, p) in merged.iter_mut().zip(part) {
                m.merge(p);
            }
        },
    )
    .map_err(|source| AnalysisError::Polars {
        store: name.clone(),
        source,
    })?;
    let mut audit = Vec::new();
    let reports = specs
        .iter()
        .zip(merged)
        .map(|(spec, p)| {
            audit.extend(p.audit);
            let n = spec.steps.len();
            let mut groups = vec![
                p.total
                    .unwrap_or_else(|| GroupAcc::new(n))
                    .report(spec, Key::new()),
            ];
            groups.extend(sorted(p.by_key).into_iter().map(|(k, a)| a.report(spec, k)));
            let trend: Vec<GroupReport> = sorted(p.trend)
                .into_iter()
                .map(|(k, a)| a.report(spec, k))
                .collect();
            assemble(spec, opts, cutoff, &tz_name, groups, trend)
        })
        .collect();
    Ok(Analysis { reports, audit })
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
    let mut groups = vec![total.report(spec, Key::new())];
    groups.extend(sorted(by_key).into_iter().map(|(k, a)| a.report(spec, k)));
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

fn mask_column(i: usize) -> String {
    format!("__mask{i}")
}

fn exclusion_column(i: usize) -> String {
    format!("__excl{i}")
}

/// Runs `work` on every unit, on twice as many threads as rayon's global pool has (a thread
/// waits while polars decodes its unit), and hands the results to `merge` in unit order,
/// whatever order they finish in: the output does not depend on scheduling. At most
/// `2 × threads` units are started and not yet merged, so memory holds a bounded number of
/// units' results plus the merged results, even behind one slow unit.
///
/// Plain threads, not rayon tasks: a rayon worker blocked in polars' `collect` (which runs on
/// polars' own pool) steals further units meanwhile, so many units would be decoded at once.
fn in_order<T: Send>(
    units: &[Unit],
    work: impl Fn(&Unit) -> PolarsResult<T> + Sync,
    mut merge: impl FnMut(T),
) -> PolarsResult<()> {
    use std::sync::{Mutex, mpsc};
    let threads = (2 * rayon::current_num_threads()).clamp(1, units.len().max(1));
    let window = 2 * threads;
    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<(usize, PolarsResult<T>)>();
    std::thread::scope(|scope| {
        // Owned here, so that returning (done or failed) closes the queue before the workers
        // are joined.
        let job_tx = job_tx;
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let (job_rx, work) = (&job_rx, &work);
            scope.spawn(move || {
                loop {
                    // The lock is released before the work starts (in a `while let` scrutinee
                    // it would be held through the loop body, one worker at a time).
                    let job = job_rx.lock().expect("a worker panicked").recv();
                    // Ends when the job queue closes (all merged, or an error).
                    let Ok(i) = job else { break };
                    if done_tx.send((i, work(&units[i]))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut sent = 0;
        let send_next = |sent: &mut usize| {
            if *sent < units.len() {
                job_tx.send(*sent).expect("workers outlive the queue");
                *sent += 1;
            }
        };
        while sent < window.min(units.len()) {
            send_next(&mut sent);
        }
        let mut waiting: BTreeMap<usize, T> = BTreeMap::new();
        let mut due = 0;
        while due < units.len() {
            let (i, result) = done_rx.recv().expect("a worker holds the sender");
            // On an error, returning drops the job queue: the workers stop after their unit.
            waiting.insert(i, result?);
            while let Some(t) = waiting.remove(&due) {
                merge(t);
                due += 1;
                send_next(&mut sent);
            }
        }
        Ok(())
    })
}

/// Rows of a bucket file that hold whole persons: one or more consecutive row groups.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unit {
    path: PathBuf,
    /// First row and row count; `None` for the whole file.
    slice: Option<(i64, u32)>,
    /// Some events are after the cutoff.
    filter_ts: bool,
}

/// Splits a bucket file into units at the row-group boundaries that do not split a person:
/// where the person ids of one row group all sort before those of the next, by the row
/// groups' statistics. Stores written since row groups end at person changes split at
/// every boundary; older stores (or missing statistics) give one unit for the file.
fn person_units(path: &Path, filter_ts: bool) -> Result<Vec<Unit>, AnalysisError> {
    use parquet::file::metadata::ParquetMetaDataReader;
    let err = |source| AnalysisError::Parquet {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|source| AnalysisError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let meta = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(err)?;
    let column = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == schema::PERSON_ID);
    let groups = meta.row_groups();
    let bounds = |i: usize| -> Option<(&[u8], &[u8])> {
        // Parquet's min and max are bounds (exact or not): max_i < min_i+1 is enough.
        let stats = groups[i].column(column?).statistics()?;
        Some((stats.min_bytes_opt()?, stats.max_bytes_opt()?))
    };
    let mut units = Vec::new();
    let (mut start_row, mut rows) = (0i64, 0i64);
    for i in 0..groups.len() {
        rows += groups[i].num_rows();
        let split = i + 1 == groups.len()
            || matches!((bounds(i), bounds(i + 1)), (Some((_, max)), Some((min, _))) if max < min);
        if split && rows > 0 {
            units.push(Unit {
                path: path.to_path_buf(),
                slice: Some((start_row, u32::try_from(rows).unwrap_or(u32::MAX))),
                filter_ts,
            });
            start_row += rows;
            rows = 0;
        }
    }
    if units.len() <= 1 {
        // One unit (or an empty file): read the file whole.
        units = vec![Unit {
            path: path.to_path_buf(),
            slice: None,
            filter_ts,
        }];
    }
    Ok(units)
}

/// One unit with, per funnel, a step-mask column; events after the cutoff are dropped.
fn unit_frame(unit: &Unit, setup: &Setup<'_>) -> PolarsResult<DataFrame> {
    let args = ScanArgsParquet {
        hive_options: HiveOptions::new_disabled(),
        ..Default::default()
    };
    let mut lf =
        LazyFrame::scan_parquet(PlRefPath::new(unit.path.to_string_lossy().as_ref()), args)?;
    if let Some((offset, len)) = unit.slice {
        lf = lf.slice(offset, len);
    }
    let present = lf.collect_schema()?;
    // Property columns that appeared after this file was written are null in it.
    let mut columns: Vec<String> = setup.specs.iter().flat_map(|s| s.columns()).collect();
    columns.sort();
    columns.dedup();
    let missing: Vec<Expr> = columns
        .iter()
        .filter(|c| present.get(c.as_str()).is_none())
        .map(|c| lit(NULL).cast(DataType::String).alias(c.as_str()))
        .collect();
    if !missing.is_empty() {
        lf = lf.with_columns(missing);
    }
    let ts = || col(schema::TS).cast(DataType::Int64);
    let mut select = vec![col(schema::PERSON_ID), ts().alias(schema::TS)];
    if setup.opts.audit {
        select.push(col(schema::EVENT_ID));
    }
    for (i, spec) in setup.specs.iter().enumerate() {
        select.push(step_mask(spec, setup.opts).alias(mask_column(i)));
        if !spec.exclusions.is_empty() {
            select.push(exclusion_mask(spec).alias(exclusion_column(i)));
        }
    }
    let mut breakdown: Vec<&str> = setup
        .specs
        .iter()
        .flat_map(|s| {
            s.breakdown
                .iter()
                .chain(s.hold_constant.iter())
                .map(String::as_str)
        })
        .filter(|c| *c != schema::PERSON_ID && *c != schema::EVENT_ID)
        .collect();
    breakdown.sort_unstable();
    breakdown.dedup();
    select.extend(breakdown.into_iter().map(col));
    if unit.filter_ts {
        lf = lf.filter(ts().lt_eq(lit(setup.cutoff)));
    }
    lf.select(select).collect()
}

/// An event filter as a polars expression (false where a filtered column is absent).
fn event_filter(event_type: &str, filters: &[funnel_core::Filter]) -> Expr {
    let mut cond = col(schema::EVENT_TYPE).eq(lit(event_type.to_string()));
    for f in filters {
        let values = Series::new("values".into(), f.values.clone());
        let test = col(f.column.as_str())
            .is_in(lit(values).implode(false), false)
            .fill_null(lit(false));
        cond = cond.and(test);
    }
    cond
}

/// Bit j set when the event matches exclusion j.
fn exclusion_mask(spec: &FunnelSpec) -> Expr {
    let u64_lit = |v: u64| lit(v).cast(DataType::UInt64);
    let mut mask = u64_lit(0);
    for (j, x) in spec.exclusions.iter().enumerate() {
        let cond = event_filter(&x.event_type, &x.filters).fill_null(lit(false));
        mask = mask + when(cond).then(u64_lit(1 << j)).otherwise(u64_lit(0));
    }
    mask
}

/// The step bitmask of a funnel as a polars expression: bit k set when the event satisfies step k+1.
fn step_mask(spec: &FunnelSpec, opts: &AnalyzeOptions) -> Expr {
    // Literals are cast: polars would otherwise type small integer literals as i32.
    let u64_lit = |v: u64| lit(v).cast(DataType::UInt64);
    let mut mask = u64_lit(0);
    for (k, step) in spec.steps.iter().enumerate() {
        let mut cond = col(schema::EVENT_TYPE).eq(lit(step.event_type.clone()));
        for f in &step.filters {
            let values = Series::new("values".into(), f.values.clone());
            let test = col(f.column.as_str())
                .is_in(lit(values).implode(false), false)
                .fill_null(lit(false));
            cond = cond.and(test);
        }
        if k == 0 {
            let ts = || col(schema::TS).cast(DataType::Int64);
            if let Some(from) = opts.from_ms {
                cond = cond.and(ts().gt_eq(lit(from)));
            }
            if let Some(to) = opts.to_ms {
                cond = cond.and(ts().lt(lit(to)));
            }
        }
        mask = mask
            + when(cond.fill_null(lit(false)))
                .then(u64_lit(1 << k))
                .otherwise(u64_lit(0));
    }
    mask
}

/// Where one evaluation's audit row goes, and what it names.
struct AuditCtx<'a> {
    rows: Vec<AuditRow>,
    funnel: usize,
    person: &'a str,
    event_ids: &'a [String],
}

/// What every group evaluation of one person and funnel shares.
struct Recorder<'a> {
    spec: &'a FunnelSpec,
    ts: &'a [i64],
    cutoff: i64,
    closed_only: bool,
}

impl Recorder<'_> {
    /// Records into the accumulator of `key` in `map`, creating it on first use.
    fn add(
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
    fn add_code(
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
    fn record(
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

/// The kernel of one funnel.
enum FunnelKernel {
    Window(Kernel),
    Extended(ExtKernel),
}

/// Per-event data of one person for one funnel.
struct PersonView<'a> {
    ts: &'a [i64],
    masks: &'a [u64],
    excluded: &'a [u64],
    hold: &'a [u32],
}

impl FunnelKernel {
    fn new(spec: &FunnelSpec) -> FunnelKernel {
        if spec.is_extended() {
            FunnelKernel::Extended(ExtKernel::new(spec))
        } else {
            FunnelKernel::Window(Kernel::new(
                spec.steps.len(),
                spec.window_ms,
                Modes::from(&spec.modes),
            ))
        }
    }

    /// Level and reported chain (in `scratch.path`); `masks` may be a restricted copy.
    fn eval(
        &self,
        p: &PersonView<'_>,
        masks: &[u64],
        only_start: Option<usize>,
        scratch: &mut Scratch,
    ) -> u32 {
        match self {
            FunnelKernel::Window(k) => k.run(p.ts, masks, scratch),
            FunnelKernel::Extended(k) => {
                let rows = Rows {
                    ts: p.ts,
                    masks,
                    excluded: p.excluded,
                    hold: p.hold,
                };
                k.best(rows, only_start, &mut scratch.path)
            }
        }
    }
}

/// Codes of equal value tuples, per row (0 for every row when there are no columns), and the
/// first row of each code. (The hasher's fixed seed is for speed: codes follow first
/// appearance, not hash order.)
fn value_codes(cols: &[StringChunked], len: usize) -> (Vec<u32>, Vec<usize>) {
    let mut firsts = Vec::new();
    // A new code for a tuple first seen at row r.
    let mut first = |r: usize| -> u32 {
        firsts.push(r);
        (firsts.len() - 1) as u32
    };
    let codes = match cols {
        [] => {
            if len > 0 {
                first(0);
            }
            vec![0; len]
        }
        [c] => {
            let mut dict: HashMap<Option<&str>, u32, FixedState> = HashMap::default();
            c.iter()
                .enumerate()
                .map(|(r, v)| *dict.entry(v).or_insert_with(|| first(r)))
                .collect()
        }
        _ => {
            let mut dict: HashMap<Vec<Option<&str>>, u32, FixedState> = HashMap::default();
            (0..len)
                .map(|r| {
                    let key: Vec<Option<&str>> = cols.iter().map(|c| c.get(r)).collect();
                    *dict.entry(key).or_insert_with(|| first(r))
                })
                .collect()
        }
    };
    (codes, firsts)
}

/// A funnel's breakdown values in one unit, interned: the per-person work compares codes,
/// and group keys are built once per value and unit.
struct Breakdown {
    /// No breakdown columns.
    none: bool,
    /// Per row of the unit.
    codes: Vec<u32>,
    /// Per code.
    keys: Vec<Key>,
    /// Per code: its key's place in key order (evaluations run in key order, as the audit
    /// rows have always been written).
    rank: Vec<u32>,
}

impl Breakdown {
    fn new(spec: &FunnelSpec, cols: &[StringChunked], len: usize) -> Breakdown {
        let (codes, firsts) = value_codes(cols, len);
        let keys: Vec<Key> = firsts
            .iter()
            .map(|&r| {
                spec.breakdown
                    .iter()
                    .zip(cols)
                    .map(|(c, v)| (c.clone(), v.get(r).map(str::to_string)))
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

fn walk_bucket(df: &DataFrame, setup: &Setup<'_>) -> PolarsResult<Vec<Partial>> {
    let specs = setup.specs;
    let persons = df.column(schema::PERSON_ID)?.str()?.clone();
    let ts: Vec<i64> = df.column(schema::TS)?.i64()?.into_no_null_iter().collect();
    let event_ids: Vec<String> = if setup.opts.audit {
        df.column(schema::EVENT_ID)?
            .str()?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect()
    } else {
        Vec::new()
    };
    let strings = |names: &[String]| -> PolarsResult<Vec<StringChunked>> {
        names
            .iter()
            .map(|c| df.column(c.as_str()).and_then(|s| s.str().cloned()))
            .collect()
    };
    let mut masks: Vec<Vec<u64>> = Vec::with_capacity(specs.len());
    let mut excluded: Vec<Vec<u64>> = Vec::with_capacity(specs.len());
    let mut holds: Vec<Vec<u32>> = Vec::with_capacity(specs.len());
    let mut breakdowns: Vec<Breakdown> = Vec::with_capacity(specs.len());
    let mut breakdown_of: Vec<usize> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        masks.push(
            df.column(&mask_column(i))?
                .u64()?
                .into_no_null_iter()
                .collect(),
        );
        excluded.push(if spec.exclusions.is_empty() {
            vec![0; ts.len()]
        } else {
            df.column(&exclusion_column(i))?
                .u64()?
                .into_no_null_iter()
                .collect()
        });
        holds.push(value_codes(&strings(&spec.hold_constant)?, ts.len()).0);
        // Funnels with the same breakdown columns share their codes.
        match specs[..i]
            .iter()
            .position(|s| s.breakdown == spec.breakdown)
        {
            Some(j) => breakdown_of.push(breakdown_of[j]),
            None => {
                breakdown_of.push(breakdowns.len());
                breakdowns.push(Breakdown::new(spec, &strings(&spec.breakdown)?, ts.len()));
            }
        }
    }
    let ids: Vec<&str> = persons.iter().map(|p| p.unwrap_or_default()).collect();
    let mut out: Vec<Partial> = specs.iter().map(|_| Partial::default()).collect();
    let mut scratch = Scratch::default();
    let mut restricted: Vec<u64> = Vec::new();
    let mut start = 0;
    while start < ids.len() {
        let mut end = start + 1;
        while end < ids.len() && ids[end] == ids[start] {
            end += 1;
        }
        for (i, spec) in specs.iter().enumerate() {
            let view = PersonView {
                ts: &ts[start..end],
                masks: &masks[i][start..end],
                excluded: &excluded[i][start..end],
                hold: &holds[i][start..end],
            };
            let mut audit = setup.opts.audit.then(|| AuditCtx {
                rows: Vec::new(),
                funnel: i,
                person: ids[start],
                event_ids: &event_ids[start..end],
            });
            person_funnel(
                &mut out[i],
                audit.as_mut(),
                setup,
                i,
                spec,
                &view,
                &breakdowns[breakdown_of[i]],
                start,
                &mut scratch,
                &mut restricted,
            );
            if let Some(a) = audit {
                out[i].audit.extend(a.rows);
            }
        }
        start = end;
    }
    for (part, &b) in out.iter_mut().zip(&breakdown_of) {
        let b = &breakdowns[b];
        for (code, acc) in std::mem::take(&mut part.by_code).into_iter().enumerate() {
            if let Some(acc) = acc {
                match part.by_key.get_mut(&b.keys[code]) {
                    Some(a) => a.merge(acc),
                    None => {
                        part.by_key.insert(b.keys[code].clone(), acc);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What one evaluation of a person restricts step 1 to.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Eval {
    /// A breakdown value (step-1 attribution), by its rank in key order, then its code.
    Value(u32, u32),
    /// A trend period.
    Period(Key),
}

/// One person, one funnel: the total, breakdown and trend groups.
#[allow(clippy::too_many_arguments)]
fn person_funnel(
    part: &mut Partial,
    mut audit: Option<&mut AuditCtx<'_>>,
    setup: &Setup<'_>,
    i: usize,
    spec: &FunnelSpec,
    p: &PersonView<'_>,
    b: &Breakdown,
    offset: usize,
    scratch: &mut Scratch,
    restricted: &mut Vec<u64>,
) {
    let kernel = &setup.kernels[i];
    let n = spec.steps.len();
    let rec = Recorder {
        spec,
        ts: p.ts,
        cutoff: setup.cutoff,
        closed_only: setup.opts.closed_windows_only,
    };
    let m = p.masks;
    let attempts = spec.count == CountUnit::Attempts;
    if !m.iter().any(|mask| mask & 1 != 0) {
        // No step-1 event: no attempt to count, and the window kernel's level is 0 (most
        // persons of a narrow funnel end here, without the kernel).
        match (attempts, kernel) {
            (true, _) => return,
            (false, FunnelKernel::Window(_)) => {
                let total = part.total.get_or_insert_with(|| GroupAcc::new(n));
                rec.record(total, audit, &Key::new(), 0, &[]);
                return;
            }
            (false, FunnelKernel::Extended(_)) => {}
        }
    }
    let step1: Vec<usize> = (0..m.len()).filter(|r| m[*r] & 1 != 0).collect();
    let code = |r: usize| b.codes[offset + r];
    let bkey = |r: usize| b.keys[code(r) as usize].clone();
    let period = |r: usize| setup.opts.interval.map(|iv| iv.label(p.ts[r], &setup.tz));
    let attribution = spec.attribution;
    let no_key = Key::new();

    // The units counted: the person (all chains), or each step-1 event (attempts).
    let units: Vec<Option<usize>> = if attempts {
        step1.iter().map(|r| Some(*r)).collect()
    } else {
        vec![None]
    };
    for unit in units {
        let level = kernel.eval(p, m, unit, scratch);
        let total = part.total.get_or_insert_with(|| GroupAcc::new(n));
        rec.record(total, audit.as_deref_mut(), &no_key, level, &scratch.path);
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
                key.extend(bkey(r));
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
    if attempts || step1.is_empty() {
        return;
    }

    // Per key K of the step-1 events, the funnel as if step 1 also required K (CONTRACT §5):
    // breakdown values (step1 attribution) and trend periods.
    let mut evals: Vec<Eval> = Vec::new();
    for &r in &step1 {
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
    // `keep(r)`: whether step-1 event r stays a step-1 event under the restriction.
    let restrict = |restricted: &mut Vec<u64>, from: &[u64], keep: &dyn Fn(usize) -> bool| {
        restricted.clear();
        restricted.extend(from.iter().enumerate().map(|(r, &mask)| {
            if mask & 1 != 0 && !keep(r) {
                mask & !1
            } else {
                mask
            }
        }));
    };
    for eval in evals {
        let key = match eval {
            Eval::Value(_, c) => {
                restrict(restricted, m, &|r| code(r) == c);
                let level = kernel.eval(p, restricted, None, scratch);
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
        restrict(restricted, m, &|r| period(r) == label);
        let level = kernel.eval(p, restricted, None, scratch);
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
                    .filter(|r| restricted[*r] & 1 != 0)
                    .map(code)
                    .collect();
                v.sort_by_key(|c| b.rank[*c as usize]);
                v.dedup();
                v
            }
            Attribution::FirstTouch => vec![code(
                (0..m.len())
                    .find(|r| restricted[*r] & 1 != 0)
                    .expect("level > 0 has a step-1 event"),
            )],
            Attribution::LastTouch => vec![code(scratch.path[0] as usize)],
        };
        let by_period = restricted.clone();
        let period_path = scratch.path.clone();
        for c in values {
            let mut k = key.clone();
            k.extend(b.keys[c as usize].clone());
            let (level, path) = if attribution == Attribution::Step1 {
                // Step 1 restricted to both the period and the value.
                let mut twice = Vec::new();
                restrict(&mut twice, &by_period, &|r| code(r) == c);
                (kernel.eval(p, &twice, None, scratch), scratch.path.clone())
            } else {
                (level, period_path.clone())
            };
            rec.add(&mut part.trend, k, audit.as_deref_mut(), level, &path);
        }
    }
}

/// Writes audit rows as Parquet: funnel, group, person_id, level, window_open, then per step
/// `step_K_ts` (timestamp, UTC) and `step_K_event_id` (null beyond the level).
pub fn write_audit(
    path: &Path,
    specs: &[FunnelSpec],
    rows: &[AuditRow],
) -> Result<(), AnalysisError> {
    let err = |source| AnalysisError::Polars {
        store: path.display().to_string(),
        source,
    };
    let steps = specs.iter().map(|s| s.steps.len()).max().unwrap_or(0);
    let mut cols: Vec<Column> = vec![
        Column::new(
            "funnel".into(),
            rows.iter()
                .map(|r| specs[r.funnel].name.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "group".into(),
            rows.iter().map(|r| r.group.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "person_id".into(),
            rows.iter()
                .map(|r| r.person_id.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "level".into(),
            rows.iter().map(|r| r.level).collect::<Vec<_>>(),
        ),
        Column::new(
            "window_open".into(),
            rows.iter().map(|r| r.window_open).collect::<Vec<_>>(),
        ),
    ];
    for k in 0..steps {
        let ts: Vec<Option<i64>> = rows
            .iter()
            .map(|r| r.chain.get(k).and_then(|c| c.as_ref()).map(|c| c.0))
            .collect();
        let ts = Column::new(format!("step_{}_ts", k + 1).into(), ts)
            .cast(&DataType::Datetime(
                TimeUnit::Milliseconds,
                Some(polars::prelude::TimeZone::UTC),
            ))
            .map_err(err)?;
        cols.push(ts);
        let ids: Vec<Option<&str>> = rows
            .iter()
            .map(|r| {
                r.chain
                    .get(k)
                    .and_then(|c| c.as_ref())
                    .map(|c| c.1.as_str())
            })
            .collect();
        cols.push(Column::new(format!("step_{}_event_id", k + 1).into(), ids));
    }
    let mut df = DataFrame::new_infer_height(cols).map_err(err)?;
    let file = std::fs::File::create(path).map_err(|e| AnalysisError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    ParquetWriter::new(file).finish(&mut df).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, persons: &[&str], row_group: usize) {
        let mut df = DataFrame::new_infer_height(vec![
            Column::new(schema::PERSON_ID.into(), persons),
            Column::new(
                schema::TS.into(),
                (0..persons.len() as i64).collect::<Vec<_>>(),
            ),
        ])
        .unwrap();
        ParquetWriter::new(std::fs::File::create(path).unwrap())
            .with_row_group_size(Some(row_group))
            .with_statistics(StatisticsOptions::full())
            .finish(&mut df)
            .unwrap();
    }

    #[test]
    fn units_split_only_between_persons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.parquet");
        // Row groups [a a b] [b b c] [d d e]: person b straddles the first boundary.
        write(&path, &["a", "a", "b", "b", "b", "c", "d", "d", "e"], 3);
        let slices: Vec<_> = person_units(&path, false)
            .unwrap()
            .iter()
            .map(|u| u.slice)
            .collect();
        assert_eq!(slices, [Some((0, 6)), Some((6, 3))]);
        // One row group, or no split possible: the whole file.
        write(&path, &["a", "b", "c"], 10);
        let units = person_units(&path, true).unwrap();
        assert_eq!(units.len(), 1);
        assert_eq!((units[0].slice, units[0].filter_ts), (None, true));
        write(&path, &["a", "a", "a", "a"], 2);
        assert_eq!(person_units(&path, false).unwrap()[0].slice, None);
    }

    #[test]
    fn results_merge_in_unit_order_whatever_finishes_first() {
        let units: Vec<Unit> = (0..40)
            .map(|i| Unit {
                path: PathBuf::from(format!("{i}")),
                slice: None,
                filter_ts: false,
            })
            .collect();
        let mut seen = Vec::new();
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let merged = AtomicUsize::new(0);
        let (running, most_running) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let window = 4 * rayon::current_num_threads();
        in_order(
            &units,
            |u| {
                let i: u64 = u.path.to_str().unwrap().parse().unwrap();
                // Never more than `window` units started and not merged.
                let m = merged.load(SeqCst);
                assert!(
                    (i as usize) < m + window,
                    "unit {i} started with {m} merged"
                );
                // Later units finish first; unit 0 is slowest of all.
                let now = running.fetch_add(1, SeqCst) + 1;
                most_running.fetch_max(now, SeqCst);
                let ms = if i == 0 { 100 } else { 40 - i };
                std::thread::sleep(std::time::Duration::from_millis(ms));
                running.fetch_sub(1, SeqCst);
                Ok(i)
            },
            |i| {
                seen.push(i);
                merged.fetch_add(1, SeqCst);
            },
        )
        .unwrap();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        // Units run side by side (at least two threads, even on one core).
        assert!(most_running.load(SeqCst) >= 2);
        let failed = in_order(
            &units,
            |u| {
                if u.path.to_str() == Some("7") {
                    Err(PolarsError::ComputeError("unit 7".into()))
                } else {
                    Ok(())
                }
            },
            |_| {},
        );
        assert!(failed.unwrap_err().to_string().contains("unit 7"));
    }
}
