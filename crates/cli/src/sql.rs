//! `funnel sql`: print the query a cluster engine runs for a funnel.

use std::path::PathBuf;

use anyhow::Result;
use funnel_core::load_funnel;

use crate::UsageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    Clickhouse,
    Spark,
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
}

pub fn run(args: Args) -> Result<()> {
    let spec = load_funnel(&args.funnel)?;
    let sql = match args.dialect {
        Dialect::Clickhouse => {
            funnel_sql::clickhouse(&spec, &args.source).map_err(|e| UsageError(e.to_string()))?
        }
        Dialect::Spark => {
            return Err(UsageError(
                "the spark dialect is not implemented yet (issue 6); use --dialect clickhouse"
                    .into(),
            )
            .into());
        }
    };
    out!("{sql}");
    Ok(())
}
