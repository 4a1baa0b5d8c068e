use std::path::PathBuf;

/// Errors in reading the shared on-disk structures.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a funnel store manifest: {source}")]
    BadManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: store format {found:?} version {version} is not supported (expected {expected:?} version {expected_version})"
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: String,
        version: u32,
        expected: &'static str,
        expected_version: u32,
    },
    #[error(
        "{path}: no store here (no `current` generation); run `funnel ingest --store {path}` first"
    )]
    NoStore { path: PathBuf },
    #[error(
        "{path}: the generation it names has no manifest (looked {attempts} times: removed by an ingest each time, or the store is damaged)"
    )]
    GenerationMissing { path: PathBuf, attempts: u64 },
}
