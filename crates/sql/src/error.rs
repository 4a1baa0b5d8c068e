/// A funnel option no cluster dialect can compute exactly.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("{source_name}: {option} cannot be computed exactly in SQL: {reason}")]
    Unsupported {
        source_name: String,
        option: String,
        reason: String,
    },
}
