//! The scan: the only part of the engine that knows Parquet.
//!
//! A bucket file is split into units of whole persons at row-group boundaries ([`person_units`]);
//! a unit is read into [`Events`] with the Parquet reader of arrow-rs, row group by row group:
//! per event its time, per funnel its step bitmask and exclusion bitmask, and the grouping
//! columns as codes of their values.
//!
//! Text columns are read as dictionaries where the file stores them so (the store's writer
//! does, for every column but ids), and every step condition of every funnel is evaluated once
//! per distinct value of a row group, not per event: per column, a table from value code to the
//! bits of the conditions that value satisfies, and an event's mask is the AND of its columns'
//! table entries. Events after the cutoff are dropped; columns a file lacks are null in it; a
//! condition on a null value is false (as SQL's `IN` is, filled with false).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use foldhash::fast::FixedState;
use funnel_core::{Filter, FunnelSpec, schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::statistics::Statistics;

use super::Setup;
use crate::AnalysisError;

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
#[derive(Debug, Clone)]
pub(super) struct Unit {
    path: PathBuf,
    /// The file's footer, read once for all its units.
    meta: ArrowReaderMetadata,
    row_groups: Vec<usize>,
    /// Some events are after the cutoff.
    filter_ts: bool,
    /// Bounds of the unit's event times, where the statistics give them.
    ts_range: Option<(i64, i64)>,
}

impl Unit {
    /// Whether every event of the unit is after `cutoff` (by the statistics).
    pub fn after(&self, cutoff: i64) -> bool {
        self.filter_ts && self.ts_range.is_some_and(|(min, _)| min > cutoff)
    }

    /// Whether no event of the unit can be in `[from, to)` (by the statistics).
    pub fn outside(&self, from: Option<i64>, to: Option<i64>) -> bool {
        self.ts_range
            .is_some_and(|(min, max)| from.is_some_and(|f| max < f) || to.is_some_and(|t| min >= t))
    }
}

fn parquet_err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> AnalysisError + '_ {
    move |source| AnalysisError::Parquet {
        path: path.display().to_string(),
        source,
    }
}

/// Splits a bucket file into units at the row-group boundaries that do not split a person:
/// where the person ids of one row group all sort before those of the next, by the row
/// groups' statistics. Stores written since row groups end at person changes split at
/// every boundary; older stores (or missing statistics) give one unit for the file.
pub(super) fn person_units(
    path: &Path,
    filter_ts: bool,
    setup: &Setup<'_>,
) -> Result<Vec<Unit>, AnalysisError> {
    let err = parquet_err(path);
    let file = File::open(path).map_err(|source| AnalysisError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let footer = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(&err)?;
    let footer = Arc::new(footer);
    let plain =
        ArrowReaderMetadata::try_new(footer.clone(), ArrowReaderOptions::new()).map_err(&err)?;
    // Text columns the conditions and groups read, and person_id, come as dictionaries.
    let mut coded = read_columns(setup.specs, setup.recodes, &setup.opts.next_columns());
    coded.push(schema::PERSON_ID);
    let hinted: Vec<Field> = plain
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            if coded.contains(&f.name().as_str())
                && matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8)
            {
                let dict = DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(f.data_type().clone()),
                );
                f.with_data_type(dict)
            } else {
                f
            }
        })
        .collect();
    let meta = ArrowReaderMetadata::try_new(
        footer.clone(),
        ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(hinted))),
    )
    .map_err(&err)?;
    let columns = footer.file_metadata().schema_descr().columns();
    let column = |name: &str| columns.iter().position(|c| c.path().string() == name);
    let (person, ts) = (column(schema::PERSON_ID), column(schema::TS));
    let groups = footer.row_groups();
    let bounds = |i: usize| -> Option<(&[u8], &[u8])> {
        // Parquet's min and max are bounds (exact or not): max_i < min_i+1 is enough.
        let stats = groups[i].column(person?).statistics()?;
        Some((stats.min_bytes_opt()?, stats.max_bytes_opt()?))
    };
    let ts_bounds = |i: usize| -> Option<(i64, i64)> {
        match groups[i].column(ts?).statistics()? {
            Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
            _ => None,
        }
    };
    let mut units = Vec::new();
    let mut start = 0;
    for i in 0..groups.len() {
        let split = i + 1 == groups.len()
            || matches!((bounds(i), bounds(i + 1)), (Some((_, max)), Some((min, _))) if max < min);
        if split {
            let row_groups: Vec<usize> = (start..=i).collect();
            let ts_range = row_groups
                .iter()
                .map(|&g| ts_bounds(g))
                .try_fold(None, |acc: Option<(i64, i64)>, b| {
                    let (lo, hi) = b?;
                    Some(Some(acc.map_or((lo, hi), |(a, z)| (a.min(lo), z.max(hi)))))
                })
                .flatten();
            units.push(Unit {
                path: path.to_path_buf(),
                meta: meta.clone(),
                row_groups,
                filter_ts,
                ts_range,
            });
            start = i + 1;
        }
    }
    Ok(units)
}

/// Every text column a run reads besides `person_id` and `event_id`: `event_type`, the
/// filtered columns, and the breakdown and `hold_constant` columns.
fn read_columns<'s>(
    specs: &'s [FunnelSpec],
    recodes: &'s Recodes,
    next: &[&'s str],
) -> Vec<&'s str> {
    let mut names = vec![schema::EVENT_TYPE];
    names.extend(next);
    for s in specs {
        let filters = s
            .steps
            .iter()
            .flat_map(|st| &st.filters)
            .chain(s.exclusions.iter().flat_map(|x| &x.filters));
        names.extend(filters.map(|f| f.column.as_str()));
        names.extend(
            s.breakdown
                .iter()
                .chain(&s.hold_constant)
                .map(String::as_str),
        );
    }
    names.retain(|n| *n != schema::SPLIT);
    // A derived `top` column reads its source.
    for n in &mut names {
        if let Some(r) = recodes.get(*n) {
            *n = r.column.as_str();
        }
    }
    names.sort_unstable();
    names.dedup();
    names
}

/// The breakdown and `hold_constant` columns of every funnel, once each.
fn group_columns(specs: &[FunnelSpec]) -> Vec<&str> {
    let mut names: Vec<&str> = specs
        .iter()
        .flat_map(|s| {
            s.breakdown
                .iter()
                .chain(&s.hold_constant)
                .map(String::as_str)
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Interns the values of one column across the batches of a unit.
#[derive(Default)]
struct Interner {
    codes: HashMap<String, u32, FixedState>,
    null: Option<u32>,
    coded: Coded,
}

impl Interner {
    fn code(&mut self, value: Option<&str>) -> u32 {
        let Coded { values, .. } = &mut self.coded;
        let mut fresh = |v: Option<&str>| {
            values.push(v.map(str::to_string));
            (values.len() - 1) as u32
        };
        match value {
            None => *self.null.get_or_insert_with(|| fresh(None)),
            Some(s) => match self.codes.get(s) {
                Some(c) => *c,
                None => {
                    let c = fresh(Some(s));
                    self.codes.insert(s.to_string(), c);
                    c
                }
            },
        }
    }

    /// Appends the codes of one batch's column, `keep`ing the rows given (all when `None`).
    fn push(
        &mut self,
        name: &str,
        array: Option<&ArrayRef>,
        rows: usize,
        keep: Option<&[bool]>,
    ) -> Result<(), String> {
        let kept = |r: usize| keep.is_none_or(|k| k[r]);
        let Some(array) = array else {
            // A column the file lacks: null in it.
            for r in 0..rows {
                if kept(r) {
                    let c = self.code(None);
                    self.coded.codes.push(c);
                }
            }
            return Ok(());
        };
        if let DataType::Dictionary(key, _) = array.data_type()
            && **key == DataType::Int32
        {
            let dict = array.as_dictionary::<Int32Type>();
            let values = text(dict.values()).map_err(|t| format!("{name}: {t}"))?;
            // Batch key -> unit code, assigned at first use (codes follow first appearance).
            let mut remap: Vec<u32> = vec![u32::MAX; values.len()];
            let keys = dict.keys();
            for r in 0..rows {
                if !kept(r) {
                    continue;
                }
                let c = if keys.is_null(r) {
                    self.code(None)
                } else {
                    let k = keys.value(r) as usize;
                    if remap[k] == u32::MAX {
                        remap[k] = self.code(values.is_valid(k).then(|| values.value(k)));
                    }
                    remap[k]
                };
                self.coded.codes.push(c);
            }
            return Ok(());
        }
        let values = text(array).map_err(|t| format!("{name}: {t}"))?;
        for r in 0..rows {
            if kept(r) {
                let c = self.code(values.is_valid(r).then(|| values.value(r)));
                self.coded.codes.push(c);
            }
        }
        Ok(())
    }
}

/// The person ids of one batch: dictionary keys and values where the file has a dictionary
/// (equal keys: the same person, compared without reading the text), else the text.
struct Persons {
    keys: Option<arrow::array::Int32Array>,
    values: StringArray,
}

impl Persons {
    fn of(array: Option<&ArrayRef>) -> Result<Persons, String> {
        let array = array.ok_or_else(|| format!("no {} column", schema::PERSON_ID))?;
        let named = |t: String| format!("{}: {t}", schema::PERSON_ID);
        if let DataType::Dictionary(key, _) = array.data_type()
            && **key == DataType::Int32
        {
            let dict = array.as_dictionary::<Int32Type>();
            return Ok(Persons {
                keys: Some(dict.keys().clone()),
                values: text(dict.values()).map_err(named)?,
            });
        }
        Ok(Persons {
            keys: None,
            values: text(array).map_err(named)?,
        })
    }

    /// Row `r`'s id ("" for a null).
    fn get(&self, r: usize) -> &str {
        let i = match &self.keys {
            Some(keys) if keys.is_null(r) => return "",
            Some(keys) => keys.value(r) as usize,
            None => r,
        };
        if self.values.is_valid(i) {
            self.values.value(i)
        } else {
            ""
        }
    }

    /// Whether rows `a` and `b` hold the same id.
    fn same(&self, a: usize, b: usize) -> bool {
        if let Some(keys) = &self.keys
            && keys.is_valid(a)
            && keys.is_valid(b)
            && keys.value(a) == keys.value(b)
        {
            return true;
        }
        self.get(a) == self.get(b)
    }
}

/// A text column as `StringArray` (nulls for a column of nulls); other types are refused.
fn text(array: &ArrayRef) -> Result<StringArray, String> {
    match array.data_type() {
        DataType::Utf8 => Ok(array.as_string::<i32>().clone()),
        DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            let cast = arrow::compute::cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
            Ok(cast.as_string::<i32>().clone())
        }
        other => Err(format!("is {other}, not text")),
    }
}

/// Reads one unit.
pub(super) fn read(unit: &Unit, setup: &Setup<'_>) -> Result<Events, AnalysisError> {
    let path = &unit.path;
    let err = parquet_err(path);
    let bad = |message: String| AnalysisError::Column {
        path: path.display().to_string(),
        message,
    };
    let audit = setup.opts.audit;
    let coded_names = read_columns(setup.specs, setup.recodes, &setup.opts.next_columns());
    let schema = unit.meta.schema().clone();
    let mut wanted: Vec<&str> = vec![schema::PERSON_ID, schema::TS];
    if audit {
        wanted.push(schema::EVENT_ID);
    }
    wanted.extend(coded_names.iter().copied());
    let roots: Vec<usize> = wanted
        .iter()
        .filter_map(|n| schema.index_of(n).ok())
        .collect();
    let mask = ProjectionMask::roots(unit.meta.metadata().file_metadata().schema_descr(), roots);
    // Sized for the whole unit at once (growing them would copy them several times).
    let rows: usize = unit
        .row_groups
        .iter()
        .map(|&g| unit.meta.metadata().row_group(g).num_rows() as usize)
        .sum();
    let mut interners: Vec<Interner> = coded_names
        .iter()
        .map(|_| Interner {
            coded: Coded {
                codes: Vec::with_capacity(rows),
                values: Vec::new(),
            },
            ..Interner::default()
        })
        .collect();
    let mut ts: Vec<i64> = Vec::with_capacity(rows);
    let mut person_starts = Vec::new();
    let mut person_ids = Vec::new();
    let mut event_ids = Vec::new();
    let mut last_person: Option<String> = None;
    for &g in &unit.row_groups {
        let rows = unit.meta.metadata().row_group(g).num_rows() as usize;
        if rows == 0 {
            continue;
        }
        let file = File::open(path).map_err(|source| AnalysisError::Io {
            path: path.display().to_string(),
            source,
        })?;
        // One batch per row group: one dictionary per column and batch.
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, unit.meta.clone())
            .with_row_groups(vec![g])
            .with_projection(mask.clone())
            .with_batch_size(rows)
            .build()
            .map_err(&err)?;
        for batch in reader {
            let batch = batch.map_err(|e| err(e.into()))?;
            let n = batch.num_rows();
            let column = |name: &str| batch.column_by_name(name);
            let times =
                column(schema::TS).ok_or_else(|| bad(format!("no {} column", schema::TS)))?;
            let times = arrow::compute::cast(times, &DataType::Int64)
                .map_err(|e| bad(format!("{}: {e}", schema::TS)))?;
            let times = times.as_primitive::<arrow::datatypes::Int64Type>();
            let keep: Option<Vec<bool>> = unit.filter_ts.then(|| {
                (0..n)
                    .map(|r| times.is_valid(r) && times.value(r) <= setup.cutoff)
                    .collect()
            });
            let kept = |r: usize| keep.as_ref().is_none_or(|k| k[r]);
            let persons = Persons::of(column(schema::PERSON_ID)).map_err(bad)?;
            let ids = if audit {
                let ids = column(schema::EVENT_ID)
                    .ok_or_else(|| bad(format!("no {} column", schema::EVENT_ID)))?;
                Some(text(ids).map_err(|t| bad(format!("{}: {t}", schema::EVENT_ID)))?)
            } else {
                None
            };
            let mut previous: Option<usize> = None;
            for r in 0..n {
                if !kept(r) {
                    continue;
                }
                let new = match previous {
                    Some(q) => !persons.same(q, r),
                    None => last_person.as_deref() != Some(persons.get(r)),
                };
                if new {
                    person_starts.push(ts.len());
                    if audit {
                        person_ids.push(persons.get(r).to_string());
                    }
                }
                previous = Some(r);
                ts.push(times.value(r));
                if let Some(ids) = &ids {
                    let id = if ids.is_valid(r) { ids.value(r) } else { "" };
                    event_ids.push(id.to_string());
                }
            }
            if let Some(q) = previous {
                last_person = Some(persons.get(q).to_string());
            }
            for (name, interner) in coded_names.iter().zip(&mut interners) {
                interner
                    .push(name, column(name), n, keep.as_deref())
                    .map_err(bad)?;
            }
        }
    }
    person_starts.push(ts.len());
    let coded: HashMap<&str, Coded> = coded_names
        .iter()
        .copied()
        .zip(interners.into_iter().map(|i| i.coded))
        .collect();
    // Every condition of the run (each funnel's steps, then its exclusions) as one bit of a
    // packed mask, in packs of at most 64, evaluated in one pass per pack.
    let mut slots: Vec<(usize, usize)> = Vec::new(); // per funnel: (pack, first bit) of steps
    let mut exclusion_slots: Vec<(usize, usize)> = Vec::new();
    let mut packs: Vec<Vec<(&str, &[Filter])>> = Vec::new();
    for spec in setup.specs {
        let steps = spec.steps.iter();
        slots.push(place(
            &mut packs,
            steps.map(|s| (s.event_type.as_str(), s.filters.as_slice())),
        ));
        let exclusions = spec.exclusions.iter();
        exclusion_slots.push(place(
            &mut packs,
            exclusions.map(|x| (x.event_type.as_str(), x.filters.as_slice())),
        ));
    }
    let packed: Vec<Vec<u64>> = packs
        .iter()
        .map(|conds| conditions(conds, &coded, ts.len()))
        .collect();
    let bits = |(pack, first): (usize, usize), width: usize| -> Vec<u64> {
        let low = low_bits(width);
        packed[pack].iter().map(|m| (m >> first) & low).collect()
    };
    let mut masks = Vec::with_capacity(setup.specs.len());
    let mut excluded = Vec::with_capacity(setup.specs.len());
    for (i, spec) in setup.specs.iter().enumerate() {
        let mut m = bits(slots[i], spec.steps.len());
        let (from, to) = (setup.opts.from_ms, setup.opts.to_ms);
        if from.is_some() || to.is_some() {
            for (mask, t) in m.iter_mut().zip(&ts) {
                if from.is_some_and(|f| *t < f) || to.is_some_and(|e| *t >= e) {
                    *mask &= !1;
                }
            }
        }
        masks.push(m);
        excluded.push(
            (!spec.exclusions.is_empty()).then(|| bits(exclusion_slots[i], spec.exclusions.len())),
        );
    }
    let mut groups = group_columns(setup.specs);
    groups.extend(setup.opts.next_columns());
    let derived: Vec<(String, Coded)> = groups
        .iter()
        .filter_map(|g| {
            setup
                .recodes
                .get(*g)
                .map(|r| (g.to_string(), r.apply(&coded[r.column.as_str()])))
        })
        .collect();
    let mut columns: HashMap<String, Coded> = coded
        .into_iter()
        .filter(|(name, _)| groups.contains(name))
        .map(|(name, c)| (name.to_string(), c))
        .collect();
    columns.extend(derived);
    if groups.contains(&schema::SPLIT) {
        let at = setup.opts.split_at_ms.ok_or(AnalysisError::Option {
            option: "--split-at",
            value: format!("a funnel is broken down by {} without it", schema::SPLIT),
        })?;
        columns.insert(schema::SPLIT.to_string(), split_column(&ts, at));
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

/// Derived breakdown columns by name: a funnel's `top` values of a column, every other value
/// as [`schema::OTHER`].
pub(super) type Recodes = HashMap<String, Recode>;

/// One derived `top` column.
#[derive(Debug, Clone)]
pub(super) struct Recode {
    /// The column it derives from.
    pub column: String,
    /// The values kept as they are.
    pub kept: std::collections::HashSet<Option<String>>,
}

impl Recode {
    /// The derived column of one unit, coded in order of first appearance.
    fn apply(&self, source: &Coded) -> Coded {
        let mut out = Coded::default();
        let mut code_of: Vec<Option<u32>> = vec![None; source.values.len()];
        let mut other: Option<u32> = None;
        for &c in &source.codes {
            let code = match code_of[c as usize] {
                Some(x) => x,
                None => {
                    let value = &source.values[c as usize];
                    let x = if self.kept.contains(value) {
                        out.values.push(value.clone());
                        (out.values.len() - 1) as u32
                    } else {
                        *other.get_or_insert_with(|| {
                            out.values.push(Some(schema::OTHER.to_string()));
                            (out.values.len() - 1) as u32
                        })
                    };
                    code_of[c as usize] = Some(x);
                    x
                }
            };
            out.codes.push(code);
        }
        out
    }
}

/// The derived [`schema::SPLIT`] column: `"before"` for events before `at`, `"after"` for the
/// others, coded in order of first appearance (as every coded column is).
fn split_column(ts: &[i64], at: i64) -> Coded {
    let mut coded = Coded::default();
    let mut code = [None::<u32>; 2];
    for t in ts {
        let side = usize::from(*t >= at);
        let c = *code[side].get_or_insert_with(|| {
            coded.values.push(Some(
                [schema::SPLIT_BEFORE, schema::SPLIT_AFTER][side].to_string(),
            ));
            (coded.values.len() - 1) as u32
        });
        coded.codes.push(c);
    }
    coded
}

/// A mask of the `n` lowest bits (`n` at most 64).
fn low_bits(n: usize) -> u64 {
    u64::MAX.checked_shr(64 - n as u32).unwrap_or(0)
}

/// Appends conditions to the last pack, or to a new one where they would not fit in 64 bits:
/// (pack, first bit).
fn place<'s>(
    packs: &mut Vec<Vec<(&'s str, &'s [Filter])>>,
    conds: impl ExactSizeIterator<Item = (&'s str, &'s [Filter])>,
) -> (usize, usize) {
    if packs.last().is_none_or(|p| p.len() + conds.len() > 64) {
        packs.push(Vec::new());
    }
    let pack = packs.last_mut().expect("pushed above");
    let first = pack.len();
    pack.extend(conds);
    (packs.len() - 1, first)
}

/// Per row, bit k set when the row satisfies condition k: `event_type` equal to its first part
/// and every filter of its second (`column IN values`). Evaluated once per distinct value of
/// each column, then combined per row.
fn conditions(conds: &[(&str, &[Filter])], coded: &HashMap<&str, Coded>, rows: usize) -> Vec<u64> {
    let mut columns: Vec<&str> = vec![schema::EVENT_TYPE];
    for (_, filters) in conds {
        columns.extend(filters.iter().map(|f| f.column.as_str()));
    }
    columns.sort_unstable();
    columns.dedup();
    let all = low_bits(conds.len());
    let mut out = vec![all; rows];
    for name in columns {
        let c = &coded[name];
        // Per value code: the bits of the conditions the value allows.
        let table: Vec<u64> = c
            .values
            .iter()
            .map(|value| {
                conds
                    .iter()
                    .enumerate()
                    .filter(|(_, (event_type, filters))| {
                        allows(name, value.as_deref(), event_type, filters)
                    })
                    .fold(0, |bits, (k, _)| bits | 1 << k)
            })
            .collect();
        for (m, code) in out.iter_mut().zip(&c.codes) {
            *m &= table[*code as usize];
        }
    }
    out
}

/// Whether a value of `column` is allowed by a condition: always when the condition does not
/// constrain the column, never when the value is null, else when it passes every test on the
/// column.
fn allows(column: &str, value: Option<&str>, event_type: &str, filters: &[Filter]) -> bool {
    let mut on_column = filters.iter().filter(|f| f.column == column).peekable();
    let is_type = column == schema::EVENT_TYPE;
    if !is_type && on_column.peek().is_none() {
        return true;
    }
    let Some(v) = value else { return false };
    (!is_type || v == event_type) && on_column.all(|f| f.values.iter().any(|x| x == v))
}

#[cfg(test)]
mod tests {
    use polars::prelude::{
        self as pl, Column, DataFrame, IntoLazy, NamedFrom, ParquetWriter, Series,
        StatisticsOptions, col, lit, when,
    };
    use proptest::prelude::*;

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
        ParquetWriter::new(File::create(path).unwrap())
            .with_row_group_size(Some(row_group))
            .with_statistics(StatisticsOptions::full())
            .finish(&mut df)
            .unwrap();
    }

    fn setup_of<'a>(specs: &'a [FunnelSpec], opts: &'a crate::AnalyzeOptions) -> Setup<'a> {
        Setup {
            specs,
            kernels: specs.iter().map(crate::kernel::FunnelKernel::new).collect(),
            opts,
            cutoff: i64::MAX,
            tz: chrono_tz::UTC,
            recodes: Box::leak(Box::default()),
        }
    }

    #[test]
    fn a_top_column_keeps_its_values_and_folds_the_rest() {
        let v = |s: &str| Some(s.to_string());
        let source = Coded {
            codes: vec![0, 1, 2, 1, 3, 0, 2],
            values: vec![v("a"), v("b"), None, v("c")],
        };
        let r = Recode {
            column: "x".into(),
            kept: [v("b"), v("c")].into_iter().collect(),
        };
        let out = r.apply(&source);
        let values: Vec<Option<String>> = out
            .codes
            .iter()
            .map(|c| out.values[*c as usize].clone())
            .collect();
        let o = v(schema::OTHER);
        assert_eq!(
            values,
            [o.clone(), v("b"), o.clone(), v("b"), v("c"), o.clone(), o]
        );
        // Codes in order of first appearance, one code for every folded value.
        assert_eq!(out.codes, [0, 1, 0, 1, 2, 0, 0]);
    }

    #[test]
    fn units_split_only_between_persons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.parquet");
        let opts = crate::AnalyzeOptions::default();
        let setup = setup_of(&[], &opts);
        let groups = |filter_ts| -> Vec<Vec<usize>> {
            person_units(&path, filter_ts, &setup)
                .unwrap()
                .into_iter()
                .map(|u| u.row_groups)
                .collect()
        };
        // Row groups [a a b] [b b c] [d d e]: person b straddles the first boundary.
        write(&path, &["a", "a", "b", "b", "b", "c", "d", "d", "e"], 3);
        assert_eq!(groups(false), [vec![0, 1], vec![2]]);
        let units = person_units(&path, true, &setup).unwrap();
        assert!(units[0].filter_ts);
        // Statistics bound each unit's times: rows 0..=5 and 6..=8.
        assert_eq!(units[0].ts_range, Some((0, 5)));
        assert!(units[1].outside(Some(9), None) && !units[1].outside(Some(8), None));
        assert!(units[1].outside(None, Some(6)) && !units[1].outside(None, Some(7)));
        assert!(units[1].after(5) && !units[1].after(6) && !units[0].after(4));
        write(&path, &["a", "b", "c"], 10);
        assert_eq!(groups(false), [vec![0]]);
        write(&path, &["a", "a", "a", "a"], 2);
        assert_eq!(groups(false), [vec![0, 1]]);
    }

    /// The step conditions as the engine evaluated them before this scan: a polars expression
    /// per condition over the string columns (the slow reference of `conditions`).
    fn reference(df: &DataFrame, conds: &[(String, Vec<Filter>)]) -> Vec<u64> {
        let u64_lit = |v: u64| lit(v).cast(pl::DataType::UInt64);
        let mut mask = u64_lit(0);
        for (k, (event_type, filters)) in conds.iter().enumerate() {
            let mut cond = col(schema::EVENT_TYPE).eq(lit(event_type.clone()));
            for f in filters {
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
        let out = df
            .clone()
            .lazy()
            .select([mask.alias("m")])
            .collect()
            .unwrap();
        out.column("m")
            .unwrap()
            .u64()
            .unwrap()
            .into_no_null_iter()
            .collect()
    }

    const COLUMNS: [&str; 3] = [schema::EVENT_TYPE, "journey", "chat_type"];
    const VALUES: [&str; 4] = ["click", "purchase", "external_link", "group"];

    fn value() -> impl Strategy<Value = Option<String>> {
        prop::option::weighted(
            0.8,
            prop::sample::select(VALUES.to_vec()).prop_map(String::from),
        )
    }

    fn condition() -> impl Strategy<Value = (String, Vec<Filter>)> {
        let filter = (
            prop::sample::select(COLUMNS.to_vec()),
            prop::collection::vec(prop::sample::select(VALUES.to_vec()), 1..3),
        )
            .prop_map(|(c, v)| Filter {
                column: c.to_string(),
                values: v.into_iter().map(String::from).collect(),
            });
        (
            prop::sample::select(VALUES.to_vec()).prop_map(String::from),
            prop::collection::vec(filter, 0..3),
        )
    }

    proptest! {
        #[test]
        fn conditions_equal_the_polars_expressions(
            rows in prop::collection::vec([value(), value(), value()], 0..40),
            conds in prop::collection::vec(condition(), 1..6),
        ) {
            let df = DataFrame::new_infer_height(
                COLUMNS
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let v: Vec<Option<&str>> = rows.iter().map(|r| r[i].as_deref()).collect();
                        Column::new((*c).into(), v)
                    })
                    .collect(),
            )
            .unwrap();
            let coded: HashMap<&str, Coded> = COLUMNS
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut interner = Interner::default();
                    for r in &rows {
                        let code = interner.code(r[i].as_deref());
                        interner.coded.codes.push(code);
                    }
                    (*c, interner.coded)
                })
                .collect();
            let borrowed: Vec<(&str, &[Filter])> =
                conds.iter().map(|(e, f)| (e.as_str(), f.as_slice())).collect();
            prop_assert_eq!(conditions(&borrowed, &coded, rows.len()), reference(&df, &conds));
        }
    }
}
