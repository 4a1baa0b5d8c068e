//! The readers, end to end: `funnel_ingest::ingest` of one export file into a fresh store.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray,
    Float32Array, Float64Array, Int32Array, Int64Array, LargeStringArray, ListBuilder, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt64Array,
};
use arrow::datatypes::{Field, Int32Type, Schema, TimestampMillisecondType};
use funnel_core::time::{MAX_MS, MIN_MS};
use funnel_core::{Counts, StoreLayout};
use funnel_ingest::{IngestError, IngestOptions, ingest};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

/// Longest error text accepted: one line naming file, line and field, not a dump.
const MAX_ERROR_CHARS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Csv,
    Jsonl,
    Parquet,
}

/// The input as a CSV export.
pub fn csv(input: &[u8]) -> Result<(), String> {
    run(Kind::Csv, false, input)
}

/// The input as a gzip-compressed CSV export (written as it is if it already starts with the
/// gzip magic bytes, so broken gzip streams are tried too).
pub fn csv_gz(input: &[u8]) -> Result<(), String> {
    run(Kind::Csv, true, input)
}

/// The input as a JSON lines export.
pub fn jsonl(input: &[u8]) -> Result<(), String> {
    run(Kind::Jsonl, false, input)
}

/// The input as a gzip-compressed JSON lines export (see [`csv_gz`]).
pub fn jsonl_gz(input: &[u8]) -> Result<(), String> {
    run(Kind::Jsonl, true, input)
}

/// The input as a Parquet export: as it is when it starts with `PAR1`, else a small text table
/// converted to Parquet with typed columns (see [`text_to_parquet`]).
pub fn parquet(input: &[u8]) -> Result<(), String> {
    run(Kind::Parquet, false, input)
}

/// Invariants of one ingest of the file into a fresh store:
/// - on `Ok`: the counts reconcile (read = stored + rejected + duplicate, the reasons sum to
///   the rejected rows, per file and in total); the store holds exactly the stored rows (read
///   back from its Parquet files), with distinct event ids and timestamps in years 1..9999; the
///   quarantine file holds exactly the rejected rows; and ingesting the same file again stores
///   nothing: every row is a duplicate or rejected again for the same reason;
/// - on `Err`: the error text is one line of at most 2,000 characters, and the store has no
///   `current` generation.
fn run(kind: Kind, gzip: bool, input: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("harness: temp dir: {e}"))?;
    let file = write_input(dir.path(), kind, gzip, input)?;
    let store = dir.path().join("store");
    let opts = IngestOptions::new(&store);
    let files = [file];
    let first = match ingest(&opts, &files, &|_| {}) {
        Ok(r) => r,
        Err(e) => {
            check_error(&e)?;
            return match StoreLayout::new(&store).open_current() {
                Ok(None) => Ok(()),
                other => Err(format!("after the error {e}, the store has {other:?}")),
            };
        }
    };
    let c = &first.run.counts;
    check_counts("the run", c)?;
    for f in &first.run.inputs {
        check_counts(&format!("file {}", f.path), &f.counts)?;
    }
    if first.events_in_store != c.rows_stored {
        return Err(format!(
            "a fresh store holds {} events after storing {}",
            first.events_in_store, c.rows_stored
        ));
    }
    check_store(&store, c.rows_stored, c.rows_rejected)?;
    let second = ingest(&opts, &files, &|_| {})
        .map_err(|e| format!("the second ingest of the same file failed: {e}"))?;
    let again = &second.run.counts;
    check_counts("the second run", again)?;
    let want = Counts {
        rows_read: c.rows_read,
        rows_stored: 0,
        rows_rejected: c.rows_rejected,
        rows_duplicate: c.rows_stored + c.rows_duplicate,
        rejected_by_reason: c.rejected_by_reason.clone(),
    };
    if *again != want {
        return Err(format!(
            "the same file again gives {again:?}, expected {want:?} (first run {c:?})"
        ));
    }
    check_store(&store, c.rows_stored, c.rows_rejected)?;
    Ok(())
}

fn write_input(dir: &Path, kind: Kind, gzip: bool, input: &[u8]) -> Result<PathBuf, String> {
    let name = match (kind, gzip) {
        (Kind::Csv, false) => "export.csv",
        (Kind::Csv, true) => "export.csv.gz",
        (Kind::Jsonl, false) => "export.jsonl",
        (Kind::Jsonl, true) => "export.jsonl.gz",
        (Kind::Parquet, _) => "export.parquet",
    };
    let path = dir.join(name);
    let bytes = if kind == Kind::Parquet && !input.starts_with(b"PAR1") {
        text_to_parquet(input)?
    } else if gzip && !input.starts_with(&[0x1f, 0x8b]) {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(input)
            .and_then(|_| enc.finish())
            .map_err(|e| format!("harness: gzip: {e}"))?
    } else {
        input.to_vec()
    };
    std::fs::write(&path, bytes).map_err(|e| format!("harness: write input: {e}"))?;
    Ok(path)
}

fn check_error(e: &IngestError) -> Result<(), String> {
    let text = e.to_string();
    if matches!(e, IngestError::Cancelled) {
        return Err(format!("ingest returned the internal error: {text}"));
    }
    super::one_line("the ingest error", &text, MAX_ERROR_CHARS)
}

fn check_counts(what: &str, c: &Counts) -> Result<(), String> {
    let reasons: u64 = c.rejected_by_reason.values().sum();
    if c.rows_read != c.rows_stored + c.rows_rejected + c.rows_duplicate
        || reasons != c.rows_rejected
        || c.rejected_by_reason.values().any(|&n| n == 0)
    {
        return Err(format!("{what}: the counts do not reconcile: {c:?}"));
    }
    Ok(())
}

/// The current generation holds `events` events (distinct event ids, timestamps in range) and
/// its latest run's quarantine `rejected` rows.
fn check_store(store: &Path, events: u64, rejected: u64) -> Result<(), String> {
    let generation = StoreLayout::new(store)
        .open_current()
        .map_err(|e| format!("the store after a run: {e}"))?
        .ok_or("no current generation after a successful run")?;
    let (dir, manifest) = (generation.dir(), generation.manifest());
    if manifest.events != events || !manifest.totals.reconciles() {
        return Err(format!(
            "the manifest says {} events (expected {events}), totals {:?}",
            manifest.events, manifest.totals
        ));
    }
    let mut ids = HashSet::new();
    let mut rows = 0u64;
    for f in &manifest.event_files {
        for batch in read_parquet(&dir.join(&f.path))? {
            rows += batch.num_rows() as u64;
            let id = column(&batch, "event_id")?;
            let id = id
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or("event_id is not a string column")?;
            let ts = column(&batch, "ts")?;
            let ts = ts
                .as_any()
                .downcast_ref::<arrow::array::PrimitiveArray<TimestampMillisecondType>>()
                .ok_or("ts is not a millisecond timestamp column")?;
            for i in 0..batch.num_rows() {
                if id.is_null(i) || !ids.insert(id.value(i).to_string()) {
                    return Err(format!("event_id {:?} stored twice or null", id.value(i)));
                }
                if ts.is_null(i) || !(MIN_MS..=MAX_MS).contains(&ts.value(i)) {
                    return Err(format!(
                        "event {:?} stored with ts {:?}, outside years 1..9999",
                        id.value(i),
                        (!ts.is_null(i)).then(|| ts.value(i))
                    ));
                }
            }
        }
    }
    if rows != events {
        return Err(format!(
            "the bucket files hold {rows} rows, expected {events}"
        ));
    }
    let run = manifest.runs.last().ok_or("a manifest without runs")?;
    let quarantined: u64 = match &run.quarantine_file {
        Some(q) => read_parquet(&dir.join(q))?
            .iter()
            .map(|b| b.num_rows() as u64)
            .sum(),
        None => 0,
    };
    if quarantined != rejected {
        return Err(format!(
            "the quarantine holds {quarantined} rows, the run rejected {rejected}"
        ));
    }
    Ok(())
}

fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef, String> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| format!("the store has no {name} column"))
}

/// A text table as a Parquet file. The first line names the columns, `name` or `name:type`
/// (types: str, lstr, bin, i32, i64, u64, f32, f64, bool, dec (decimal(38, 4) of the integer
/// written), date32, dict (dictionary-encoded strings), list (strings split at `|`), and
/// timestamps ts_s, ts_ms, ts_us, ts_ns, naive or with `_utc` or `_sh` (+08:00) for a zone);
/// each further line is a row of comma-separated values. An empty or unparsable value is null.
/// Row groups of 3 rows, so that batches and row groups end inside the table.
pub fn text_to_parquet(input: &[u8]) -> Result<Vec<u8>, String> {
    let text = String::from_utf8_lossy(input);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, spec) in header.split(',').enumerate() {
        let (name, ty) = spec.split_once(':').unwrap_or((spec, "str"));
        let cells: Vec<Option<&str>> = rows
            .iter()
            .map(|r| r.get(i).copied().filter(|v| !v.is_empty()))
            .collect();
        let array = typed_array(ty, &cells);
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = if arrays.is_empty() {
        RecordBatch::new_empty(schema.clone())
    } else {
        RecordBatch::try_new(schema.clone(), arrays).map_err(|e| format!("harness: {e}"))?
    };
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(3))
        .build();
    let mut out = Vec::new();
    let mut w =
        ArrowWriter::try_new(&mut out, schema, Some(props)).map_err(|e| format!("harness: {e}"))?;
    w.write(&batch).map_err(|e| format!("harness: {e}"))?;
    w.close().map_err(|e| format!("harness: {e}"))?;
    Ok(out)
}

fn typed_array(ty: &str, cells: &[Option<&str>]) -> ArrayRef {
    fn parsed<T: std::str::FromStr>(cells: &[Option<&str>]) -> Vec<Option<T>> {
        cells
            .iter()
            .map(|c| c.and_then(|v| v.trim().parse().ok()))
            .collect()
    }
    let (unit, zone) = match ty.split_once('_').filter(|(u, _)| *u == "ts") {
        Some((_, rest)) => match rest.split_once('_') {
            Some((u, "utc")) => (u, Some("UTC")),
            Some((u, "sh")) => (u, Some("+08:00")),
            Some((u, _)) => (u, None),
            None => (rest, None),
        },
        None => ("", None),
    };
    if ty.starts_with("ts_") {
        let v = parsed::<i64>(cells);
        let a: ArrayRef = match unit {
            "s" => Arc::new(TimestampSecondArray::from(v).with_timezone_opt(zone)),
            "us" => Arc::new(TimestampMicrosecondArray::from(v).with_timezone_opt(zone)),
            "ns" => Arc::new(TimestampNanosecondArray::from(v).with_timezone_opt(zone)),
            _ => Arc::new(TimestampMillisecondArray::from(v).with_timezone_opt(zone)),
        };
        return a;
    }
    match ty {
        "lstr" => Arc::new(LargeStringArray::from(cells.to_vec())),
        "bin" => Arc::new(BinaryArray::from(
            cells
                .iter()
                .map(|c| c.map(str::as_bytes))
                .collect::<Vec<_>>(),
        )),
        "i32" => Arc::new(Int32Array::from(parsed::<i32>(cells))),
        "i64" => Arc::new(Int64Array::from(parsed::<i64>(cells))),
        "u64" => Arc::new(UInt64Array::from(parsed::<u64>(cells))),
        "f32" => Arc::new(Float32Array::from(parsed::<f32>(cells))),
        "f64" => Arc::new(Float64Array::from(parsed::<f64>(cells))),
        "bool" => Arc::new(BooleanArray::from(parsed::<bool>(cells))),
        "date32" => Arc::new(Date32Array::from(parsed::<i32>(cells))),
        "dec" => Arc::new(
            Decimal128Array::from(
                parsed::<i128>(cells)
                    .into_iter()
                    .map(|v| v.filter(|x| x.unsigned_abs() < 10u128.pow(38)))
                    .collect::<Vec<_>>(),
            )
            .with_precision_and_scale(38, 4)
            .expect("valid precision and scale"),
        ),
        "dict" => Arc::new(
            cells
                .iter()
                .copied()
                .collect::<DictionaryArray<Int32Type>>(),
        ),
        "list" => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for c in cells {
                match c {
                    Some(v) => {
                        for item in v.split('|') {
                            b.values().append_value(item);
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
        _ => Arc::new(StringArray::from(cells.to_vec())),
    }
}
