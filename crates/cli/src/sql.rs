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
    #[arg(long)]
    pub funnel: PathBuf,
    /// Table name (`db.table`) or Parquet path/glob with the store's columns.
    #[arg(long, default_value = "events")]
    pub source: String,
    /// ClickHouse: compute the level with arrayFold instead of windowFunnel (as beyond 32 steps).
    #[arg(long)]
    pub fold_level: bool,
}

pub fn run(args: Args) -> Result<()> {
    let spec = load_funnel(&args.funnel)?;
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
