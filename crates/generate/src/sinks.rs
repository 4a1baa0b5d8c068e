//! Export files: CSV, JSON lines (both optionally gzip) and Parquet, written the way the
//! platforms' exporters write them (each with its own timestamp style).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, FixedOffset};
use flate2::write::GzEncoder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::scenario::GenerateError;

/// A timestamp as the exporter writes it.
#[derive(Debug, Clone)]
pub(crate) enum Ts {
    Ms(i64),
    /// A malformed value, written as is.
    Text(String),
}

/// An amount as the exporter writes it.
#[derive(Debug, Clone)]
pub(crate) enum Amount {
    Cents(i64),
    /// A malformed value, written as is (NaN in Parquet).
    Text(String),
}

/// One export row. `None` fields are left empty (CSV), omitted (JSON) or null (Parquet).
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    pub event_id: Option<String>,
    pub user_id: Option<String>,
    pub event_type: Option<String>,
    pub ts: Option<Ts>,
    pub platform: Option<String>,
    pub journey: Option<String>,
    pub chat_type: Option<String>,
    pub warning_action: Option<String>,
    pub account_id: Option<String>,
    pub order_id: Option<String>,
    pub amount: Option<Amount>,
    pub currency: Option<String>,
    pub campaign: Option<String>,
    pub item_id: Option<String>,
}

pub(crate) const COLUMNS: [&str; 14] = [
    "event_id",
    "user_id",
    "event_type",
    "ts",
    "platform",
    "journey",
    "chat_type",
    "warning_action",
    "account_id",
    "order_id",
    "amount",
    "currency",
    "campaign",
    "item_id",
];

impl Row {
    fn strings(&self) -> [Option<&str>; 14] {
        [
            self.event_id.as_deref(),
            self.user_id.as_deref(),
            self.event_type.as_deref(),
            None,
            self.platform.as_deref(),
            self.journey.as_deref(),
            self.chat_type.as_deref(),
            self.warning_action.as_deref(),
            self.account_id.as_deref(),
            self.order_id.as_deref(),
            None,
            self.currency.as_deref(),
            self.campaign.as_deref(),
            self.item_id.as_deref(),
        ]
    }
}

fn amount_text(a: &Amount) -> String {
    match a {
        Amount::Cents(c) => {
            let sign = if *c < 0 { "-" } else { "" };
            format!(
                "{sign}{}.{:02}",
                c.unsigned_abs() / 100,
                c.unsigned_abs() % 100
            )
        }
        Amount::Text(t) => t.clone(),
    }
}

fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// Naive wall-clock time in Asia/Shanghai (what the chat platform's exporter writes): the
/// zone's own offset at that instant, which ingest's default `--timezone` reads back to the same
/// instant (before 1901 it is local mean time, +08:05:43, and 1940-1949 and 1986-1991 had summer
/// time), not a fixed +08:00.
fn local_text(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .expect("generated times are in range")
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

fn rfc3339_utc(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .expect("generated times are in range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn rfc3339_shanghai(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .expect("generated times are in range")
        .with_timezone(&shanghai())
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

pub(crate) enum TextOut {
    Plain(BufWriter<File>),
    Gz(Box<GzEncoder<BufWriter<File>>>),
}

impl Write for TextOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            TextOut::Plain(w) => w.write(buf),
            TextOut::Gz(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            TextOut::Plain(w) => w.flush(),
            TextOut::Gz(w) => w.flush(),
        }
    }
}

impl TextOut {
    fn create(path: &Path, gzip: bool) -> Result<TextOut, GenerateError> {
        let f = BufWriter::with_capacity(
            256 * 1024,
            File::create(path).map_err(|e| GenerateError::io(path, e))?,
        );
        Ok(if gzip {
            TextOut::Gz(Box::new(GzEncoder::new(f, flate2::Compression::new(6))))
        } else {
            TextOut::Plain(f)
        })
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            TextOut::Plain(mut w) => w.flush(),
            TextOut::Gz(w) => w.finish()?.flush(),
        }
    }
}

/// The writer of one export file.
pub(crate) enum Sink {
    Csv {
        path: PathBuf,
        out: TextOut,
        rows: u64,
    },
    Jsonl {
        path: PathBuf,
        out: TextOut,
        rows: u64,
    },
    Parquet {
        path: PathBuf,
        writer: Box<ArrowWriter<File>>,
        pending: Vec<Row>,
        rows: u64,
    },
}

const PARQUET_BATCH: usize = 64 * 1024;

fn parquet_schema() -> SchemaRef {
    let fields: Vec<Field> = COLUMNS
        .iter()
        .map(|c| match *c {
            "ts" => Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            "amount" => Field::new("amount", DataType::Float64, true),
            other => Field::new(other, DataType::Utf8, true),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

impl Sink {
    pub fn csv(path: PathBuf, gzip: bool) -> Result<Sink, GenerateError> {
        let mut out = TextOut::create(&path, gzip)?;
        out.write_all(&csv_bytes(COLUMNS.iter().copied()))
            .map_err(|e| GenerateError::io(&path, e))?;
        Ok(Sink::Csv { path, out, rows: 0 })
    }

    pub fn jsonl(path: PathBuf, gzip: bool) -> Result<Sink, GenerateError> {
        let out = TextOut::create(&path, gzip)?;
        Ok(Sink::Jsonl { path, out, rows: 0 })
    }

    pub fn parquet(path: PathBuf) -> Result<Sink, GenerateError> {
        let file = File::create(&path).map_err(|e| GenerateError::io(&path, e))?;
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(PARQUET_BATCH))
            .set_created_by("funnel generate".into())
            .build();
        let writer = ArrowWriter::try_new(file, parquet_schema(), Some(props))
            .map_err(|e| GenerateError::io(&path, e))?;
        Ok(Sink::Parquet {
            path,
            writer: Box::new(writer),
            pending: Vec::new(),
            rows: 0,
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            Sink::Csv { path, .. } | Sink::Jsonl { path, .. } | Sink::Parquet { path, .. } => path,
        }
    }

    pub fn rows(&self) -> u64 {
        match self {
            Sink::Csv { rows, .. } | Sink::Jsonl { rows, .. } | Sink::Parquet { rows, .. } => *rows,
        }
    }

    pub fn is_text(&self) -> bool {
        !matches!(self, Sink::Parquet { .. })
    }

    /// Writes a row; `variant` (0..) picks the exporter's occasional alternative timestamp style.
    pub fn write(&mut self, row: &Row, variant: u64) -> Result<(), GenerateError> {
        match self {
            Sink::Csv { path, out, rows } => {
                *rows += 1;
                let ts = row.ts.as_ref().map(|t| match t {
                    Ts::Ms(ms) if variant.is_multiple_of(7) => rfc3339_utc(*ms),
                    Ts::Ms(ms) => local_text(*ms),
                    Ts::Text(s) => s.clone(),
                });
                let amount = row.amount.as_ref().map(amount_text);
                let mut fields = row.strings();
                fields[3] = ts.as_deref();
                fields[10] = amount.as_deref();
                out.write_all(&csv_bytes(fields.iter().map(|f| f.unwrap_or(""))))
                    .map_err(|e| GenerateError::io(path, e))
            }
            Sink::Jsonl { path, out, rows } => {
                *rows += 1;
                let line = json_line(row, variant);
                out.write_all(line.as_bytes())
                    .and_then(|_| out.write_all(b"\n"))
                    .map_err(|e| GenerateError::io(path, e))
            }
            Sink::Parquet {
                path,
                writer,
                pending,
                rows,
            } => {
                *rows += 1;
                pending.push(row.clone());
                if pending.len() >= PARQUET_BATCH {
                    flush_parquet(path, writer, pending)?;
                }
                Ok(())
            }
        }
    }

    /// Writes text as a row of its own (a malformed record); `newline = false` leaves the file
    /// ending in the middle of a line, as a truncated export does. Text files only.
    pub fn write_raw(&mut self, text: &str, newline: bool) -> Result<(), GenerateError> {
        let (path, out, rows) = match self {
            Sink::Csv { path, out, rows } | Sink::Jsonl { path, out, rows } => (path, out, rows),
            Sink::Parquet { .. } => unreachable!("raw lines only go to text files"),
        };
        *rows += 1;
        out.write_all(text.as_bytes())
            .and_then(|_| {
                if newline {
                    out.write_all(b"\n")
                } else {
                    Ok(())
                }
            })
            .map_err(|e| GenerateError::io(path, e))
    }

    /// The text a row would have in this file (for building truncated copies).
    pub fn row_text(&self, row: &Row, variant: u64) -> String {
        match self {
            Sink::Jsonl { .. } => json_line(row, variant),
            _ => {
                let ts = row.ts.as_ref().map(|t| match t {
                    Ts::Ms(ms) => local_text(*ms),
                    Ts::Text(s) => s.clone(),
                });
                let amount = row.amount.as_ref().map(amount_text);
                let mut fields = row.strings();
                fields[3] = ts.as_deref();
                fields[10] = amount.as_deref();
                let bytes = csv_bytes(fields.iter().map(|f| f.unwrap_or("")));
                String::from_utf8_lossy(&bytes).trim_end().to_string()
            }
        }
    }

    pub fn finish(self) -> Result<(), GenerateError> {
        match self {
            Sink::Csv { path, out, .. } | Sink::Jsonl { path, out, .. } => {
                out.finish().map_err(|e| GenerateError::io(&path, e))
            }
            Sink::Parquet {
                path,
                mut writer,
                mut pending,
                ..
            } => {
                flush_parquet(&path, &mut writer, &mut pending)?;
                writer.close().map_err(|e| GenerateError::io(&path, e))?;
                Ok(())
            }
        }
    }
}

/// One CSV record (RFC 4180 quoting), newline-terminated.
fn csv_bytes<'a>(fields: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .buffer_capacity(512)
        .from_writer(Vec::new());
    let fields: Vec<&str> = fields.collect();
    w.write_record(&fields)
        .expect("writing to memory cannot fail");
    w.into_inner().expect("writing to memory cannot fail")
}

fn json_line(row: &Row, variant: u64) -> String {
    use serde_json::Value;
    let mut m = serde_json::Map::new();
    let strings = row.strings();
    for (name, v) in COLUMNS.iter().zip(strings) {
        if let Some(v) = v {
            m.insert(name.to_string(), Value::String(v.to_string()));
        }
    }
    if let Some(ts) = &row.ts {
        let v = match ts {
            Ts::Ms(ms) if variant.is_multiple_of(5) => Value::String(rfc3339_shanghai(*ms)),
            Ts::Ms(ms) => Value::from(*ms),
            Ts::Text(s) => Value::String(s.clone()),
        };
        m.insert("ts".into(), v);
    }
    if let Some(a) = &row.amount {
        let v = match a {
            // The shop exports amounts as JSON numbers.
            Amount::Cents(c) => {
                serde_json::Number::from_f64(*c as f64 / 100.0).map_or(Value::Null, Value::Number)
            }
            Amount::Text(t) => Value::String(t.clone()),
        };
        m.insert("amount".into(), v);
    }
    Value::Object(m).to_string()
}

fn flush_parquet(
    path: &Path,
    writer: &mut ArrowWriter<File>,
    pending: &mut Vec<Row>,
) -> Result<(), GenerateError> {
    if pending.is_empty() {
        return Ok(());
    }
    let schema = parquet_schema();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(COLUMNS.len());
    for (i, name) in COLUMNS.iter().enumerate() {
        let col: ArrayRef = match *name {
            "ts" => Arc::new(
                pending
                    .iter()
                    .map(|r| match &r.ts {
                        Some(Ts::Ms(ms)) => Some(*ms),
                        _ => None,
                    })
                    .collect::<TimestampMillisecondArray>()
                    .with_timezone("UTC"),
            ),
            "amount" => Arc::new(
                pending
                    .iter()
                    .map(|r| match &r.amount {
                        Some(Amount::Cents(c)) => Some(*c as f64 / 100.0),
                        Some(Amount::Text(_)) => Some(f64::NAN),
                        None => None,
                    })
                    .collect::<Float64Array>(),
            ),
            _ => Arc::new(
                pending
                    .iter()
                    .map(|r| r.strings()[i])
                    .collect::<StringArray>(),
            ),
        };
        cols.push(col);
    }
    let batch = RecordBatch::try_new(schema, cols).map_err(|e| GenerateError::io(path, e))?;
    writer
        .write(&batch)
        .map_err(|e| GenerateError::io(path, e))?;
    pending.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_text_reads_back_to_the_same_instant() {
        let tz = funnel_core::time::parse_timezone("Asia/Shanghai").unwrap();
        for ms in [
            funnel_core::time::MIN_MS, // 0001-01-01T00:00:00Z: local mean time, +08:05:43
            -2_195_928_000_000,        // 1900-06-01T04:00:00Z
            584_049_600_123,           // 1988-07-04T20:00:00.123Z: summer time, +09:00
            1_631_844_000_123,         // 2021-09-17T02:00:00.123Z
            // 9999-12-31T15:59:59.999Z: the last local time with a four-digit year.
            funnel_core::time::MAX_MS - 8 * 3_600_000,
        ] {
            let text = local_text(ms);
            assert_eq!(funnel_core::time::parse_ts(&text, &tz), Ok(ms), "{text}");
        }
        assert_eq!(local_text(1_631_844_000_123), "2021-09-17 10:00:00.123");
    }
}
