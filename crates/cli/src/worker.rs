//! `funnel spark-worker read` (hidden): the ingest's readers on a Spark worker.
//!
//! A cluster ingest pipes its input files through this command with Spark's `TRANSFORM`, so the
//! cluster reads them with the embedded ingest's own readers. Standard input holds one JSON
//! object per file, `{"file": N, "path": "...", "format": "csv", "gzip": false}`; standard
//! output gets one JSON object per row of each file, in file order, then one for the file:
//!
//! - `{"file": N, "kind": "record", "line": L, "row": R, "cells": {NAME: TEXT, ...}, "raw": TEXT}`
//! - `{"file": N, "kind": "rejected", "line": L, "row": R, "reason": ..., "field": ...,
//!   "value": ..., "message": ..., "raw": ...}`
//! - `{"file": N, "kind": "file", "bytes": B, "sha256": HEX, "rows": R}` when the file is read
//!   to its end, or `{"file": N, "kind": "error", "message": ..., "exit": CODE}` when it cannot
//!   be read as a whole (an embedded run stops there with that message and exit code).
//!
//! `line` is null for Parquet. The output has no tab or line break inside an object (JSON
//! escapes them), which is what `TRANSFORM`'s text protocol needs.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use funnel_ingest::{ScanFile, ScanRow, scan_file};
use serde_json::{Map, Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub task: Task,
}

#[derive(Debug, clap::Subcommand)]
pub enum Task {
    /// Read the files named on standard input, one JSON line per row on standard output.
    Read,
}

/// The path of the funnel binary on the workers: `given`, or this process's own executable.
pub fn worker_path(given: Option<&std::path::Path>) -> Result<String> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().context("finding this funnel binary's path")?,
    };
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| crate::UsageError(format!("--worker {}: not UTF-8", path.display())).into())
}

pub fn run(args: Args) -> Result<()> {
    let Task::Read = args.task;
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    for line in stdin.lines() {
        let line = line.context("reading the file list on standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let request: Value =
            serde_json::from_str(&line).with_context(|| format!("not a file request: {line:?}"))?;
        let (Some(file), Some(spec)) = (
            request["file"].as_u64(),
            request["path"]
                .as_str()
                .zip(request["format"].as_str())
                .zip(request["gzip"].as_bool())
                .and_then(|((p, f), g)| ScanFile::new(PathBuf::from(p), f, g)),
        ) else {
            bail!("not a file request: {line:?}");
        };
        // A failed write stops the read (`Cancelled`); the error is reported as itself.
        let mut broken: Option<std::io::Error> = None;
        let mut write_row = |row: ScanRow<'_>| {
            let item = match row {
                ScanRow::Record {
                    line,
                    row,
                    cells,
                    raw,
                } => {
                    let cells: Map<String, Value> = cells
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), Value::String(v)))
                        .collect();
                    json!({"file": file, "kind": "record", "line": line, "row": row,
                           "cells": cells, "raw": raw})
                }
                ScanRow::Rejected {
                    line,
                    row,
                    reason,
                    field,
                    value,
                    message,
                    raw,
                } => json!({"file": file, "kind": "rejected", "line": line, "row": row,
                            "reason": reason, "field": field, "value": value,
                            "message": message, "raw": raw}),
            };
            emit(&mut out, &item).map_err(|e| {
                broken = Some(e);
                funnel_ingest::IngestError::Cancelled
            })
        };
        let result = scan_file(&spec, &mut write_row);
        if let Some(e) = broken {
            return Err(e).context("writing to standard output");
        }
        let end = match result {
            Ok(s) => json!({"file": file, "kind": "file", "bytes": s.bytes,
                            "sha256": s.sha256, "rows": s.rows}),
            Err(e) => {
                let err = anyhow::Error::from(e);
                json!({"file": file, "kind": "error", "message": crate::one_line(&format!("{err:#}")),
                       "exit": crate::exit_code(&err)})
            }
        };
        emit(&mut out, &end).context("writing to standard output")?;
    }
    out.flush().context("writing to standard output")?;
    Ok(())
}

fn emit(out: &mut impl Write, item: &Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, item)?;
    out.write_all(b"\n")
}
