//! `funnel analyze --engine spark|clickhouse`: the funnel compiled to SQL (`funnel-sql`), run on
//! the cluster (`funnel-remote`), and read back into the embedded engine's report.

use anyhow::{Context, Result};
use funnel_analysis::{AnalyzeOptions, FunnelReport};
use funnel_core::{FunnelSpec, Generation};
use funnel_sql::{Dialect, Plan, PlanOptions};

use crate::UsageError;

/// A cluster and its endpoint, if given (checked once the funnels are known to compile).
#[derive(Debug, Clone, Copy)]
pub enum Cluster<'a> {
    /// Spark Connect, `sc://HOST:PORT` (`--spark-remote`).
    Spark(Option<&'a str>),
    /// ClickHouse over HTTP, `http://HOST:8123` (`--clickhouse-url`).
    ClickHouse(Option<&'a str>),
}

/// What the cluster reads.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The store's committed generation (its lease, held by the caller, keeps it on disk).
    Store(&'a Generation),
    /// Parquet files (a path or glob the cluster can read) with the store's columns.
    Path(&'a str),
    /// A table (`db.table`) with the store's columns.
    Table(&'a str),
}

pub fn analyze(
    cluster: Cluster<'_>,
    source: Source<'_>,
    specs: &[FunnelSpec],
    opts: &AnalyzeOptions,
) -> Result<Vec<FunnelReport>> {
    let usage = |m: String| -> anyhow::Error { UsageError(m).into() };
    // The store's committed generation (never `current`, which a later ingest may move), and
    // its latest event as the default cutoff, as the embedded engine takes it.
    let mut store_cutoff = None;
    let source = match source {
        Source::Path(path) => path.to_string(),
        Source::Table(table) => table.to_string(),
        Source::Store(store) => {
            let dir = store
                .dir()
                .canonicalize()
                .with_context(|| format!("resolving {}", store.dir().display()))?;
            store_cutoff = store.manifest().max_ts_ms();
            format!("{}/events/*/*.parquet", dir.display())
        }
    };
    let plan_options = PlanOptions {
        from_ms: opts.from_ms,
        to_ms: opts.to_ms,
        cutoff_ms: opts.cutoff_ms.or(store_cutoff),
        fold_level: false,
    };
    // Every funnel is checked before the cluster is asked anything.
    let plans = specs
        .iter()
        .map(|spec| Plan::new(spec, plan_options.clone()).map_err(|e| usage(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let (dialect, endpoint) = match cluster {
        Cluster::Spark(Some(remote)) => (Dialect::Spark, remote),
        Cluster::ClickHouse(Some(url)) => (Dialect::ClickHouse, url),
        Cluster::Spark(None) => {
            return Err(usage(
                "--engine spark needs --spark-remote sc://HOST:PORT".into(),
            ));
        }
        Cluster::ClickHouse(None) => {
            return Err(usage(
                "--engine clickhouse needs --clickhouse-url http://HOST:8123".into(),
            ));
        }
    };
    let mut reports = Vec::with_capacity(specs.len());
    for plan in &plans {
        let spec = plan.spec;
        let breakdown = spec.breakdown.len();
        let sql = funnel_sql::query(plan, dialect, &source);
        let answer = match dialect {
            Dialect::Spark => {
                funnel_remote::spark(endpoint, &sql, breakdown).map_err(|e| match e {
                    funnel_remote::RemoteError::SparkNotBuilt => usage(e.to_string()),
                    e => e.into(),
                })?
            }
            Dialect::ClickHouse => funnel_remote::clickhouse(endpoint, &sql, breakdown)?,
        };
        let cutoff = plan_options
            .cutoff_ms
            .or(answer.max_ts_ms)
            .unwrap_or_default();
        reports.push(funnel_analysis::report_from_levels(
            spec,
            &answer.rows,
            opts,
            cutoff,
        ));
    }
    Ok(reports)
}
