//! Spark over Spark Connect (only with the `spark` feature).

use crate::RemoteError;
use crate::rows::Answer;

/// Whether this build has the Spark Connect client.
pub const SPARK_AVAILABLE: bool = cfg!(feature = "spark");

/// Runs `sql` (a `funnel-sql` Spark query with `breakdown` key columns) on the Spark Connect
/// server at `remote` (`sc://HOST:PORT`).
#[cfg(feature = "spark")]
pub fn spark(remote: &str, sql: &str, breakdown: usize) -> Result<Answer, RemoteError> {
    let session = connect(remote)?;
    // The Arrow IPC stream is read with this workspace's arrow, not the client's.
    let bytes = run(&session, remote, sql);
    release(&session);
    crate::rows::from_batches(&crate::rows::read_ipc(&bytes?, ENGINE)?, breakdown, ENGINE)
}

#[cfg(feature = "spark")]
const ENGINE: &str = "spark";

/// A Spark Connect session at `remote`.
#[cfg(feature = "spark")]
fn connect(remote: &str) -> Result<spark_connect::SparkSession, RemoteError> {
    spark_connect::SparkSession::builder()
        .remote(remote)
        .get_or_create()
        .map_err(|e| RemoteError::Connect {
            engine: ENGINE,
            url: remote.to_string(),
            message: e.to_string(),
        })
}

/// Runs `sql` in `session` to completion: its result as an Arrow IPC stream.
#[cfg(feature = "spark")]
fn run(
    session: &spark_connect::SparkSession,
    remote: &str,
    sql: &str,
) -> Result<Vec<u8>, RemoteError> {
    let refused = |e: spark_connect::SparkError| RemoteError::Query {
        engine: ENGINE,
        url: remote.to_string(),
        message: e.to_string(),
    };
    session
        .sql(sql)
        .map_err(refused)?
        .to_arrow()
        .map_err(refused)
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
    let session = connect(remote)?;
    let done = statements
        .iter()
        .try_for_each(|sql| run(&session, remote, sql).map(drop));
    release(&session);
    done
}

/// Without the `spark` feature: always [`RemoteError::SparkNotBuilt`].
#[cfg(not(feature = "spark"))]
pub fn spark_execute(_remote: &str, _statements: &[String]) -> Result<(), RemoteError> {
    Err(RemoteError::SparkNotBuilt)
}
