//! The ingest's readers for another engine: the input files of a run, and every row of a file
//! as named text cells or as a read rejection.
//!
//! A cluster ingest runs this on its workers (`funnel spark-worker read`), so that it finds the
//! same files and reads them exactly as the embedded ingest does: the same records, line and
//! row numbers, raw text, size limits and read rejections (`malformed_record`,
//! `record_too_large`, `value_too_large`, `nested_value`). Validation is not done here: the
//! row rules come after, from [`funnel_core::rules::ROW_RULES`].

use std::path::{Path, PathBuf};

use crate::IngestError;
use crate::limits::{QUARANTINE_TEXT_BYTES, cut};
use crate::read::{Cell, Column, Format, InputSpec, Item, Role, Skipped, discover, read_file};

/// One input file of a run, in sorted path order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanFile {
    pub path: PathBuf,
    /// `csv`, `jsonl` or `parquet`.
    pub format: &'static str,
    pub gzip: bool,
}

impl ScanFile {
    /// A file of the format named `format` (`csv`, `jsonl` or `parquet`), or `None`.
    pub fn new(path: PathBuf, format: &str, gzip: bool) -> Option<ScanFile> {
        let format = Format::from_name(format)?.name();
        Some(ScanFile { path, format, gzip })
    }
}

/// The files an ingest of `inputs` into `store` reads (the embedded ingest's discovery: sorted
/// path order, each file once, stores never read), and what it passes over.
pub fn scan_inputs(
    inputs: &[PathBuf],
    store: &Path,
) -> Result<(Vec<ScanFile>, Vec<Skipped>), IngestError> {
    let found = discover(inputs, store)?;
    let files = found
        .files
        .into_iter()
        .map(|f| ScanFile {
            path: f.path,
            format: f.format.name(),
            gzip: f.gzip,
        })
        .collect();
    Ok((files, found.skipped))
}

/// One row of a file as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanRow<'a> {
    /// A row split into named cells, in column order, as text the way the embedded ingest
    /// reads them: a timestamp-typed Parquet cell is its epoch milliseconds (the row rules'
    /// epoch form), except a wall-clock `ts` of years 1..9999, which is its text without an
    /// offset (read in the ingest's zone, as the embedded ingest reads it).
    Record {
        line: Option<u64>,
        row: u64,
        cells: Vec<(&'a str, String)>,
        /// The row's text for the quarantine, as the embedded ingest writes it (cut to
        /// [`crate::QUARANTINE_TEXT_BYTES`], as the quarantine keeps it).
        raw: String,
    },
    /// A row the reader rejects before validation.
    Rejected {
        line: Option<u64>,
        row: u64,
        reason: &'static str,
        field: Option<String>,
        value: Option<String>,
        message: String,
        raw: String,
    },
}

/// What [`scan_file`] found in a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    pub bytes: u64,
    pub sha256: String,
    pub rows: u64,
}

/// Reads every row of `file` in file order into `sink`. A file that cannot be read as a whole
/// (unreadable, truncated gzip, not Parquet, not an export's header) is an error, as it stops
/// an embedded run; the rows before it have been given to `sink`.
pub fn scan_file(
    file: &ScanFile,
    sink: &mut dyn FnMut(ScanRow<'_>) -> Result<(), IngestError>,
) -> Result<ScanSummary, IngestError> {
    let (bytes, sha256) = crate::run::hash_file(&file.path)?;
    let spec = InputSpec {
        path: file.path.clone(),
        format: Format::from_name(file.format).expect("a ScanFile names a format"),
        gzip: file.gzip,
    };
    let mut rows = 0u64;
    read_file(&spec, &mut |item| {
        rows += 1;
        sink(match item {
            Item::Record(rec) => ScanRow::Record {
                line: rec.line,
                row: rec.row,
                raw: cut(&rec.raw_text(), QUARANTINE_TEXT_BYTES),
                cells: rec
                    .cells
                    .iter()
                    .map(|(col, cell)| (&*col.name, cell_text(col, cell)))
                    .collect(),
            },
            Item::Rejected(r) => ScanRow::Rejected {
                line: r.line,
                row: r.row,
                reason: r.reason.as_str(),
                field: r.field,
                value: r.value,
                message: r.message,
                raw: r.raw,
            },
        })
    })?;
    Ok(ScanSummary {
        bytes,
        sha256,
        rows,
    })
}

/// A cell as the row rules read it (see [`ScanRow::Record`]).
fn cell_text(col: &Column, cell: &Cell<'_>) -> String {
    if col.role == Role::Ts {
        cell.ts_text()
    } else {
        cell.value_text().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(path: &Path) -> Vec<String> {
        let (files, _) = scan_inputs(&[path.to_path_buf()], Path::new("/nonexistent-store"))
            .expect("discovered");
        let mut out = Vec::new();
        for f in &files {
            scan_file(f, &mut |row| {
                out.push(format!("{row:?}"));
                Ok(())
            })
            .expect("read");
        }
        out
    }

    #[test]
    fn a_csv_file_reads_as_cells_and_rejections_with_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.csv");
        std::fs::write(
            &path,
            "event_id,user_id,event_type,ts,note\n\
             e1,u1,click,2021-09-17T10:00:00Z,\"two\nlines\"\n\
             e2,u1,\"click\"x,2021-09-17T10:00:00Z,\n",
        )
        .expect("write");
        let rows = rows_of(&path);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows[0].contains("line: Some(2), row: 1"), "{}", rows[0]);
        assert!(
            rows[0].contains("(\"note\", \"two\\nlines\")"),
            "{}",
            rows[0]
        );
        assert!(rows[1].contains("malformed_record"), "{}", rows[1]);
        assert!(rows[1].contains("line: Some(4), row: 2"), "{}", rows[1]);
    }
}
