/// Errors of the analysis side.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Store(#[from] funnel_core::CoreError),
    #[error(transparent)]
    Spec(#[from] funnel_core::SpecError),
    #[error("invalid {option} {value:?}")]
    Option { option: &'static str, value: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A column of a store file the engine cannot read as the store format says.
    #[error("{path}: column {message}")]
    Column { path: String, message: String },
    #[error("query on {store}: {source}")]
    Polars {
        store: String,
        #[source]
        source: polars::error::PolarsError,
    },
}
