//! `funnel spark-worker read`: the ingest's readers on a worker (protocol in `worker`).

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use funnel_ingest::{ScanFile, ScanRow, scan_file};
use serde_json::{Map, Value, json};

use super::emit;

/// Reads the files requested on standard input (see the module docs of `worker`).
pub fn read() -> Result<()> {
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
