//! `funnel analyze --engine spark|clickhouse`: the funnel compiled to SQL (`funnel-sql`), run on
//! the cluster (`funnel-remote`), and read back into the embedded engine's report.

use anyhow::{Context, Result};
use funnel_analysis::{AnalyzeOptions, FunnelReport};
use funnel_core::{FunnelSpec, Generation};
use funnel_sql::{Plan, PlanOptions};

use crate::UsageError;
use crate::analyze::{Args, Engine};

pub fn analyze(
    args: &Args,
    store: Option<&Generation>,
    specs: &[FunnelSpec],
    opts: &AnalyzeOptions,
) -> Result<Vec<FunnelReport>> {
    let usage = |m: String| -> anyhow::Error { UsageError(m).into() };
    let engine = match args.engine {
        Engine::Spark => "spark",
        _ => "clickhouse",
    };
    if args.interval.is_some() {
        return Err(usage(format!(
            "--interval is computed by the embedded engine only, not by --engine {engine}"
        )));
    }
    if args.persons_out.is_some() {
        return Err(usage(format!(
            "--persons-out is written by the embedded engine only, not by --engine {engine}"
        )));
    }
    // The store's committed generation (never `current`, which a later ingest may move; the
    // caller's lease keeps it on disk while the cluster reads it), and its latest event as the
    // default cutoff, as the embedded engine takes it.
    let mut store_cutoff = None;
    let source = match (store, &args.path, &args.table) {
        (_, Some(path), _) => path.clone(),
        (_, _, Some(table)) => table.clone(),
        (Some(store), None, None) => {
            let dir = store
                .dir()
                .canonicalize()
                .with_context(|| format!("resolving {}", store.dir().display()))?;
            store_cutoff = store.manifest().max_ts_ms();
            format!("{}/events/*/*.parquet", dir.display())
        }
        (None, None, None) => return Err(usage("--store, --path or --table is required".into())),
    };
    let plan_options = PlanOptions {
        from_ms: opts.from_ms,
        to_ms: opts.to_ms,
        cutoff_ms: opts.cutoff_ms.or(store_cutoff),
        fold_level: false,
    };
    let mut reports = Vec::with_capacity(specs.len());
    for spec in specs {
        let plan = Plan::new(spec, plan_options.clone()).map_err(|e| usage(e.to_string()))?;
        let breakdown = spec.breakdown.len();
        let answer = match args.engine {
            Engine::Spark => {
                let remote = args.spark_remote.as_deref().ok_or_else(|| {
                    usage("--engine spark needs --spark-remote sc://HOST:PORT".into())
                })?;
                let sql = funnel_sql::query(&plan, funnel_sql::Dialect::Spark, &source);
                funnel_remote::spark(remote, &sql, breakdown).map_err(|e| match e {
                    funnel_remote::RemoteError::SparkNotBuilt => usage(e.to_string()),
                    e => e.into(),
                })?
            }
            _ => {
                let url = args.clickhouse_url.as_deref().ok_or_else(|| {
                    usage("--engine clickhouse needs --clickhouse-url http://HOST:8123".into())
                })?;
                let sql = funnel_sql::query(&plan, funnel_sql::Dialect::ClickHouse, &source);
                funnel_remote::clickhouse(url, &sql, breakdown)?
            }
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
