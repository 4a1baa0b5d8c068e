/// A failure to run a query on a cluster engine or to read its answer.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach {engine} at {url:?}: {message}")]
    Connect {
        engine: &'static str,
        url: String,
        message: String,
    },
    #[error("{engine} at {url:?} refused the query: {message}")]
    Query {
        engine: &'static str,
        url: String,
        message: String,
    },
    #[error("unexpected answer from {engine}: {message}")]
    Answer {
        engine: &'static str,
        message: String,
    },
    #[error(
        "this build of funnel has no Spark Connect client; rebuild with `cargo build --features spark` (needs protoc)"
    )]
    SparkNotBuilt,
}
