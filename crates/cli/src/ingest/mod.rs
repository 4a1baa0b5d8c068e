//! `funnel ingest`: the embedded ingest (`funnel_ingest::ingest`), or the same ingest as Spark
//! jobs (`spark.rs`, `--engine spark`).

mod spark;

pub use spark::UnreadFile;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use funnel_ingest::{IngestError, IngestOptions, IngestReport, Progress, ingest};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::UsageError;
use crate::cluster::Engine;
use crate::table::{percent, render, thousands};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Store directory (created if absent; later runs add to it).
    #[arg(long)]
    pub store: PathBuf,
    /// Time zone for timestamps without an offset (IANA name).
    #[arg(long, default_value = funnel_core::time::DEFAULT_TIMEZONE)]
    pub timezone: String,
    /// Largest share of rejected rows (0..1) for which the run still commits.
    #[arg(long, default_value_t = 1.0)]
    pub max_reject_rate: f64,
    /// Person buckets of a new store (one Parquet file each); an existing store keeps its own.
    /// Default: 64, or more for large inputs (about one bucket per 250,000 rows, estimated
    /// from the input sizes), which keeps ingest memory bounded.
    #[arg(long)]
    pub buckets: Option<u32>,
    /// Target rows of a row group of the bucket files written (row groups end where the
    /// person changes; the analysis works a few row groups at a time, so they bound its memory).
    #[arg(long, default_value_t = funnel_ingest::ROW_GROUP_ROWS)]
    pub row_group_rows: usize,
    /// Seconds to wait for another ingest into the same store to finish (exit code 5 after).
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = seconds)]
    pub lock_timeout: Duration,
    /// Where the ingest runs: this process, or a Spark cluster over Spark Connect
    /// (`--spark-remote`). On Spark, the inputs and the store must be on a file system the
    /// cluster's workers mount under the same paths; the store is the same either way.
    #[arg(long, value_enum, default_value_t = Engine::Embedded)]
    pub engine: Engine,
    /// Spark Connect endpoint for `--engine spark`, e.g. sc://127.0.0.1:15002.
    #[arg(long, value_name = "sc://HOST:PORT")]
    pub spark_remote: Option<String>,
    /// `--engine spark`: the path of this version's `funnel` binary on the workers (default:
    /// this binary's own path, for workers that share its file system).
    #[arg(long, value_name = "PATH")]
    pub spark_worker: Option<PathBuf>,
    /// Summary format: a table for people, or one JSON object.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
    /// Export files or directories (all supported files below them, in sorted path order).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let report = run_quiet(&args)?;
    print_report(&report, args.format);
    Ok(())
}

/// Runs the ingest; on a refused run (reject rate) still prints the summary, then fails.
pub fn run_quiet(args: &Args) -> Result<IngestReport> {
    let opts = IngestOptions {
        store: args.store.clone(),
        timezone: args.timezone.clone(),
        max_reject_rate: args.max_reject_rate,
        buckets: args.buckets,
        row_group_rows: args.row_group_rows,
        lock_timeout: args.lock_timeout,
    };
    let bar = progress_bar();
    let on_progress = |p: Progress<'_>| match (p, &bar) {
        // One line, whether or not a person is watching: the run may wait for minutes.
        (Progress::WaitingForLock { store, timeout }, bar) => {
            let line = format!(
                "waiting for another ingest into {} to finish (up to {} s, --lock-timeout)",
                store.display(),
                timeout.as_secs_f64()
            );
            match bar {
                Some(bar) => bar.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
        (
            Progress::File {
                path, index, total, ..
            },
            Some(bar),
        ) => {
            bar.set_message(format!("file {}/{total}: {}", index + 1, path.display()));
        }
        (Progress::Rows(n), Some(bar)) => bar.set_position(n),
        (Progress::Committing, Some(bar)) => bar.set_message("writing the new store generation"),
        (Progress::Step(done), Some(bar)) => {
            bar.set_message(format!("on the cluster: {done} done"))
        }
        (_, None) => {}
    };
    let result = match args.engine {
        Engine::Embedded => {
            if args.spark_remote.is_some() || args.spark_worker.is_some() {
                return Err(UsageError(
                    "--spark-remote and --spark-worker are for --engine spark".into(),
                )
                .into());
            }
            ingest(&opts, &args.inputs, &on_progress).map_err(anyhow::Error::from)
        }
        Engine::Spark => {
            let Some(remote) = args.spark_remote.as_deref() else {
                return Err(UsageError(
                    "--engine spark needs --spark-remote sc://HOST:PORT".into(),
                )
                .into());
            };
            let worker = crate::worker::worker_path(args.spark_worker.as_deref())?;
            spark::ingest(&opts, &args.inputs, remote, &worker, &on_progress)
        }
        Engine::Clickhouse => {
            return Err(UsageError(
                "ingest --engine clickhouse is not supported: ingest runs embedded or on Spark; \
                 analyze --engine clickhouse reads a table loaded from the store's Parquet files"
                    .into(),
            )
            .into());
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(report) => Ok(report),
        Err(e) => match e.downcast::<IngestError>() {
            Ok(IngestError::RejectRateExceeded { max, report }) => {
                print_report(&report, args.format);
                Err(IngestError::RejectRateExceeded { max, report }.into())
            }
            Ok(e) => Err(e.into()),
            Err(e) => Err(e),
        },
    }
}

/// `--lock-timeout`: a non-negative number of seconds.
fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{text:?} is not a number of seconds (0 or more)"))
}

/// A progress line on stderr, only when a person is watching.
fn progress_bar() -> Option<ProgressBar> {
    if !(std::io::stdout().is_terminal() && std::io::stderr().is_terminal()) {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} rows  {msg}").expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(bar)
}

pub fn report_json(r: &IngestReport) -> serde_json::Value {
    let c = &r.run.counts;
    json!({
        "rows_read": c.rows_read,
        "rows_stored": c.rows_stored,
        "rows_rejected": c.rows_rejected,
        "rows_duplicate": c.rows_duplicate,
        "rejected_by_reason": c.rejected_by_reason,
        "rejected_share": r.rejected_share(),
        "committed": r.committed,
        "store": r.store.display().to_string(),
        "generation": r.generation,
        "run": r.run.run,
        "persons_merged": r.run.persons_merged,
        "min_ts": r.run.min_ts,
        "max_ts": r.run.max_ts,
        "quarantine": r.quarantine_path.as_ref().map(|p| p.display().to_string()),
        "events_in_store": r.events_in_store,
        "persons_in_store": r.persons_in_store,
        "inputs": r.run.inputs,
        "skipped": r.skipped.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
        "skipped_why": r.skipped.iter().map(|s| json!({"path": s.path.display().to_string(), "why": s.why})).collect::<Vec<_>>(),
    })
}

pub fn print_report(r: &IngestReport, format: SummaryFormat) {
    match format {
        SummaryFormat::Json => outln!("{}", report_json(r)),
        SummaryFormat::Table => out!("{}", report_table(r)),
    }
}

pub fn report_table(r: &IngestReport) -> String {
    let c = &r.run.counts;
    let mut out = String::new();
    let verb = if r.committed {
        "Ingested"
    } else {
        "Refused (nothing committed):"
    };
    out.push_str(&format!(
        "{verb} {} file(s) into {} (run {}, generation {})\n",
        r.run.inputs.len(),
        r.store.display(),
        r.run.run,
        r.generation
    ));
    let mut rows = vec![
        vec!["rows read".into(), thousands(c.rows_read), String::new()],
        vec![
            "stored".into(),
            thousands(c.rows_stored),
            percent(c.rows_stored, c.rows_read),
        ],
        vec![
            "duplicates".into(),
            thousands(c.rows_duplicate),
            percent(c.rows_duplicate, c.rows_read),
        ],
        vec![
            "rejected".into(),
            thousands(c.rows_rejected),
            percent(c.rows_rejected, c.rows_read),
        ],
    ];
    for (reason, n) in &c.rejected_by_reason {
        rows.push(vec![format!("  {reason}"), thousands(*n), String::new()]);
    }
    rows.push(vec![
        "persons merged".into(),
        thousands(r.run.persons_merged),
        String::new(),
    ]);
    out.push_str(&render(&["outcome", ">rows", ">share"], &rows));
    if let (Some(a), Some(b)) = (&r.run.min_ts, &r.run.max_ts) {
        out.push_str(&format!("  time range of stored rows: {a} .. {b}\n"));
    }
    out.push_str(&format!(
        "  store now holds {} events of {} persons\n",
        thousands(r.events_in_store),
        thousands(r.persons_in_store)
    ));
    if let Some(q) = &r.quarantine_path {
        out.push_str(&format!("  rejected rows, with reasons: {}\n", q.display()));
    }
    if !r.skipped.is_empty() {
        out.push_str(&format!(
            "  skipped {} path(s), not read:\n",
            r.skipped.len()
        ));
        for s in r.skipped.iter().take(10) {
            out.push_str(&format!("    {} ({})\n", s.path.display(), s.why));
        }
    }
    out
}
