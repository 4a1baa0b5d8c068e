//! Runs funnels over the store: one pass over the bucket files, however many funnels.
//!
//! Per bucket file (persons are never split across buckets, and each file is sorted by
//! `(person_id, ts, event_id)`), the step conditions of every funnel are evaluated column-wise
//! by polars into one 64-bit step mask per event and funnel; the kernel then walks each person's
//! events. Buckets are processed in parallel (rayon) and their partial results merged in bucket
//! order, so the output does not depend on scheduling. Memory is bounded by the buckets in
//! flight, not the store.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, TimeZone};
use chrono_tz::Tz;
use funnel_core::{FunnelSpec, StoreLayout, schema};
use polars::prelude::*;
use rayon::prelude::*;

use crate::AnalysisError;
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
    /// (ts ms, event_id) of each step of the reported chain.
    pub chain: Vec<(i64, String)>,
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
    kernels: Vec<Kernel>,
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
    let cutoff = opts.cutoff_ms.unwrap_or_else(|| {
        manifest
            .event_files
            .iter()
            .map(|f| f.max_ts_ms)
            .max()
            .unwrap_or(0)
    });
    let setup = Setup {
        specs,
        kernels: specs
            .iter()
            .map(|s| Kernel::new(s.steps.len(), s.window_ms, Modes::from(&s.modes)))
            .collect(),
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
    let fmt = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default()
    };
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
            FunnelReport {
                funnel: spec.name.clone(),
                window_seconds: spec.window_ms / 1000,
                modes: spec.modes.iter().map(|m| m.as_str().to_string()).collect(),
                breakdown: spec.breakdown.clone(),
                cutoff: fmt(cutoff),
                closed_windows_only: opts.closed_windows_only,
                from: opts.from_ms.map(fmt),
                to: opts.to_ms.map(fmt),
                groups,
                interval: opts.interval.map(|i| i.name().to_string()),
                trend,
                timezone: tz_name.clone(),
            }
        })
        .collect();
    Ok(Analysis { reports, audit })
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
    }
    let mut breakdown: Vec<&str> = setup
        .specs
        .iter()
        .flat_map(|s| s.breakdown.iter().map(String::as_str))
        .filter(|c| *c != schema::PERSON_ID && *c != schema::EVENT_ID)
        .collect();
    breakdown.sort_unstable();
    breakdown.dedup();
    select.extend(breakdown.into_iter().map(col));
    lf.filter(ts().lt_eq(lit(setup.cutoff)))
        .select(select)
        .collect()
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
    rows: &'a mut Vec<AuditRow>,
    funnel: usize,
    key: &'a Key,
    person: &'a str,
    event_ids: &'a [String],
}

/// One group evaluation's effect on an accumulator (and the audit).
#[allow(clippy::too_many_arguments)]
fn record(
    acc: &mut GroupAcc,
    audit: Option<AuditCtx<'_>>,
    level: u32,
    path: &[u32],
    ts: &[i64],
    spec: &FunnelSpec,
    cutoff: i64,
    closed_only: bool,
) {
    let open = level >= 1 && ts[path[0] as usize] + spec.window_ms > cutoff;
    if closed_only && open {
        acc.excluded += 1;
        return;
    }
    acc.levels[level as usize] += 1;
    if open && (level as usize) < spec.steps.len() {
        acc.open[level as usize] += 1;
    }
    let first = path.first().map(|r| ts[*r as usize]);
    for k in 1..path.len() {
        let t = ts[path[k] as usize];
        acc.from_previous[k].push(t - ts[path[k - 1] as usize]);
        acc.from_first[k].push(t - first.expect("non-empty path"));
    }
    if let Some(a) = audit {
        a.rows.push(AuditRow {
            funnel: a.funnel,
            group: serde_json::to_string(a.key).expect("key serialises"),
            person_id: a.person.to_string(),
            level,
            window_open: open,
            chain: path
                .iter()
                .map(|r| (ts[*r as usize], a.event_ids[*r as usize].clone()))
                .collect(),
        });
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
    let mut masks: Vec<Vec<u64>> = Vec::with_capacity(specs.len());
    for i in 0..specs.len() {
        masks.push(
            df.column(&mask_column(i))?
                .u64()?
                .into_no_null_iter()
                .collect(),
        );
    }
    let breakdowns: Vec<Vec<StringChunked>> = specs
        .iter()
        .map(|s| {
            s.breakdown
                .iter()
                .map(|c| df.column(c.as_str()).and_then(|s| s.str().cloned()))
                .collect::<PolarsResult<Vec<_>>>()
        })
        .collect::<PolarsResult<_>>()?;
    let ids: Vec<&str> = persons.iter().map(|p| p.unwrap_or_default()).collect();
    let mut out: Vec<Partial> = specs.iter().map(|_| Partial::default()).collect();
    let mut scratch = Scratch::default();
    let mut restricted: Vec<u64> = Vec::new();
    let no_key = Key::new();
    let cutoff = setup.cutoff;
    let closed = setup.opts.closed_windows_only;
    let mut start = 0;
    while start < ids.len() {
        let mut end = start + 1;
        while end < ids.len() && ids[end] == ids[start] {
            end += 1;
        }
        let person = ids[start];
        let t = &ts[start..end];
        let eids = if event_ids.is_empty() {
            &[][..]
        } else {
            &event_ids[start..end]
        };
        for (i, spec) in specs.iter().enumerate() {
            let kernel = &setup.kernels[i];
            let n = spec.steps.len();
            let m = &masks[i][start..end];
            let part = &mut out[i];
            let mut audit = if setup.opts.audit {
                Some(Vec::new())
            } else {
                None
            };
            let level = kernel.run(t, m, &mut scratch);
            let total = part.total.get_or_insert_with(|| GroupAcc::new(n));
            record(
                total,
                audit.as_mut().map(|rows| AuditCtx {
                    rows,
                    funnel: i,
                    key: &no_key,
                    person,
                    event_ids: eids,
                }),
                level,
                &scratch.path,
                t,
                spec,
                cutoff,
                closed,
            );
            // Breakdown and trend keys come from the step-1 events (CONTRACT §5): per key K,
            // step 1 also requires K.
            let cols = &breakdowns[i];
            let step1: Vec<usize> = (0..m.len()).filter(|r| m[*r] & 1 != 0).collect();
            if step1.is_empty() {
                if let Some(a) = audit {
                    part.audit.extend(a);
                }
                continue;
            }
            let bkey = |r: usize| -> Key {
                spec.breakdown
                    .iter()
                    .zip(cols)
                    .map(|(c, v)| (c.clone(), v.get(start + r).map(str::to_string)))
                    .collect()
            };
            let period = |r: usize| setup.opts.interval.map(|iv| iv.label(t[r], &setup.tz));
            let mut evals: Vec<(bool, Key)> = Vec::new();
            for &r in &step1 {
                if !cols.is_empty() {
                    evals.push((false, bkey(r)));
                }
                if let Some(p) = period(r) {
                    let mut k = Key::new();
                    k.insert("period".into(), Some(p.clone()));
                    evals.push((true, k));
                    if !cols.is_empty() {
                        let mut k = bkey(r);
                        k.insert("period".into(), Some(p));
                        evals.push((true, k));
                    }
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
                            cols[idx].get(start + r) == v.as_deref()
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
                let level = kernel.run(t, &restricted, &mut scratch);
                let map = if is_trend {
                    &mut part.trend
                } else {
                    &mut part.by_key
                };
                let acc = map.entry(key.clone()).or_insert_with(|| GroupAcc::new(n));
                record(
                    acc,
                    audit.as_mut().map(|rows| AuditCtx {
                        rows,
                        funnel: i,
                        key: &key,
                        person,
                        event_ids: eids,
                    }),
                    level,
                    &scratch.path,
                    t,
                    spec,
                    cutoff,
                    closed,
                );
            }
            if let Some(a) = audit {
                part.audit.extend(a);
            }
        }
        start = end;
    }
    Ok(out)
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
        let ts: Vec<Option<i64>> = rows.iter().map(|r| r.chain.get(k).map(|c| c.0)).collect();
        let ts = Column::new(format!("step_{}_ts", k + 1).into(), ts)
            .cast(&DataType::Datetime(
                TimeUnit::Milliseconds,
                Some(polars::prelude::TimeZone::UTC),
            ))
            .map_err(err)?;
        cols.push(ts);
        let ids: Vec<Option<&str>> = rows
            .iter()
            .map(|r| r.chain.get(k).map(|c| c.1.as_str()))
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
