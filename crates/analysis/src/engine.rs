//! Runs funnels over the store: one pass over the bucket files, however many funnels.
//!
//! Per bucket file (persons are never split across buckets, and each file is sorted by
//! `(person_id, ts, event_id)`), the step conditions of every funnel are evaluated column-wise
//! by polars into one 64-bit step mask per event and funnel; the kernel then walks each person's
//! events once. Memory is bounded by the largest bucket, not the store.

use std::collections::BTreeMap;
use std::path::Path;

use funnel_core::{FunnelSpec, StoreLayout, schema};
use polars::prelude::*;

use crate::AnalysisError;
use crate::kernel::{Kernel, Modes};
use crate::report::{FunnelReport, group};

/// Breakdown key: the values of the breakdown columns on a step-1 event.
type Key = Vec<Option<String>>;

struct Accumulator<'s> {
    spec: &'s FunnelSpec,
    kernel: Kernel,
    /// Persons by exact level, all persons.
    total: Vec<u64>,
    /// Persons by exact level, per breakdown key.
    by_key: BTreeMap<Key, Vec<u64>>,
}

/// Computes every funnel over the store at `store`.
pub fn analyze(store: &Path, specs: &[FunnelSpec]) -> Result<Vec<FunnelReport>, AnalysisError> {
    let (dir, manifest) = StoreLayout::new(store).open_existing()?;
    for spec in specs {
        spec.check_columns(&manifest.properties)?;
    }
    let mut accs: Vec<Accumulator<'_>> = specs
        .iter()
        .map(|spec| Accumulator {
            spec,
            kernel: Kernel::new(spec.steps.len(), spec.window_ms, Modes::from(&spec.modes)),
            total: vec![0; spec.steps.len() + 1],
            by_key: BTreeMap::new(),
        })
        .collect();
    let name = store.display().to_string();
    let polars_err = |source| AnalysisError::Polars {
        store: name.clone(),
        source,
    };
    for file in &manifest.event_files {
        let df = bucket_frame(&dir.join(&file.path), specs).map_err(polars_err)?;
        walk_bucket(&df, &mut accs).map_err(polars_err)?;
    }
    Ok(accs.into_iter().map(finish).collect())
}

fn mask_column(i: usize) -> String {
    format!("__mask{i}")
}

/// One bucket file with, per funnel, a step-mask column.
fn bucket_frame(path: &Path, specs: &[FunnelSpec]) -> PolarsResult<DataFrame> {
    let args = ScanArgsParquet {
        hive_options: HiveOptions::new_disabled(),
        ..Default::default()
    };
    let mut lf = LazyFrame::scan_parquet(PlRefPath::new(path.to_string_lossy().as_ref()), args)?;
    let present = lf.collect_schema()?;
    // Property columns that appeared after this file was written are null in it.
    let mut columns: Vec<String> = specs.iter().flat_map(|s| s.columns()).collect();
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
    let mut select = vec![
        col(schema::PERSON_ID),
        col(schema::TS).cast(DataType::Int64).alias(schema::TS),
    ];
    for (i, spec) in specs.iter().enumerate() {
        select.push(step_mask(spec).alias(mask_column(i)));
    }
    let mut breakdown: Vec<&str> = specs
        .iter()
        .flat_map(|s| s.breakdown.iter().map(String::as_str))
        .collect();
    breakdown.sort_unstable();
    breakdown.dedup();
    for c in breakdown {
        if c != schema::PERSON_ID {
            select.push(col(c));
        }
    }
    lf.select(select).collect()
}

/// The step bitmask of a funnel as a polars expression: bit k set when the event satisfies step k+1.
fn step_mask(spec: &FunnelSpec) -> Expr {
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
        mask = mask
            + when(cond.fill_null(lit(false)))
                .then(u64_lit(1 << k))
                .otherwise(u64_lit(0));
    }
    mask
}

fn walk_bucket(df: &DataFrame, accs: &mut [Accumulator<'_>]) -> PolarsResult<()> {
    let persons = df.column(schema::PERSON_ID)?.str()?.clone();
    let ts_col = df.column(schema::TS)?.i64()?.clone();
    let ts: Vec<i64> = ts_col.into_no_null_iter().collect();
    let mut masks: Vec<Vec<u64>> = Vec::with_capacity(accs.len());
    for i in 0..accs.len() {
        masks.push(
            df.column(&mask_column(i))?
                .u64()?
                .into_no_null_iter()
                .collect(),
        );
    }
    let breakdowns: Vec<Vec<StringChunked>> = accs
        .iter()
        .map(|a| {
            a.spec
                .breakdown
                .iter()
                .map(|c| df.column(c.as_str()).and_then(|s| s.str().cloned()))
                .collect::<PolarsResult<Vec<_>>>()
        })
        .collect::<PolarsResult<_>>()?;
    let ids: Vec<&str> = persons.iter().map(|p| p.unwrap_or_default()).collect();
    let mut scratch: Vec<u64> = Vec::new();
    let mut start = 0;
    while start < ids.len() {
        let mut end = start + 1;
        while end < ids.len() && ids[end] == ids[start] {
            end += 1;
        }
        let t = &ts[start..end];
        for (i, acc) in accs.iter_mut().enumerate() {
            let m = &masks[i][start..end];
            let level = acc.kernel.level(t, m) as usize;
            acc.total[level] += 1;
            let cols = &breakdowns[i];
            if cols.is_empty() {
                continue;
            }
            // Breakdown (CONTRACT §5): per value V of the step-1 events, step 1 also requires V.
            let key_of = |r: usize| -> Key {
                cols.iter()
                    .map(|c| c.get(start + r).map(str::to_string))
                    .collect()
            };
            let mut keys: Vec<Key> = (0..m.len())
                .filter(|r| m[*r] & 1 != 0)
                .map(key_of)
                .collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                scratch.clear();
                scratch.extend((0..m.len()).map(|r| {
                    if m[r] & 1 != 0 && key_of(r) != key {
                        m[r] & !1
                    } else {
                        m[r]
                    }
                }));
                let level = acc.kernel.level(t, &scratch) as usize;
                acc.by_key
                    .entry(key)
                    .or_insert_with(|| vec![0; acc.spec.steps.len() + 1])[level] += 1;
            }
        }
        start = end;
    }
    Ok(())
}

fn finish(acc: Accumulator<'_>) -> FunnelReport {
    let spec = acc.spec;
    let mut groups = vec![group(spec, BTreeMap::new(), &acc.total)];
    let mut keys: Vec<(Key, Vec<u64>)> = acc.by_key.into_iter().collect();
    // Values in order, a missing value (null) after them.
    keys.sort_by(|a, b| {
        let rank = |k: &Key| {
            k.iter()
                .map(|v| (v.is_none(), v.clone()))
                .collect::<Vec<_>>()
        };
        rank(&a.0).cmp(&rank(&b.0))
    });
    for (key, levels) in keys {
        let named = spec.breakdown.iter().cloned().zip(key).collect();
        groups.push(group(spec, named, &levels));
    }
    FunnelReport {
        funnel: spec.name.clone(),
        window_seconds: spec.window_ms / 1000,
        modes: spec.modes.iter().map(|m| m.as_str().to_string()).collect(),
        breakdown: spec.breakdown.clone(),
        groups,
    }
}
