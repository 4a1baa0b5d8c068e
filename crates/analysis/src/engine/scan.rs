//! The scan: the only part of the engine that knows Parquet and polars.
//!
//! A bucket file is split into units of whole persons at row-group boundaries ([`person_units`]);
//! a unit is read into [`Events`]: per event its time, per funnel its step bitmask and exclusion
//! bitmask, and the breakdown and `hold_constant` columns as codes of their values. Events after
//! the cutoff are dropped; columns a file lacks are null in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use foldhash::fast::FixedState;
use funnel_core::{FunnelSpec, schema};
use polars::prelude::*;

use super::Setup;
use crate::{AnalysisError, AnalyzeOptions};

/// A column's values in one unit, interned: a code per row, the value of each code (codes in
/// order of first appearance).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Coded {
    pub codes: Vec<u32>,
    pub values: Vec<Option<String>>,
}

/// One unit's events, in store order (by person, then time).
#[derive(Debug, Default)]
pub(super) struct Events {
    pub ts: Vec<i64>,
    /// Row where each person's events start, and one past the last row.
    pub person_starts: Vec<usize>,
    /// Per person (audit only).
    pub person_ids: Vec<String>,
    /// Per row (audit only).
    pub event_ids: Vec<String>,
    /// Per funnel, per row: bit k set when the event satisfies step k+1 (and, for step 1, falls
    /// in `--from`/`--to`).
    pub masks: Vec<Vec<u64>>,
    /// Per funnel with exclusions, per row: bit j set when the event matches exclusion j.
    pub excluded: Vec<Option<Vec<u64>>>,
    /// Breakdown and `hold_constant` columns by name.
    pub columns: HashMap<String, Coded>,
}

/// Rows of a bucket file that hold whole persons: one or more consecutive row groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unit {
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
pub(super) fn person_units(path: &Path, filter_ts: bool) -> Result<Vec<Unit>, AnalysisError> {
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
    let coded = coded_columns(setup.specs);
    if setup.opts.audit || coded.contains(&schema::EVENT_ID) {
        select.push(col(schema::EVENT_ID));
    }
    for (i, spec) in setup.specs.iter().enumerate() {
        select.push(step_mask(spec, setup.opts).alias(mask_column(i)));
        if !spec.exclusions.is_empty() {
            select.push(exclusion_mask(spec).alias(exclusion_column(i)));
        }
    }
    select.extend(
        coded
            .into_iter()
            .filter(|c| *c != schema::PERSON_ID && *c != schema::EVENT_ID)
            .map(col),
    );
    if unit.filter_ts {
        lf = lf.filter(ts().lt_eq(lit(setup.cutoff)));
    }
    lf.select(select).collect()
}

/// Reads one unit.
pub(super) fn read(unit: &Unit, setup: &Setup<'_>) -> PolarsResult<Events> {
    let df = unit_frame(unit, setup)?;
    let persons = df.column(schema::PERSON_ID)?.str()?;
    let ts: Vec<i64> = df.column(schema::TS)?.i64()?.into_no_null_iter().collect();
    let mut person_starts = Vec::new();
    let mut person_ids = Vec::new();
    let mut previous: Option<Option<&str>> = None;
    for (r, p) in persons.iter().enumerate() {
        if previous != Some(p) {
            person_starts.push(r);
            if setup.opts.audit {
                person_ids.push(p.unwrap_or_default().to_string());
            }
            previous = Some(p);
        }
    }
    person_starts.push(ts.len());
    let event_ids: Vec<String> = if setup.opts.audit {
        df.column(schema::EVENT_ID)?
            .str()?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect()
    } else {
        Vec::new()
    };
    let mut masks = Vec::with_capacity(setup.specs.len());
    let mut excluded = Vec::with_capacity(setup.specs.len());
    for (i, spec) in setup.specs.iter().enumerate() {
        masks.push(
            df.column(&mask_column(i))?
                .u64()?
                .into_no_null_iter()
                .collect(),
        );
        excluded.push(if spec.exclusions.is_empty() {
            None
        } else {
            Some(
                df.column(&exclusion_column(i))?
                    .u64()?
                    .into_no_null_iter()
                    .collect(),
            )
        });
    }
    let mut columns = HashMap::new();
    for name in coded_columns(setup.specs) {
        columns.insert(name.to_string(), coded(df.column(name)?.str()?));
    }
    Ok(Events {
        ts,
        person_starts,
        person_ids,
        event_ids,
        masks,
        excluded,
        columns,
    })
}

/// The breakdown and `hold_constant` columns of every funnel, once each.
fn coded_columns(specs: &[FunnelSpec]) -> Vec<&str> {
    let mut names: Vec<&str> = specs
        .iter()
        .flat_map(|s| {
            s.breakdown
                .iter()
                .chain(s.hold_constant.iter())
                .map(String::as_str)
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// A string column interned. (The hasher's fixed seed is for speed: codes follow first
/// appearance, not hash order.)
fn coded(column: &StringChunked) -> Coded {
    let mut dict: HashMap<Option<&str>, u32, FixedState> = HashMap::default();
    let mut values = Vec::new();
    let codes = column
        .iter()
        .map(|v| {
            *dict.entry(v).or_insert_with(|| {
                values.push(v.map(str::to_string));
                (values.len() - 1) as u32
            })
        })
        .collect();
    Coded { codes, values }
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

fn mask_column(i: usize) -> String {
    format!("__mask{i}")
}

fn exclusion_column(i: usize) -> String {
    format!("__excl{i}")
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
}
