//! Runs compiled funnel queries (`funnel-sql`) on cluster engines and reads the per-group level
//! counts back as [`funnel_core::LevelCount`] rows.
//!
//! - [`clickhouse`]: over ClickHouse's HTTP interface, results as `ArrowStream` (JSON lines
//!   where the server lacks that format).
//! - [`spark`]: over Spark Connect (gRPC), results as Arrow; only with the `spark` feature.

mod clickhouse;
mod error;
mod rows;
mod spark;

pub use clickhouse::clickhouse;
pub use error::RemoteError;
pub use rows::Answer;
pub use spark::{SPARK_AVAILABLE, SparkSession, spark, spark_execute};
