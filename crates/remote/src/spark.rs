//! Spark over Spark Connect (only with the `spark` feature).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;

use crate::RemoteError;
use crate::rows::Answer;

/// Whether this build has the Spark Connect client.
pub const SPARK_AVAILABLE: bool = cfg!(feature = "spark");

const ENGINE: &str = "spark";

/// One Spark Connect session: the statements run in it share its settings and its temporary
/// and cached tables. Dropping it ends the session on the server, which otherwise keeps it (and
/// what it holds: plans, cached tables) in the driver's memory until an idle timeout; many runs
/// against a shared cluster would fill its heap.
pub struct SparkSession {
    remote: String,
    #[cfg(feature = "spark")]
    inner: spark_connect::SparkSession,
}

impl std::fmt::Debug for SparkSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparkSession")
            .field("remote", &self.remote)
            .finish()
    }
}

impl SparkSession {
    /// A session on the Spark Connect server at `remote` (`sc://HOST:PORT`).
    #[cfg(feature = "spark")]
    pub fn connect(remote: &str) -> Result<SparkSession, RemoteError> {
        let inner = spark_connect::SparkSession::builder()
            .remote(remote)
            .get_or_create()
            .map_err(|e| RemoteError::Connect {
                engine: ENGINE,
                url: remote.to_string(),
                message: e.to_string(),
            })?;
        Ok(SparkSession {
            remote: remote.to_string(),
            inner,
        })
    }

    /// Without the `spark` feature: always [`RemoteError::SparkNotBuilt`].
    #[cfg(not(feature = "spark"))]
    pub fn connect(_remote: &str) -> Result<SparkSession, RemoteError> {
        Err(RemoteError::SparkNotBuilt)
    }

    /// Runs `sql` to completion: its result as an Arrow IPC stream.
    #[cfg(feature = "spark")]
    fn ipc(&self, sql: &str) -> Result<Vec<u8>, RemoteError> {
        let refused = |e: spark_connect::SparkError| RemoteError::Query {
            engine: ENGINE,
            url: self.remote.clone(),
            message: e.to_string(),
        };
        self.inner
            .sql(sql)
            .map_err(refused)?
            .to_arrow()
            .map_err(refused)
    }

    #[cfg(not(feature = "spark"))]
    fn ipc(&self, _sql: &str) -> Result<Vec<u8>, RemoteError> {
        Err(RemoteError::SparkNotBuilt)
    }

    /// Runs a statement (a setting, a view, a cache, a write) to completion.
    pub fn execute(&self, sql: &str) -> Result<(), RemoteError> {
        self.ipc(sql).map(drop)
    }

    /// Runs a query; its answer, read with this workspace's arrow (not the client's).
    pub fn batches(&self, sql: &str) -> Result<Vec<RecordBatch>, RemoteError> {
        crate::rows::read_ipc(&self.ipc(sql)?, ENGINE)
    }

    /// Runs a query whose answer is one text column without nulls (JSON lines, say): its
    /// values, in the answer's order.
    pub fn strings(&self, sql: &str) -> Result<Vec<String>, RemoteError> {
        let mut out = Vec::new();
        for batch in self.batches(sql)? {
            let column = batch.column(0);
            let bad = |what: String| RemoteError::Answer {
                engine: ENGINE,
                message: format!("{what} where text was asked for: {sql}"),
            };
            if column.null_count() > 0 {
                return Err(bad("a null".into()));
            }
            if let Some(c) = column.as_string_opt::<i32>() {
                out.extend(c.iter().flatten().map(str::to_string));
            } else if let Some(c) = column.as_string_opt::<i64>() {
                out.extend(c.iter().flatten().map(str::to_string));
            } else if let Some(c) = column.as_string_view_opt() {
                out.extend(c.iter().flatten().map(str::to_string));
            } else {
                return Err(bad(format!("a {} column", column.data_type())));
            }
        }
        Ok(out)
    }

    /// Runs a query whose answer is one row with one integer column.
    pub fn count(&self, sql: &str) -> Result<u64, RemoteError> {
        let batches = self.batches(sql)?;
        let bad = |what: &str| RemoteError::Answer {
            engine: ENGINE,
            message: format!("{what} for a count: {sql}"),
        };
        let batch = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| bad("no row"))?;
        let column = batch.column(0);
        let value = match column.data_type() {
            arrow::datatypes::DataType::Int64 => column.as_primitive::<Int64Type>().value(0),
            other => return Err(bad(&format!("a {other} column"))),
        };
        if column.is_null(0) || value < 0 {
            return Err(bad("a null or negative value"));
        }
        Ok(value as u64)
    }
}

#[cfg(feature = "spark")]
impl Drop for SparkSession {
    fn drop(&mut self) {
        // The answers are already read, so a failure here changes nothing the caller asked for.
        let _ = self.inner.stop();
    }
}

/// Runs `sql` (a `funnel-sql` Spark query with `breakdown` key columns) on the Spark Connect
/// server at `remote` (`sc://HOST:PORT`).
pub fn spark(remote: &str, sql: &str, breakdown: usize) -> Result<Answer, RemoteError> {
    let session = SparkSession::connect(remote)?;
    crate::rows::from_batches(&session.batches(sql)?, breakdown, ENGINE)
}

/// Runs `statements` in order in one Spark Connect session at `remote` (settings, temporary
/// views and the command that uses them), each to completion.
pub fn spark_execute(remote: &str, statements: &[String]) -> Result<(), RemoteError> {
    let session = SparkSession::connect(remote)?;
    statements.iter().try_for_each(|sql| session.execute(sql))
}
