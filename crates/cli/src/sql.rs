//! `funnel sql`: print the query a cluster engine runs for a funnel.

use std::path::PathBuf;

use anyhow::Result;
use funnel_core::load_funnel;
use funnel_sql::{Plan, PlanOptions};

use crate::UsageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    Clickhouse,
    Spark,
}

impl From<Dialect> for funnel_sql::Dialect {
    fn from(d: Dialect) -> Self {
        match d {
            Dialect::Clickhouse => funnel_sql::Dialect::ClickHouse,
            Dialect::Spark => funnel_sql::Dialect::Spark,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum)]
    pub dialect: Dialect,
    /// Funnel definition (TOML).
    #[arg(long, required_unless_present_any = ["rules", "dedup", "read"])]
    pub funnel: Option<PathBuf>,
    /// Print instead the cluster ingest's reading of input files (Spark only): FILES (a table
    /// or view) holds one row per file (`file` INT in sorted path order, `path`, `format`,
    /// `gzip`), read on the workers by `funnel spark-worker read` (see --worker).
    #[arg(long, value_name = "FILES", conflicts_with_all = ["funnel", "fold_level", "dedup", "rules", "source"])]
    pub read: Option<String>,
    /// With --read: the path of the funnel binary on the Spark workers (default: this one's
    /// path, for workers that share its file system).
    #[arg(long, requires = "read")]
    pub worker: Option<PathBuf>,
    /// With --read: how many tasks read the files.
    #[arg(long, requires = "read", default_value_t = 4)]
    pub tasks: usize,
    /// Print instead the cluster ingest's validation of export rows (the row rules of the
    /// contract, Spark only) over SOURCE, whose contract columns are text.
    #[arg(long, conflicts_with_all = ["funnel", "fold_level", "dedup"])]
    pub rules: bool,
    /// Print instead the cluster ingest's deduplication (Spark only) of SOURCE, the output of
    /// the --rules query with `_file` and `_row` columns, against --stored.
    #[arg(long, conflicts_with_all = ["funnel", "fold_level"])]
    pub dedup: bool,
    /// With --dedup: the store's events (a table or a Parquet path); none for an empty store.
    #[arg(long, requires = "dedup")]
    pub stored: Option<String>,
    /// With --dedup: the export's property columns (comma-separated export names).
    #[arg(long, requires = "dedup", value_delimiter = ',')]
    pub properties: Vec<String>,
    /// With --dedup: the store's property columns (comma-separated).
    #[arg(long, requires = "dedup", value_delimiter = ',')]
    pub stored_properties: Vec<String>,
    /// With --rules: the zone of timestamps without an offset.
    #[arg(long, default_value = funnel_core::time::DEFAULT_TIMEZONE, requires = "rules")]
    pub timezone: String,
    /// Table name (`db.table`) or Parquet path/glob with the store's columns.
    #[arg(long, default_value = "events")]
    pub source: String,
    /// ClickHouse: compute the level with arrayFold instead of windowFunnel (as beyond 32 steps).
    #[arg(long)]
    pub fold_level: bool,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(files) = &args.read {
        if args.dialect != Dialect::Spark {
            return Err(UsageError("--read: the cluster ingest runs on Spark only".into()).into());
        }
        let worker = crate::worker::worker_path(args.worker.as_deref())?;
        let source = funnel_sql::Dialect::Spark.source(files);
        out!("{}", funnel_sql::read_query(&source, &worker, args.tasks));
        return Ok(());
    }
    if args.rules {
        if args.dialect != Dialect::Spark {
            return Err(UsageError("--rules: the cluster ingest runs on Spark only".into()).into());
        }
        let tz = funnel_core::time::parse_timezone(&args.timezone)
            .map_err(|e| UsageError(format!("--timezone {}: {e}", args.timezone)))?;
        let source = funnel_sql::Dialect::Spark.source(&args.source);
        out!("{}", funnel_sql::rules_query(&source, tz.name()));
        return Ok(());
    }
    if args.dedup {
        if args.dialect != Dialect::Spark {
            return Err(UsageError("--dedup: the cluster ingest runs on Spark only".into()).into());
        }
        let d = funnel_sql::Dialect::Spark;
        let properties: Vec<(String, String)> = args
            .properties
            .iter()
            .map(|p| (p.clone(), funnel_core::schema::store_column_name(p)))
            .collect();
        let stored = args.stored.as_deref().map(|s| d.source(s));
        out!(
            "{}",
            funnel_sql::dedup_query(
                &d.source(&args.source),
                stored.as_deref(),
                &properties,
                &args.stored_properties
            )
        );
        return Ok(());
    }
    let funnel = args
        .funnel
        .as_deref()
        .expect("clap requires --funnel without --rules or --dedup");
    let spec = load_funnel(funnel)?;
    let options = PlanOptions {
        fold_level: args.fold_level,
        ..PlanOptions::default()
    };
    let plan = Plan::new(&spec, options).map_err(|e| UsageError(e.to_string()))?;
    out!(
        "{}",
        funnel_sql::query(&plan, args.dialect.into(), &args.source)
    );
    Ok(())
}
