//! `funnel inspect`

use std::path::PathBuf;

use anyhow::Result;
use funnel_analysis::{CountRow, StoreSummary, inspect};
use funnel_core::StoreLayout;

use crate::ingest::SummaryFormat;
use crate::table::{percent, render, thousands};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Store directory (written by `funnel ingest`).
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
}

pub fn run(args: Args) -> Result<()> {
    let summary = inspect(&StoreLayout::new(&args.store).open_existing()?)?;
    match args.format {
        SummaryFormat::Json => outln!("{}", serde_json::to_string_pretty(&summary)?),
        SummaryFormat::Table => out!("{}", summary_table(&summary)),
    }
    Ok(())
}

fn count_table(title: &str, label: &str, rows: &[CountRow]) -> String {
    let total: u64 = rows.iter().map(|r| r.events).sum();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.value.clone().unwrap_or_else(|| "(none)".into()),
                thousands(r.events),
                percent(r.events, total),
                thousands(r.persons),
            ]
        })
        .collect();
    format!(
        "\n{title}\n{}",
        render(&[label, ">events", ">share", ">persons"], &body)
    )
}

pub fn summary_table(s: &StoreSummary) -> String {
    let mut out = format!(
        "Store {}: {} events of {} persons, {} .. {} ({} run(s), generation {}, {} buckets)\n",
        s.store,
        thousands(s.events),
        thousands(s.persons),
        s.min_ts.as_deref().unwrap_or("-"),
        s.max_ts.as_deref().unwrap_or("-"),
        s.runs,
        s.generation,
        s.buckets
    );
    let c = &s.ingested;
    out.push_str(&format!(
        "Ingested so far: {} rows read, {} stored, {} duplicates, {} rejected\n",
        thousands(c.rows_read),
        thousands(c.rows_stored),
        thousands(c.rows_duplicate),
        thousands(c.rows_rejected)
    ));
    out.push_str(&count_table(
        "Events by type",
        "event_type",
        &s.by_event_type,
    ));
    out.push_str(&count_table(
        "Clicks by journey",
        "journey",
        &s.clicks_by_journey,
    ));
    out.push_str(&count_table(
        "Clicks by chat surface",
        "chat_type",
        &s.clicks_by_chat_type,
    ));
    out.push_str(&count_table(
        "Warning page by action",
        "warning_action",
        &s.warnings_by_action,
    ));
    out
}
