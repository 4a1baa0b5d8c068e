//! `funnel analyze`

use std::path::PathBuf;

use anyhow::{Context, Result};
use funnel_analysis::{AnalyzeOptions, Interval};
use funnel_core::{Generation, StoreLayout, load_funnel, time};

use crate::UsageError;
use crate::cluster::{self, EngineArgs, Source};
use crate::export::{Format, render};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IntervalArg {
    Day,
    Week,
    Month,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Store directory (written by `funnel ingest`). With a cluster engine, the store must be
    /// readable by the cluster under the same path.
    #[arg(long, required_unless_present_any = ["path", "table"])]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Cluster engines: Parquet files (path or glob the cluster can read) with the store's
    /// columns, instead of --store.
    #[arg(long, conflicts_with_all = ["store", "table"])]
    pub path: Option<String>,
    /// Cluster engines: a table (`db.table`) with the store's columns, instead of --store.
    #[arg(long, conflicts_with_all = ["store", "path"])]
    pub table: Option<String>,
    /// Funnel definition (TOML); repeat to compute several funnels in one pass over the store.
    #[arg(long = "funnel", required = true)]
    pub funnels: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Keep the N breakdown values with the most step-1 persons and group the rest as
    /// "(other)" (overrides `top` in the funnel files) [default for table and markdown: 20;
    /// json and csv: every value].
    #[arg(long, value_name = "N")]
    pub top: Option<i64>,
    /// Suppress every group with fewer step-1 persons than this: its numbers are not shown
    /// (null in JSON), totals and "(other)" still count its persons [default: 0, off].
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub min_persons: u64,
    /// Where the dropped went: per step, what the persons whose chain stopped at the step
    /// before did next within the window (their next event's type, or nothing more).
    #[arg(long)]
    pub dropped_next: bool,
    /// With --dropped-next (implied): also the next event's value of COLUMN (e.g.
    /// warning_action).
    #[arg(long, value_name = "COLUMN")]
    pub next_by: Option<String>,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Trends: group by the day, week (ISO, labelled by its Monday) or month of the step-1 event.
    #[arg(long, value_enum)]
    pub interval: Option<IntervalArg>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Write the audit table (one row per person and group: level and the timestamp and event_id
    /// of every step of the reported chain) to this Parquet file.
    #[arg(long)]
    pub persons_out: Option<PathBuf>,
}

/// Which events and chains an analysis sees (shared by analyze, compare and report).
#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// Only step-1 events at or after this time start chains (RFC 3339, or a date in --timezone).
    #[arg(long)]
    pub from: Option<String>,
    /// Only step-1 events before this time start chains.
    #[arg(long)]
    pub to: Option<String>,
    /// Analyse as of this time: later events are ignored, windows still open at it are pending
    /// [default: the latest event in the store].
    #[arg(long)]
    pub cutoff: Option<String>,
    /// Leave out persons whose chain's window had not closed by the cutoff.
    #[arg(long)]
    pub closed_windows_only: bool,
    /// Time zone of calendar periods and of dates given to --from/--to/--cutoff [default: the store's].
    #[arg(long)]
    pub timezone: Option<String>,
}

/// Analysis options from the scope flags (`store`, when given, supplies the default time zone).
pub fn options(
    store: Option<&Generation>,
    args: &ScopeArgs,
    interval: Option<IntervalArg>,
    audit: bool,
) -> Result<AnalyzeOptions> {
    let tz_name = match (&args.timezone, store) {
        (Some(t), _) => t.clone(),
        (None, Some(store)) => store.manifest().timezone.clone(),
        (None, None) => "UTC".to_string(),
    };
    let tz = time::parse_timezone(&tz_name)
        .map_err(|e| UsageError(format!("invalid --timezone {tz_name:?}: {e}")))?;
    let instant = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_ref()
            .map(|text| {
                time::parse_instant(text, &tz)
                    .map_err(|e| UsageError(format!("invalid {flag} {text:?}: {e}")).into())
            })
            .transpose()
    };
    Ok(AnalyzeOptions {
        cutoff_ms: instant("--cutoff", &args.cutoff)?,
        closed_windows_only: args.closed_windows_only,
        interval: interval.map(|i| match i {
            IntervalArg::Day => Interval::Day,
            IntervalArg::Week => Interval::Week,
            IntervalArg::Month => Interval::Month,
        }),
        from_ms: instant("--from", &args.from)?,
        to_ms: instant("--to", &args.to)?,
        timezone: Some(tz_name),
        audit,
        split_at_ms: None,
        dropped_next: false,
        next_by: None,
    })
}

/// The breakdown values a person reads in a table by default; more go to "(other)".
pub const DEFAULT_TOP: usize = 20;

/// `top` of every funnel with a breakdown: `--top` where given, else the funnel's own, else
/// `default` for funnels broken down by one column.
pub fn apply_top(
    specs: &mut [funnel_core::FunnelSpec],
    top: Option<i64>,
    default: Option<usize>,
) -> Result<()> {
    for spec in specs.iter_mut().filter(|s| !s.breakdown.is_empty()) {
        match top {
            Some(n) => {
                let n = funnel_core::check_top(n, &spec.breakdown).map_err(|m| {
                    UsageError(format!("invalid --top {n} for funnel {:?}: {m}", spec.name))
                })?;
                spec.top = Some(n);
            }
            None if spec.top.is_none() && spec.breakdown.len() == 1 => spec.top = default,
            None => {}
        }
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let mut specs = args
        .funnels
        .iter()
        .map(|p| load_funnel(p))
        .collect::<Result<Vec<_>, _>>()?;
    let default = matches!(args.format, Format::Table | Format::Markdown).then_some(DEFAULT_TOP);
    apply_top(&mut specs, args.top, default)?;
    // One generation, leased, from the options' time zone to the last file read (the cluster
    // engines read the same one).
    let store = args
        .store
        .as_ref()
        .map(|dir| StoreLayout::new(dir).open_existing())
        .transpose()?;
    let mut opts = options(
        store.as_ref(),
        &args.scope,
        args.interval,
        args.persons_out.is_some(),
    )?;
    opts.dropped_next = args.dropped_next || args.next_by.is_some();
    opts.next_by = args.next_by.clone();
    let reports = if args.engine.cluster().is_none() {
        let Some(store) = &store else {
            return Err(UsageError("--engine embedded needs --store".into()).into());
        };
        let analysis = funnel_analysis::analyze(store, &specs, &opts)?;
        if let Some(path) = &args.persons_out {
            funnel_analysis::write_audit(path, &specs, &analysis.audit)?;
        }
        analysis.reports
    } else {
        on_cluster(&args, store.as_ref(), &specs, &opts)?
    };
    let mut reports = reports;
    for r in &mut reports {
        funnel_analysis::suppress(r, args.min_persons);
    }
    let text = render(&reports, args.format);
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => out!("{text}"),
    }
    Ok(())
}

/// `--engine spark|clickhouse`: the flags checked and handed to [`cluster::analyze`].
fn on_cluster(
    args: &Args,
    store: Option<&Generation>,
    specs: &[funnel_core::FunnelSpec],
    opts: &AnalyzeOptions,
) -> Result<Vec<funnel_analysis::FunnelReport>> {
    let usage = |m: String| -> anyhow::Error { UsageError(m).into() };
    let cluster = args.engine.cluster().expect("a cluster engine");
    let source = match (store, &args.path, &args.table) {
        (_, Some(path), _) => Source::Path(path),
        (_, _, Some(table)) => Source::Table(table),
        (Some(store), None, None) => Source::Store(store),
        (None, None, None) => return Err(usage("--store, --path or --table is required".into())),
    };
    let persons_out = args
        .persons_out
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    cluster::analyze(cluster, source, specs, opts, persons_out.as_deref())
}
