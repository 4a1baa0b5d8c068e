//! Finding input files and reading their rows, one file per format.
//!
//! Readers do not validate values: they turn each physical row into named cells, or into a
//! rejection when the row cannot be split into fields, is over a size limit ([`crate::limits`])
//! or holds a nested value in a contract column. Whole-file failures (unreadable file, truncated
//! gzip, not Parquet, a CSV header that is not an event export) stop the run.

mod csv;
mod discover;
mod jsonl;
mod parquet;

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read};
use std::sync::Arc;

use funnel_core::time::{check_range, format_ms};
use funnel_core::{RejectReason, schema};

use crate::IngestError;
use crate::limits::{MAX_FIELD_BYTES, QUARANTINE_TEXT_BYTES, cut};

pub use discover::Skipped;
pub(crate) use discover::{Discovered, Format, InputSpec, discover};

/// What a column of an export is to the ingest: one of the contract columns, or a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    EventId,
    UserId,
    EventType,
    Ts,
    Platform,
    Journey,
    ChatType,
    WarningAction,
    AccountId,
    OrderId,
    Amount,
    Currency,
    Property,
}

/// A named column of an input file, its role resolved once (per CSV header, per JSON key, per
/// Parquet column) rather than per row.
#[derive(Debug)]
pub(crate) struct Column {
    pub name: Arc<str>,
    pub role: Role,
    /// The column's store name when it is a property ([`schema::store_column_name`]).
    pub store_name: Box<str>,
}

impl Column {
    pub fn new(name: &str) -> Column {
        let role = match name {
            schema::EVENT_ID => Role::EventId,
            schema::USER_ID => Role::UserId,
            schema::EVENT_TYPE => Role::EventType,
            schema::TS => Role::Ts,
            schema::PLATFORM => Role::Platform,
            schema::JOURNEY => Role::Journey,
            schema::CHAT_TYPE => Role::ChatType,
            schema::WARNING_ACTION => Role::WarningAction,
            schema::ACCOUNT_ID => Role::AccountId,
            schema::ORDER_ID => Role::OrderId,
            schema::AMOUNT => Role::Amount,
            schema::CURRENCY => Role::Currency,
            _ => Role::Property,
        };
        let store_name = match role {
            Role::Property => schema::store_column_name(name).into_boxed_str(),
            _ => Box::from(""),
        };
        Column {
            name: Arc::from(name),
            role,
            store_name,
        }
    }

    /// A contract column (a nested value there rejects the row).
    pub fn is_contract(&self) -> bool {
        self.role != Role::Property
    }
}

/// One cell of a row, before validation; text is borrowed from the reader's buffer where it can
/// be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Str(Cow<'a, str>),
    /// A Parquet timestamp column with a time zone: an instant.
    TsUtcMs(i64),
    /// A Parquet timestamp column without a time zone: a wall-clock time.
    TsLocalMs(i64),
}

impl Cell<'_> {
    /// The cell as a value: a timestamp-typed one is its epoch milliseconds.
    pub(crate) fn value_text(&self) -> Cow<'_, str> {
        match self {
            Cell::Str(s) => Cow::Borrowed(s.as_ref()),
            Cell::TsUtcMs(ms) | Cell::TsLocalMs(ms) => Cow::Owned(ms.to_string()),
        }
    }

    /// The cell as a `ts`: how a rejection quotes it, and text the timestamp grammar reads
    /// back to the same outcome. A wall clock of years 1..9999 is its text without an
    /// offset; any other typed cell its epoch milliseconds.
    pub(crate) fn ts_text(&self) -> String {
        match self {
            Cell::TsLocalMs(ms) if check_range(*ms).is_ok() => self.text(),
            _ => self.value_text().into_owned(),
        }
    }

    pub(crate) fn text(&self) -> String {
        match self {
            Cell::Str(s) => s.to_string(),
            Cell::TsUtcMs(ms) => format_ms(*ms),
            Cell::TsLocalMs(ms) => format_ms(*ms).trim_end_matches('Z').to_string(),
        }
    }
}

/// A row split into cells of named columns.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    /// Line in the (decompressed) text file where the row starts; `None` for Parquet.
    pub line: Option<u64>,
    /// 1-based row number within the file (a CSV header is not a row).
    pub row: u64,
    pub cells: Vec<(&'a Column, Cell<'a>)>,
    /// The JSON line as read; CSV and Parquet rows are re-serialised from the cells.
    line_text: Option<&'a str>,
    csv: bool,
}

impl<'a> Record<'a> {
    /// The record as text, for the quarantine.
    pub fn raw_text(&self) -> String {
        if let Some(t) = self.line_text {
            return t.to_string();
        }
        if self.csv {
            let mut w = ::csv::WriterBuilder::new()
                .terminator(::csv::Terminator::Any(b'\n'))
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
            .map(|(k, c)| (k.name.to_string(), serde_json::Value::String(c.text())))
            .collect();
        serde_json::Value::Object(obj).to_string()
    }

    /// The record as an item: rejected as `value_too_large` when a cell is longer than
    /// [`MAX_FIELD_BYTES`] (the first such cell is named), as itself otherwise.
    fn check_sizes(self) -> Item<'a> {
        let Some((col, cell)) = self
            .cells
            .iter()
            .find(|(_, c)| matches!(c, Cell::Str(s) if s.len() > MAX_FIELD_BYTES))
        else {
            return Item::Record(self);
        };
        let Cell::Str(value) = cell else {
            unreachable!("matched a string cell")
        };
        let name = &col.name;
        Item::Rejected(ReadRejection {
            line: self.line,
            row: self.row,
            reason: RejectReason::ValueTooLarge,
            field: Some(name.to_string()),
            value: Some(cut(value, QUARANTINE_TEXT_BYTES)),
            message: format!(
                "field {name} holds {} bytes, over the limit of {MAX_FIELD_BYTES}",
                value.len()
            ),
            raw: cut(&self.raw_text(), QUARANTINE_TEXT_BYTES),
        })
    }
}

/// A row the reader rejects before validation.
#[derive(Debug)]
pub(crate) struct ReadRejection {
    pub line: Option<u64>,
    pub row: u64,
    pub reason: RejectReason,
    pub field: Option<String>,
    pub value: Option<String>,
    pub message: String,
    /// The row's text as read (cut to [`QUARANTINE_TEXT_BYTES`]).
    pub raw: String,
}

/// What a reader yields.
#[derive(Debug)]
pub(crate) enum Item<'a> {
    Record(Record<'a>),
    Rejected(ReadRejection),
}

/// Reads every row of a file, in file order, into `sink`.
pub(crate) fn read_file(
    spec: &InputSpec,
    sink: &mut dyn FnMut(Item<'_>) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    match spec.format {
        Format::Csv => csv::read(spec, sink),
        Format::Jsonl => jsonl::read(spec, sink),
        Format::Parquet => parquet::read(spec, sink),
    }
}

fn open_text(spec: &InputSpec) -> Result<Box<dyn Read + Send>, IngestError> {
    let file = File::open(&spec.path).map_err(|e| IngestError::unreadable(&spec.path, None, e))?;
    let buffered = BufReader::with_capacity(256 * 1024, file);
    Ok(if spec.gzip {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    })
}
