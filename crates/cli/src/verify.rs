//! `funnel verify`

use std::path::PathBuf;

use anyhow::Result;
use funnel_core::StoreLayout;
use funnel_ingest::{VerifyReport, verify};
use serde_json::json;

use crate::ingest::SummaryFormat;
use crate::table::{render, thousands};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Store directory (written by `funnel ingest`).
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
}

/// Prints what was checked and every problem; a damaged store is an error (exit code 4).
pub fn run(args: Args) -> Result<()> {
    let store = StoreLayout::new(&args.store).open_existing()?;
    let report = verify(&store);
    match args.format {
        SummaryFormat::Json => outln!("{}", report_json(&report)),
        SummaryFormat::Table => out!("{}", report_table(&report)),
    }
    match report.damage() {
        Some(damage) => Err(damage.into()),
        None => Ok(()),
    }
}

fn report_json(r: &VerifyReport) -> serde_json::Value {
    json!({
        "store": r.store.display().to_string(),
        "generation": r.generation,
        "files": r.files,
        "bytes": r.bytes,
        "files_without_checksum": r.unsummed,
        "sound": r.problems.is_empty(),
        "problems": r.problems.iter().map(|p| json!({
            "file": p.file,
            "path": p.path.display().to_string(),
            "problem": p.problem,
        })).collect::<Vec<_>>(),
    })
}

fn report_table(r: &VerifyReport) -> String {
    let mut out = format!(
        "Store {} (generation {}): {} files, {} bytes recorded",
        r.store.display(),
        r.generation,
        thousands(r.files),
        thousands(r.bytes)
    );
    if r.unsummed > 0 {
        out.push_str(&format!(
            "; {} without a recorded checksum (checked by footer and rows; the next ingest records them)",
            thousands(r.unsummed)
        ));
    }
    if r.problems.is_empty() {
        out.push_str("\n  sound: every file as the manifest records it\n");
    } else {
        out.push_str(&format!(
            "\n  DAMAGED: {} problem(s)\n",
            thousands(r.problems.len() as u64)
        ));
        let rows: Vec<Vec<String>> = r
            .problems
            .iter()
            .map(|p| vec![p.file.clone(), p.problem.clone()])
            .collect();
        out.push_str(&render(&["file", "problem"], &rows));
    }
    out
}
