//! Finding input files and reading their rows, format by format.
//!
//! Readers do not validate: they turn each physical row into named cells (or a malformed
//! record when the row cannot even be split into fields) and hand it on. Whole-file failures
//! (unreadable file, truncated gzip, not Parquet, a CSV without any contract column) stop the run.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use funnel_core::schema;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::IngestError;
use funnel_core::time::format_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Jsonl,
    Parquet,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct InputSpec {
    pub path: PathBuf,
    pub format: Format,
    pub gzip: bool,
}

/// The format of a file by its extension (CONTRACT §1), or `None` if unsupported.
pub(crate) fn classify(path: &Path) -> Option<(Format, bool)> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let (stem, gzip) = match name.strip_suffix(".gz") {
        Some(s) => (s, true),
        None => (name.as_str(), false),
    };
    let format = if stem.ends_with(".csv") {
        Format::Csv
    } else if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") {
        Format::Jsonl
    } else if stem.ends_with(".parquet") && !gzip {
        Format::Parquet
    } else {
        return None;
    };
    Some((format, gzip))
}

/// Expands the inputs into files, in sorted path order. Files inside directories with an
/// unsupported extension (or a hidden name) are skipped and returned as such; an unsupported file
/// named directly is an error.
pub(crate) fn discover(inputs: &[PathBuf]) -> Result<(Vec<InputSpec>, Vec<PathBuf>), IngestError> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => IngestError::InputNotFound {
                path: input.clone(),
            },
            _ => IngestError::unreadable(input, None, e),
        })?;
        if meta.is_dir() {
            walk(input, &mut files, &mut skipped)?;
        } else {
            let (format, gzip) = classify(input).ok_or_else(|| IngestError::UnsupportedInput {
                path: input.clone(),
            })?;
            files.push(InputSpec {
                path: input.clone(),
                format,
                gzip,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    skipped.sort();
    Ok((files, skipped))
}

fn walk(
    dir: &Path,
    files: &mut Vec<InputSpec>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), IngestError> {
    let entries = std::fs::read_dir(dir).map_err(|e| IngestError::unreadable(dir, None, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| IngestError::unreadable(dir, None, e))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let kind = entry
            .file_type()
            .map_err(|e| IngestError::unreadable(&path, None, e))?;
        let is_dir = kind.is_dir() || kind.is_symlink() && path.is_dir();
        if hidden {
            skipped.push(path);
        } else if is_dir {
            walk(&path, files, skipped)?;
        } else {
            match classify(&path) {
                Some((format, gzip)) => files.push(InputSpec { path, format, gzip }),
                None => skipped.push(path),
            }
        }
    }
    Ok(())
}

/// One cell of a row, before validation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Str(String),
    /// A Parquet timestamp column with a time zone: an instant.
    TsUtcMs(i64),
    /// A Parquet timestamp column without a time zone: a wall-clock time.
    TsLocalMs(i64),
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Str(s) => s.clone(),
            Cell::TsUtcMs(ms) => format_ms(*ms),
            Cell::TsLocalMs(ms) => format_ms(*ms).trim_end_matches('Z').to_string(),
        }
    }
}

/// A row split into named cells.
#[derive(Debug)]
pub(crate) struct Record {
    /// Line in the (decompressed) text file where the row starts; `None` for Parquet.
    pub line: Option<u64>,
    /// 1-based row number within the file (a CSV header is not a row).
    pub row: u64,
    pub cells: Vec<(Arc<str>, Cell)>,
    /// The JSON line as read; CSV and Parquet rows are re-serialised from the cells.
    line_text: Option<String>,
    csv: bool,
}

impl Record {
    /// The record as text, for the quarantine.
    pub fn raw_text(&self) -> String {
        if let Some(t) = &self.line_text {
            return t.clone();
        }
        if self.csv {
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new());
            let fields: Vec<String> = self.cells.iter().map(|(_, c)| c.text()).collect();
            if w.write_record(&fields).is_ok()
                && let Ok(bytes) = w.into_inner()
            {
                return String::from_utf8_lossy(&bytes)
                    .trim_end_matches('\n')
                    .to_string();
            }
        }
        let obj: serde_json::Map<String, serde_json::Value> = self
            .cells
            .iter()
            .map(|(k, c)| (k.to_string(), serde_json::Value::String(c.text())))
            .collect();
        serde_json::Value::Object(obj).to_string()
    }
}

/// What a reader yields.
#[derive(Debug)]
pub(crate) enum Item {
    Record(Record),
    /// A row that could not be split into fields (wrong field count, unparsable JSON, ...).
    Malformed {
        line: Option<u64>,
        row: u64,
        raw: String,
        message: String,
    },
}

/// Reads every row of a file, in file order, into `sink`.
pub(crate) fn read_file(
    spec: &InputSpec,
    sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    match spec.format {
        Format::Csv => read_csv(spec, sink),
        Format::Jsonl => read_jsonl(spec, sink),
        Format::Parquet => read_parquet(spec, sink),
    }
}

fn open_text(spec: &InputSpec) -> Result<Box<dyn Read>, IngestError> {
    let file = File::open(&spec.path).map_err(|e| IngestError::unreadable(&spec.path, None, e))?;
    let buffered = BufReader::with_capacity(256 * 1024, file);
    Ok(if spec.gzip {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    })
}

const REQUIRED: [&str; 4] = [
    schema::EVENT_ID,
    schema::USER_ID,
    schema::EVENT_TYPE,
    schema::TS,
];

fn read_csv(
    spec: &InputSpec,
    sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let path = &spec.path;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(open_text(spec)?);
    // An I/O error (a truncated gzip stream) carries no position: report the line after the
    // last record read.
    let csv_err = |e: csv::Error, last_line: u64| {
        let line = e.position().map(|p| p.line()).unwrap_or(last_line + 1);
        let message = match e.into_kind() {
            csv::ErrorKind::Io(io) => format!("read failed: {io}"),
            other => format!("{other:?}"),
        };
        IngestError::unreadable(path, Some(line), message)
    };
    let mut rec = csv::ByteRecord::new();
    if !rdr.read_byte_record(&mut rec).map_err(|e| csv_err(e, 0))? {
        return Ok(()); // empty file
    }
    let mut header: Vec<Arc<str>> = Vec::with_capacity(rec.len());
    for (i, field) in rec.iter().enumerate() {
        let mut name = std::str::from_utf8(field)
            .map_err(|_| IngestError::unreadable(path, Some(1), "header is not UTF-8 text"))?;
        if i == 0 {
            name = name.trim_start_matches('\u{feff}');
        }
        header.push(Arc::from(name.trim()));
    }
    if !header.iter().any(|h| REQUIRED.contains(&h.as_ref())) {
        let shown: Vec<&str> = header.iter().take(6).map(|h| h.as_ref()).collect();
        return Err(IngestError::unreadable(
            path,
            Some(1),
            format!(
                "not an event export: the header names none of event_id, user_id, event_type, ts (found {shown:?})"
            ),
        ));
    }
    let mut row = 0u64;
    let mut last_line = 1;
    while rdr
        .read_byte_record(&mut rec)
        .map_err(|e| csv_err(e, last_line))?
    {
        row += 1;
        let line = rec.position().map(|p| p.line());
        last_line = line.unwrap_or(last_line);
        if rec.len() != header.len() {
            let fields: Vec<String> = rec
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            sink(Item::Malformed {
                line,
                row,
                raw: fields.join(","),
                message: format!("{} fields where the header has {}", rec.len(), header.len()),
            })?;
            continue;
        }
        let mut cells = Vec::with_capacity(header.len());
        let mut bad_utf8 = None;
        for (name, field) in header.iter().zip(rec.iter()) {
            match std::str::from_utf8(field) {
                Ok(s) => cells.push((name.clone(), Cell::Str(s.to_string()))),
                Err(_) => {
                    bad_utf8 = Some(name.clone());
                    break;
                }
            }
        }
        if let Some(name) = bad_utf8 {
            let fields: Vec<String> = rec
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            sink(Item::Malformed {
                line,
                row,
                raw: fields.join(","),
                message: format!("field {name} is not valid UTF-8"),
            })?;
            continue;
        }
        sink(Item::Record(Record {
            line,
            row,
            cells,
            line_text: None,
            csv: true,
        }))?;
    }
    Ok(())
}

fn read_jsonl(
    spec: &InputSpec,
    sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let path = &spec.path;
    let mut reader = BufReader::with_capacity(256 * 1024, open_text(spec)?);
    let mut keys: HashMap<String, Arc<str>> = HashMap::new();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut row = 0u64;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| {
            IngestError::unreadable(path, Some(line_no + 1), format!("read failed: {e}"))
        })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let mut bytes = &buf[..];
        if line_no == 1 {
            bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        }
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        row += 1;
        let line = Some(line_no);
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                sink(Item::Malformed {
                    line,
                    row,
                    raw: String::from_utf8_lossy(bytes).into_owned(),
                    message: "line is not valid UTF-8".into(),
                })?;
                continue;
            }
        };
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                sink(Item::Malformed {
                    line,
                    row,
                    raw: text.to_string(),
                    message: format!("invalid JSON: {e}"),
                })?;
                continue;
            }
        };
        let serde_json::Value::Object(map) = value else {
            sink(Item::Malformed {
                line,
                row,
                raw: text.to_string(),
                message: "line is JSON but not an object".into(),
            })?;
            continue;
        };
        let mut cells = Vec::with_capacity(map.len());
        for (k, v) in map {
            let cell = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => Cell::Str(s),
                serde_json::Value::Number(n) => Cell::Str(n.to_string()),
                serde_json::Value::Bool(b) => Cell::Str(b.to_string()),
                other => Cell::Str(other.to_string()),
            };
            let key = match keys.get(&k) {
                Some(a) => a.clone(),
                None => {
                    let a: Arc<str> = Arc::from(k.as_str());
                    keys.insert(k, a.clone());
                    a
                }
            };
            cells.push((key, cell));
        }
        sink(Item::Record(Record {
            line,
            row,
            cells,
            line_text: Some(text.to_string()),
            csv: false,
        }))?;
    }
    Ok(())
}

/// How one Parquet column becomes cells.
enum ColumnCells {
    Ts {
        values: Int64Array,
        per_ms: i64,
        utc: bool,
    },
    Float(ArrayRef),
    Text(ArrayRef),
}

fn column_cells(array: &ArrayRef) -> Result<ColumnCells, String> {
    match array.data_type() {
        DataType::Timestamp(unit, tz) => {
            let values =
                arrow::compute::cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
            let per_ms = match unit {
                TimeUnit::Second => -1000,
                TimeUnit::Millisecond => 1,
                TimeUnit::Microsecond => 1000,
                TimeUnit::Nanosecond => 1_000_000,
            };
            Ok(ColumnCells::Ts {
                values: values.as_primitive::<Int64Type>().clone(),
                per_ms,
                utc: tz.is_some(),
            })
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let f = arrow::compute::cast(array, &DataType::Float64).map_err(|e| e.to_string())?;
            Ok(ColumnCells::Float(f))
        }
        DataType::Utf8 => Ok(ColumnCells::Text(array.clone())),
        _ => match arrow::compute::cast(array, &DataType::Utf8) {
            Ok(a) => Ok(ColumnCells::Text(a)),
            // Nested and binary columns: their display text.
            Err(_) => {
                let fmt = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
                    .map_err(|e| e.to_string())?;
                let texts: Vec<Option<String>> = (0..array.len())
                    .map(|i| array.is_valid(i).then(|| fmt.value(i).to_string()))
                    .collect();
                Ok(ColumnCells::Text(Arc::new(
                    arrow::array::StringArray::from(texts),
                )))
            }
        },
    }
}

impl ColumnCells {
    fn cell(&self, i: usize) -> Option<Cell> {
        match self {
            ColumnCells::Ts {
                values,
                per_ms,
                utc,
            } => {
                if values.is_null(i) {
                    return None;
                }
                let v = values.value(i);
                let ms = if *per_ms < 0 {
                    v.saturating_mul(-per_ms)
                } else {
                    v.div_euclid(*per_ms)
                };
                Some(if *utc {
                    Cell::TsUtcMs(ms)
                } else {
                    Cell::TsLocalMs(ms)
                })
            }
            ColumnCells::Float(a) => {
                let a = a.as_primitive::<arrow::datatypes::Float64Type>();
                a.is_valid(i).then(|| Cell::Str(format!("{}", a.value(i))))
            }
            ColumnCells::Text(a) => {
                let a = a.as_string::<i32>();
                a.is_valid(i).then(|| Cell::Str(a.value(i).to_string()))
            }
        }
    }
}

fn read_parquet(
    spec: &InputSpec,
    sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let path = &spec.path;
    let file = File::open(path).map_err(|e| IngestError::unreadable(path, None, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|e| {
            IngestError::unreadable(path, None, format!("not a readable Parquet file: {e}"))
        })?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| {
            IngestError::unreadable(
                path,
                None,
                format!("Parquet read failed after row {row}: {e}"),
            )
        })?;
        let schema = batch.schema();
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            let cells = column_cells(array).map_err(|e| {
                IngestError::unreadable(path, None, format!("column {}: {e}", field.name()))
            })?;
            columns.push((Arc::<str>::from(field.name().as_str()), cells));
        }
        for i in 0..batch.num_rows() {
            row += 1;
            let cells = columns
                .iter()
                .filter_map(|(name, col)| col.cell(i).map(|c| (name.clone(), c)))
                .collect();
            sink(Item::Record(Record {
                line: None,
                row,
                cells,
                line_text: None,
                csv: false,
            }))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension() {
        let c = |p: &str| classify(Path::new(p));
        assert_eq!(c("a/b.csv"), Some((Format::Csv, false)));
        assert_eq!(c("b.CSV.GZ"), Some((Format::Csv, true)));
        assert_eq!(c("b.jsonl.gz"), Some((Format::Jsonl, true)));
        assert_eq!(c("b.ndjson"), Some((Format::Jsonl, false)));
        assert_eq!(c("b.parquet"), Some((Format::Parquet, false)));
        assert_eq!(c("b.parquet.gz"), None);
        assert_eq!(c("b.json"), None);
        assert_eq!(c("b.txt"), None);
        assert_eq!(c("csv"), None);
    }
}
