//! `funnel analyze --engine spark|clickhouse`: the funnel compiled to SQL (`funnel-sql`), run on
//! the cluster (`funnel-remote`), and read back into the embedded engine's report.

use anyhow::{Context, Result};
use funnel_analysis::{AnalyzeOptions, FunnelReport};
use funnel_core::{FunnelSpec, Generation};
use funnel_sql::{Dialect, Plan, PlanOptions};

use crate::UsageError;

/// Where a funnel is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// This process, over the store.
    Embedded,
    /// A Spark cluster over Spark Connect (`--spark-remote`).
    Spark,
    /// A ClickHouse server over HTTP (`--clickhouse-url`).
    Clickhouse,
}

/// The engine flags of `analyze` and `report`.
#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    #[arg(long, value_enum, default_value_t = Engine::Embedded)]
    pub engine: Engine,
    /// Spark Connect endpoint for `--engine spark`, e.g. sc://127.0.0.1:15002.
    #[arg(long, value_name = "sc://HOST:PORT")]
    pub spark_remote: Option<String>,
    /// ClickHouse HTTP endpoint for `--engine clickhouse`, e.g. http://127.0.0.1:8123.
    #[arg(long, value_name = "URL")]
    pub clickhouse_url: Option<String>,
}

impl EngineArgs {
    /// The cluster the funnels run on; `None` for the embedded engine.
    pub fn cluster(&self) -> Option<Cluster<'_>> {
        match self.engine {
            Engine::Embedded => None,
            Engine::Spark => Some(Cluster::Spark(self.spark_remote.as_deref())),
            Engine::Clickhouse => Some(Cluster::ClickHouse(self.clickhouse_url.as_deref())),
        }
    }
}

/// A cluster and its endpoint, if given (checked once the funnels are known to compile).
#[derive(Debug, Clone, Copy)]
pub enum Cluster<'a> {
    /// Spark Connect, `sc://HOST:PORT` (`--spark-remote`).
    Spark(Option<&'a str>),
    /// ClickHouse over HTTP, `http://HOST:8123` (`--clickhouse-url`).
    ClickHouse(Option<&'a str>),
}

impl Cluster<'_> {
    pub fn name(self) -> &'static str {
        match self {
            Cluster::Spark(_) => "spark",
            Cluster::ClickHouse(_) => "clickhouse",
        }
    }
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
    persons_out: Option<&str>,
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
            if let Some(c) = &opts.next_by
                && !funnel_core::is_text_column(c, &store.manifest().properties)
            {
                return Err(usage(format!(
                    "invalid --next-by {c:?}: not a text column of the store"
                )));
            }
            format!("{}/events/*/*.parquet", dir.display())
        }
    };
    let plan_options = PlanOptions {
        from_ms: opts.from_ms,
        to_ms: opts.to_ms,
        cutoff_ms: opts.cutoff_ms.or(store_cutoff),
        fold_level: false,
        interval: opts.interval,
        timezone: opts.timezone.clone().unwrap_or_default(),
        split_at_ms: opts.split_at_ms,
        audit: false,
        next_by: opts.dropped_next.then(|| opts.next_by.clone()),
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
    let run = |plan: &Plan<'_>| -> Result<FunnelReport> {
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
        Ok(funnel_analysis::report_from_levels(
            spec,
            &answer.rows,
            &answer.durations,
            &answer.nexts,
            opts,
            cutoff,
        ))
    };
    if persons_out.is_some() && dialect != Dialect::Spark {
        return Err(usage(format!(
            "--persons-out is written by the embedded engine and by --engine spark, not by --engine {}",
            cluster.name()
        )));
    }
    let mut reports = Vec::with_capacity(specs.len());
    let mut kept_values = Vec::with_capacity(specs.len());
    for plan in plans {
        let spec = plan.spec;
        let report = run(&plan)?;
        // `top = N`, as the embedded engine computes it: the first answer ranks the values,
        // a second query folds the others into "(other)".
        let kept = match (spec.top, spec.breakdown.as_slice()) {
            (Some(n), [column]) => funnel_analysis::top_values(&report, column, n),
            _ => None,
        };
        reports.push(match &kept {
            Some(kept) => {
                let mut report = run(&plan.keeping(kept.clone()))?;
                funnel_analysis::other_last(&mut report);
                report
            }
            None => report,
        });
        kept_values.push(kept);
    }
    if let Some(out) = persons_out {
        let audit_options = PlanOptions {
            audit: true,
            ..plan_options.clone()
        };
        let plans = specs
            .iter()
            .zip(kept_values)
            .map(|(spec, kept)| {
                let plan =
                    Plan::new(spec, audit_options.clone()).map_err(|e| usage(e.to_string()))?;
                Ok(match kept {
                    Some(kept) => plan.keeping(kept),
                    None => plan,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        write_audit(
            endpoint,
            &plans,
            &source,
            &audit_dir(out)?,
            opts.closed_windows_only,
        )?;
    }
    Ok(reports)
}

/// The directory Spark writes the audit table to: a URI as given, a local path made absolute
/// (the cluster resolves paths on its own machines). Spark replaces the directory's contents,
/// so a local directory holding anything but an earlier audit table's files is refused.
fn audit_dir(out: &str) -> Result<String> {
    if out.contains("://") {
        return Ok(out.to_string());
    }
    let path = std::path::absolute(out).with_context(|| format!("resolving {out}"))?;
    if path.is_file() {
        return Err(UsageError(format!(
            "--persons-out {out}: with --engine spark the audit table is a directory of Parquet \
             files, and {} is a file",
            path.display()
        ))
        .into());
    }
    if path.is_dir() {
        let foreign = std::fs::read_dir(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|name| {
                !(name.starts_with("part-")
                    || name.starts_with("._")
                    || name.starts_with(".part-")
                    || name == "_SUCCESS")
            });
        if let Some(name) = foreign {
            return Err(UsageError(format!(
                "--persons-out {out}: {} holds {name:?}, which is not part of an audit table; \
                 Spark would replace the directory's contents, so give a new or an earlier \
                 audit directory",
                path.display()
            ))
            .into());
        }
    }
    Ok(path.display().to_string())
}

/// The audit rows of every funnel (`plans`, with the event ids in the fold), written by Spark as
/// Parquet into `dir`: the embedded engine's columns, timestamps in milliseconds, rows ordered
/// by funnel, group and person.
fn write_audit(
    remote: &str,
    plans: &[Plan<'_>],
    source: &str,
    dir: &str,
    closed_only: bool,
) -> Result<()> {
    let steps = plans.iter().map(|p| p.steps()).max().unwrap_or(0);
    let mut statements =
        vec!["SET spark.sql.parquet.outputTimestampType = TIMESTAMP_MILLIS".to_string()];
    let mut views = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let view = format!("funnel_audit_{i}");
        statements.push(format!(
            "CREATE OR REPLACE TEMPORARY VIEW {view} AS {}",
            funnel_sql::audit_query(plan, source, steps, closed_only)
        ));
        views.push(format!("SELECT {i} AS funnel_index, * FROM {view}"));
    }
    let mut columns: Vec<String> = ["funnel", "`group`", "person_id", "level", "window_open"]
        .map(String::from)
        .to_vec();
    for k in 1..=steps {
        columns.push(format!("step_{k}_ts"));
        columns.push(format!("step_{k}_event_id"));
    }
    statements.push(format!(
        "INSERT OVERWRITE DIRECTORY {} USING parquet SELECT {} FROM ({}) AS audit \
         ORDER BY funnel_index, `group`, person_id",
        Dialect::Spark.string(dir),
        columns.join(", "),
        views.join(" UNION ALL ")
    ));
    funnel_remote::spark_execute(remote, &statements).map_err(|e| match e {
        funnel_remote::RemoteError::SparkNotBuilt => UsageError(e.to_string()).into(),
        e => anyhow::Error::from(e),
    })
}
