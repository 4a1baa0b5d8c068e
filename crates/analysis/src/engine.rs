//! Runs funnels over the store: one pass over the bucket files, however many funnels.
//!
//! Per bucket file (persons are never split across buckets, and each file is sorted by
//! `(person_id, ts, event_id)`), the step conditions of every funnel are evaluated column-wise
//! by polars into one 64-bit step mask per event and funnel; the kernel then walks each person's
//! events. Buckets are processed in parallel (rayon) and their partial results merged in bucket
//! order, so the output does not depend on scheduling. Memory is bounded by the buckets in
//! flight, not the store.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{Datelike, TimeZone};
use chrono_tz::Tz;
use funnel_core::{Attribution, CountUnit, FunnelSpec, Order, StoreLayout, schema};
use polars::prelude::*;
use rayon::prelude::*;

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

/// Computes every funnel over the store at `store`.
pub fn analyze(
    store: &Path,
    specs: &[FunnelSpec],
    opts: &AnalyzeOptions,
) -> Result<Analysis, AnalysisError> {
    let (dir, manifest) = StoreLayout::new(store).open_existing()?;
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
    let name = store.display().to_string();
    let partials: Vec<Vec<Partial>> = manifest
        .event_files
        .par_iter()
        .map(|file| {
            let df = bucket_frame(&dir.join(&file.path), &setup)?;
            walk_bucket(&df, &setup)
        })
        .collect::<PolarsResult<_>>()
        .map_err(|source| AnalysisError::Polars {
            store: name.clone(),
            source,
        })?;
    let mut merged: Vec<Partial> = specs.iter().map(|_| Partial::default()).collect();
    for bucket in partials {
        for (m, p) in merged.iter_mut().zip(bucket) {
            m.merge(p);
        }
    }
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

/// One bucket file with, per funnel, a step-mask column; events after the cutoff are dropped.
fn bucket_frame(path: &Path, setup: &Setup<'_>) -> PolarsResult<DataFrame> {
    let args = ScanArgsParquet {
        hive_options: HiveOptions::new_disabled(),
        ..Default::default()
    };
    let mut lf = LazyFrame::scan_parquet(PlRefPath::new(path.to_string_lossy().as_ref()), args)?;
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
    lf.filter(ts().lt_eq(lit(setup.cutoff)))
        .select(select)
        .collect()
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

/// Codes of equal value tuples, per row (0 for every row when there are no columns).
fn value_codes(cols: &[StringChunked], len: usize) -> Vec<u32> {
    if cols.is_empty() {
        return vec![0; len];
    }
    let mut dict: HashMap<Vec<Option<&str>>, u32> = HashMap::new();
    (0..len)
        .map(|r| {
            let key: Vec<Option<&str>> = cols.iter().map(|c| c.get(r)).collect();
            let next = dict.len() as u32;
            *dict.entry(key).or_insert(next)
        })
        .collect()
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
    let mut breakdowns: Vec<Vec<StringChunked>> = Vec::with_capacity(specs.len());
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
        holds.push(value_codes(&strings(&spec.hold_constant)?, ts.len()));
        breakdowns.push(strings(&spec.breakdown)?);
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
                &breakdowns[i],
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
    Ok(out)
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
    cols: &[StringChunked],
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
    let step1: Vec<usize> = (0..m.len()).filter(|r| m[*r] & 1 != 0).collect();
    let bkey = |r: usize| -> Key {
        spec.breakdown
            .iter()
            .zip(cols)
            .map(|(c, v)| (c.clone(), v.get(offset + r).map(str::to_string)))
            .collect()
    };
    let period = |r: usize| setup.opts.interval.map(|iv| iv.label(p.ts[r], &setup.tz));
    let attribution = spec.attribution;
    let no_key = Key::new();

    // The units counted: the person (all chains), or each step-1 event (attempts).
    let attempts = spec.count == CountUnit::Attempts;
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
        if !cols.is_empty() && (attempts || attribution != Attribution::Step1) {
            let r = match (unit, attribution) {
                (Some(r), _) => r,
                (None, Attribution::FirstTouch) => step1[0],
                (None, _) => scratch.path[0] as usize,
            };
            let key = bkey(r);
            rec.add(
                &mut part.by_key,
                key,
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
            if !cols.is_empty() {
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
    let mut evals: Vec<(bool, Key)> = Vec::new();
    for &r in &step1 {
        if !cols.is_empty() && attribution == Attribution::Step1 {
            evals.push((false, bkey(r)));
        }
        if let Some(label) = period(r) {
            let mut k = Key::new();
            k.insert("period".into(), Some(label));
            evals.push((true, k));
        }
    }
    evals.sort();
    evals.dedup();
    for (is_trend, key) in evals {
        let matches = |r: usize| -> bool {
            key.iter().all(|(c, v)| {
                if c == "period" {
                    period(r).as_ref() == v.as_ref()
                } else {
                    let idx = spec
                        .breakdown
                        .iter()
                        .position(|b| b == c)
                        .expect("key columns are breakdown columns");
                    cols[idx].get(offset + r) == v.as_deref()
                }
            })
        };
        restricted.clear();
        restricted.extend((0..m.len()).map(|r| {
            if m[r] & 1 != 0 && !matches(r) {
                m[r] & !1
            } else {
                m[r]
            }
        }));
        let level = kernel.eval(p, restricted, None, scratch);
        let map = if is_trend {
            &mut part.trend
        } else {
            &mut part.by_key
        };
        rec.add(map, key.clone(), audit.as_deref_mut(), level, &scratch.path);
        // Trends by breakdown value: the value of the period's chain (last touch), the
        // period-restricted earliest step-1 event (first touch), or every value (step1).
        if is_trend && !cols.is_empty() && level > 0 {
            let values: Vec<Key> = match attribution {
                Attribution::Step1 => {
                    let mut v: Vec<Key> = (0..m.len())
                        .filter(|r| restricted[*r] & 1 != 0)
                        .map(bkey)
                        .collect();
                    v.sort();
                    v.dedup();
                    v
                }
                Attribution::FirstTouch => {
                    vec![bkey(
                        (0..m.len())
                            .find(|r| restricted[*r] & 1 != 0)
                            .expect("level > 0 has a step-1 event"),
                    )]
                }
                Attribution::LastTouch => vec![bkey(scratch.path[0] as usize)],
            };
            for value in values {
                let mut k = key.clone();
                k.extend(value.clone());
                let (level, path) = if attribution == Attribution::Step1 {
                    let mut twice = restricted.clone();
                    for (r, mask) in twice.iter_mut().enumerate() {
                        if *mask & 1 != 0 && bkey(r) != value {
                            *mask &= !1;
                        }
                    }
                    let level = kernel.eval(p, &twice, None, scratch);
                    (level, scratch.path.clone())
                } else {
                    (level, scratch.path.clone())
                };
                rec.add(&mut part.trend, k, audit.as_deref_mut(), level, &path);
            }
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
