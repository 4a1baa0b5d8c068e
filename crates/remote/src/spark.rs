//! Spark over Spark Connect (only with the `spark` feature).

use crate::RemoteError;
use crate::rows::Answer;

/// Whether this build has the Spark Connect client.
pub const SPARK_AVAILABLE: bool = cfg!(feature = "spark");

/// Runs `sql` (a `funnel-sql` Spark query with `breakdown` key columns) on the Spark Connect
/// server at `remote` (`sc://HOST:PORT`).
#[cfg(feature = "spark")]
pub fn spark(remote: &str, sql: &str, breakdown: usize) -> Result<Answer, RemoteError> {
    const ENGINE: &str = "spark";
    let session = spark_connect::SparkSession::builder()
        .remote(remote)
        .get_or_create()
        .map_err(|e| RemoteError::Connect {
            engine: ENGINE,
            url: remote.to_string(),
            message: e.to_string(),
        })?;
    let refused = |e: spark_connect::SparkError| RemoteError::Query {
        engine: ENGINE,
        url: remote.to_string(),
        message: e.to_string(),
    };
    // The Arrow IPC stream is read with this workspace's arrow, not the client's.
    let bytes = session
        .sql(sql)
        .map_err(refused)?
        .to_arrow()
        .map_err(refused)?;
    crate::rows::from_batches(&crate::rows::read_ipc(&bytes, ENGINE)?, breakdown, ENGINE)
}

/// Without the `spark` feature: always [`RemoteError::SparkNotBuilt`].
#[cfg(not(feature = "spark"))]
pub fn spark(_remote: &str, _sql: &str, _breakdown: usize) -> Result<Answer, RemoteError> {
    Err(RemoteError::SparkNotBuilt)
}

/// Runs `statements` in order in one Spark Connect session at `remote` (settings, temporary
/// views and the command that uses them), each to completion.
#[cfg(feature = "spark")]
pub fn spark_execute(remote: &str, statements: &[String]) -> Result<(), RemoteError> {
    const ENGINE: &str = "spark";
    let session = spark_connect::SparkSession::builder()
        .remote(remote)
        .get_or_create()
        .map_err(|e| RemoteError::Connect {
            engine: ENGINE,
            url: remote.to_string(),
            message: e.to_string(),
        })?;
    for sql in statements {
        let refused = |e: spark_connect::SparkError| RemoteError::Query {
            engine: ENGINE,
            url: remote.to_string(),
            message: e.to_string(),
        };
        session
            .sql(sql)
            .map_err(refused)?
            .to_arrow()
            .map_err(refused)?;
    }
    Ok(())
}

/// Without the `spark` feature: always [`RemoteError::SparkNotBuilt`].
#[cfg(not(feature = "spark"))]
pub fn spark_execute(_remote: &str, _statements: &[String]) -> Result<(), RemoteError> {
    Err(RemoteError::SparkNotBuilt)
}
