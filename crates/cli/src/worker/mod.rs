//! `funnel spark-worker` (hidden): what a cluster ingest runs on its workers, through Spark's
//! `TRANSFORM` (JSON lines in, JSON lines out: JSON escapes tabs and line breaks, which is what
//! `TRANSFORM`'s text protocol needs).
//!
//! ## `read`
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
//! `line` is null for Parquet.
//!
//! ## `hash`
//!
//! `{"key": TEXT}` in, `{"key": TEXT, "bucket": B}` out: the store's bucket of a person_id, or
//! partition of an event_id (`funnel_core::bucket_of`, which Spark has no function for).
//!
//! ## The writers: `write-events`, `write-ids`, `write-quarantine`, `write-identity`
//!
//! They write the new generation's files with the embedded ingest's writers
//! (`funnel_ingest::{write_bucket_file, write_id_file, RejectionWriter, LinkWriter}`), and print
//! one JSON object per file written, `{"kind": ..., "file": {...}, "sum": {"bytes": N,
//! "xxh3_128": HEX}}`, for the manifest:
//!
//! - `write-events`: `{"bucket": B, "event": EVENT}` lines (a `funnel_ingest::HandedEvent`),
//!   grouped by bucket; prints `{"kind": "events", "file": EVENT_FILE, "sum": ...}` per bucket;
//! - `write-ids`: `{"partition": P, "event_id": ID, "content_hash": H}` (a stored index row) or
//!   `{"partition": P, "event": EVENT}` (a new event, hashed here) lines, grouped by partition;
//!   prints `{"kind": "ids", "file": ID_FILE, "sum": ...}` per partition;
//! - `write-quarantine --path FILE`: `funnel_ingest::HandedRejection` lines in quarantine
//!   order; prints `{"kind": "quarantine", "sum": ...}` (`sum` null: no row, no file);
//! - `write-identity --path FILE`: `{"id": ID, "person_id": P}` lines in id order; prints
//!   `{"kind": "identity", "sum": ...}`.

mod read;
mod write;

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub task: Task,
}

#[derive(Debug, clap::Subcommand)]
pub enum Task {
    /// Read the files named on standard input, one JSON line per row on standard output.
    Read,
    /// The bucket (of `--buckets`) of each key on standard input.
    Hash {
        #[arg(long)]
        buckets: u32,
    },
    /// Write bucket files of a generation from the events on standard input.
    WriteEvents {
        /// The generation's directory.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        generation: u64,
        /// The store's property columns, as a JSON array of names (sorted).
        #[arg(long)]
        properties: String,
        #[arg(long)]
        row_group_rows: usize,
    },
    /// Write partitions of a generation's event-id index from the rows on standard input.
    WriteIds {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        generation: u64,
    },
    /// Write a run's quarantine file from the rejected rows on standard input.
    WriteQuarantine {
        #[arg(long)]
        path: PathBuf,
    },
    /// Write the identity file from the links on standard input.
    WriteIdentity {
        #[arg(long)]
        path: PathBuf,
    },
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
    match args.task {
        Task::Read => read::read(),
        Task::Hash { buckets } => write::hash(buckets),
        Task::WriteEvents {
            dir,
            generation,
            properties,
            row_group_rows,
        } => {
            let properties: Vec<String> = serde_json::from_str(&properties)
                .map_err(|e| crate::UsageError(format!("--properties {properties:?}: {e}")))?;
            write::events(&dir, generation, &properties, row_group_rows)
        }
        Task::WriteIds { dir, generation } => write::ids(&dir, generation),
        Task::WriteQuarantine { path } => write::quarantine(path),
        Task::WriteIdentity { path } => write::identity(path),
    }
}

/// Each non-empty line of standard input, parsed as `T`.
fn input<T: serde::de::DeserializeOwned>() -> impl Iterator<Item = Result<T>> {
    std::io::stdin()
        .lock()
        .lines()
        .filter(|l| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|line| {
            let line = line.context("reading standard input")?;
            serde_json::from_str(&line).with_context(|| format!("not a request: {line:?}"))
        })
}

fn emit(out: &mut impl Write, item: &Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, item)?;
    out.write_all(b"\n")
}
