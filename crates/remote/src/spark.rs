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
///
/// Each statement runs as a reattachable execution read to its `ResultComplete`: a server ends
/// a response stream after `spark.connect.execute.reattachable.senderMaxStreamDuration` (2
/// minutes by default) or `...senderMaxStreamSize`, and expects the client to reattach. A
/// client that took that end for the answer's would return a partial answer, or run its next
/// statement while a write is still going (the high-level `apache-spark-connect` crate does),
/// so the loop here reattaches until the server says the result is complete.
pub struct SparkSession {
    remote: String,
    #[cfg(feature = "spark")]
    client: spark_connect_core::SparkConnectClient,
}

impl std::fmt::Debug for SparkSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparkSession")
            .field("remote", &self.remote)
            .finish()
    }
}

/// Reattaches one execution may need before it is given up (each after a stream the server
/// ended, or a dropped connection): at the default two minutes a stream, over a day.
#[cfg(feature = "spark")]
const MAX_REATTACHES: u32 = 1000;

impl SparkSession {
    /// A session on the Spark Connect server at `remote` (`sc://HOST:PORT`).
    #[cfg(feature = "spark")]
    pub fn connect(remote: &str) -> Result<SparkSession, RemoteError> {
        let connect = |e: spark_connect_core::SparkError| RemoteError::Connect {
            engine: ENGINE,
            url: remote.to_string(),
            message: e.to_string(),
        };
        let builder = spark_connect_core::ChannelBuilder::parse(remote).map_err(connect)?;
        let client =
            spark_connect_core::block_on(spark_connect_core::SparkConnectClient::connect(&builder))
                .map_err(connect)?;
        Ok(SparkSession {
            remote: remote.to_string(),
            client,
        })
    }

    /// Without the `spark` feature: always [`RemoteError::SparkNotBuilt`].
    #[cfg(not(feature = "spark"))]
    pub fn connect(_remote: &str) -> Result<SparkSession, RemoteError> {
        Err(RemoteError::SparkNotBuilt)
    }

    /// Runs `sql` to completion: its result, one Arrow IPC stream per batch.
    #[cfg(feature = "spark")]
    fn ipc(&self, sql: &str) -> Result<Vec<prost::bytes::Bytes>, RemoteError> {
        use proto::execute_plan_response::ResponseType;
        use spark_connect_core::{SparkError, block_on};
        use spark_connect_proto as proto;

        let refused = |e: SparkError| RemoteError::Query {
            engine: ENGINE,
            url: self.remote.clone(),
            message: e.to_string(),
        };
        let session_id = self.client.session_id().to_string();
        let request = proto::ExecutePlanRequest {
            session_id: session_id.clone(),
            user_context: Some(proto::UserContext::default()),
            plan: Some(proto::Plan {
                op_type: Some(proto::plan::OpType::Root(proto::Relation {
                    common: None,
                    rel_type: Some(proto::relation::RelType::Sql(proto::Sql {
                        query: sql.to_string(),
                        ..Default::default()
                    })),
                })),
            }),
            request_options: vec![proto::execute_plan_request::RequestOption {
                request_option: Some(
                    proto::execute_plan_request::request_option::RequestOption::ReattachOptions(
                        proto::ReattachOptions { reattachable: true },
                    ),
                ),
            }],
            ..Default::default()
        };
        let mut stream = block_on(self.client.execute_plan(request)).map_err(refused)?;
        let mut batches = Vec::new();
        // The execution's id and the last response read, for reattaching.
        let mut operation: Option<String> = None;
        let mut last: Option<String> = None;
        let mut reattaches = 0;
        loop {
            let ended = match block_on(stream.message()) {
                Ok(Some(response)) => {
                    operation = Some(response.operation_id);
                    last = Some(response.response_id);
                    match response.response_type {
                        Some(ResponseType::ArrowBatch(b)) => batches.push(b.data),
                        Some(ResponseType::ResultComplete(_)) => break,
                        _ => {}
                    }
                    continue;
                }
                // The server ended the stream before the result was complete.
                Ok(None) => None,
                Err(status) => Some(status),
            };
            let Some(operation_id) = operation.clone() else {
                return Err(refused(match ended {
                    Some(status) => SparkError::from_grpc_status(status),
                    None => SparkError::connect_msg("the server ended the answer before it began"),
                }));
            };
            if let Some(status) = ended {
                // A dropped connection, or the server's word that this stream was superseded.
                let retriable = status.code() == tonic::Code::Unavailable
                    || status.message().contains("INVALID_CURSOR.DISCONNECTED");
                if !retriable {
                    return Err(refused(SparkError::from_grpc_status(status)));
                }
            }
            reattaches += 1;
            if reattaches > MAX_REATTACHES {
                return Err(refused(SparkError::connect_msg(format!(
                    "the answer did not complete after {MAX_REATTACHES} reattaches"
                ))));
            }
            let reattach = proto::ReattachExecuteRequest {
                session_id: session_id.clone(),
                user_context: Some(proto::UserContext::default()),
                operation_id,
                last_response_id: last.clone(),
                ..Default::default()
            };
            stream = block_on(self.client.reattach_execute(reattach)).map_err(refused)?;
        }
        if let Some(operation_id) = operation {
            // The server may drop the finished execution's buffers now; it would after a
            // timeout otherwise, so a failure here changes nothing.
            let release = proto::ReleaseExecuteRequest {
                session_id,
                user_context: Some(proto::UserContext::default()),
                operation_id,
                release: Some(proto::release_execute_request::Release::ReleaseAll(
                    proto::release_execute_request::ReleaseAll {},
                )),
                ..Default::default()
            };
            let _ = block_on(self.client.release_execute(release));
        }
        Ok(batches)
    }

    #[cfg(not(feature = "spark"))]
    fn ipc(&self, _sql: &str) -> Result<Vec<Vec<u8>>, RemoteError> {
        Err(RemoteError::SparkNotBuilt)
    }

    /// Runs a statement (a setting, a view, a cache, a write) to completion.
    pub fn execute(&self, sql: &str) -> Result<(), RemoteError> {
        self.ipc(sql).map(drop)
    }

    /// Runs a query; its answer, read with this workspace's arrow (not the client's).
    pub fn batches(&self, sql: &str) -> Result<Vec<RecordBatch>, RemoteError> {
        let mut out = Vec::new();
        for ipc in self.ipc(sql)? {
            out.extend(crate::rows::read_ipc(&ipc, ENGINE)?);
        }
        Ok(out)
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
        let _ = spark_connect_core::block_on(self.client.release_session());
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
