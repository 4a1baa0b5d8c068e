/// Errors of the analysis side.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Store(#[from] funnel_core::CoreError),
    #[error(transparent)]
    Spec(#[from] funnel_core::SpecError),
    #[error("query on {store}: {source}")]
    Polars {
        store: String,
        #[source]
        source: polars::error::PolarsError,
    },
}
