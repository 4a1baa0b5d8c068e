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
        .map_err(refused)
        .and_then(|df| df.to_arrow().map_err(refused));
    release(&session);
    let bytes = bytes?;
    crate::rows::from_batches(&crate::rows::read_ipc(&bytes, ENGINE)?, breakdown, ENGINE)
}

/// Ends the session on the server, which otherwise keeps it (and what it holds: plans,
/// temporary views) in the driver's memory until an idle timeout; many runs against a shared
/// cluster would fill its heap. The answer is already read, so a failure here changes nothing
/// the caller asked for.
#[cfg(feature = "spark")]
fn release(session: &spark_connect::SparkSession) {
    let _ = session.stop();
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
    let refused = |e: spark_connect::SparkError| RemoteError::Query {
        engine: ENGINE,
        url: remote.to_string(),
        message: e.to_string(),
    };
    let done = statements.iter().try_for_each(|sql| {
        session
            .sql(sql)
            .map_err(refused)?
            .to_arrow()
            .map(drop)
            .map_err(refused)
    });
    release(&session);
    done
}

/// Without the `spark` feature: always [`RemoteError::SparkNotBuilt`].
#[cfg(not(feature = "spark"))]
pub fn spark_execute(_remote: &str, _statements: &[String]) -> Result<(), RemoteError> {
    Err(RemoteError::SparkNotBuilt)
}
