use std::path::PathBuf;

use crate::IngestReport;

/// Why an ingest run stopped. Nothing is committed when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A bad option value (exit code 2 in the CLI).
    #[error("invalid {option} {value:?}: {message}")]
    InvalidOption {
        option: &'static str,
        value: String,
        message: String,
    },
    /// An input path that does not exist.
    #[error("{path}: no such file or directory")]
    InputNotFound { path: PathBuf },
    /// An input file whose extension names no supported format.
    #[error(
        "{path}: unsupported file type (expected .csv, .jsonl, .ndjson or .parquet; .csv and .jsonl/.ndjson may end in .gz)"
    )]
    UnsupportedInput { path: PathBuf },
    /// An input named inside a funnel store (the target store or any other): a store is never
    /// input.
    #[error("{path}: is inside the funnel store {store}; a store is never read as input")]
    InsideStore { path: PathBuf, store: PathBuf },
    /// An input file that cannot be read as a whole (I/O error, truncated gzip, not Parquet, ...).
    #[error("{path}{}: {message}", line.map(|l| format!(": line {l}")).unwrap_or_default())]
    UnreadableInput {
        path: PathBuf,
        line: Option<u64>,
        message: String,
    },
    /// The rejected share of the run is above `--max-reject-rate`.
    #[error(
        "rejected {rejected} of {read} rows ({rate:.4}), above --max-reject-rate {max}; nothing was committed; this run's quarantine is in {quarantine}",
        rejected = report.run.counts.rows_rejected,
        read = report.run.counts.rows_read,
        rate = report.rejected_share(),
        quarantine = report.quarantine_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    RejectRateExceeded { max: f64, report: Box<IngestReport> },
    /// Another ingest held the store's lock for longer than `--lock-timeout` (exit code 5 in
    /// the CLI).
    #[error(
        "{path}: the store is locked by another ingest run; gave up after {} s (--lock-timeout)",
        timeout.as_secs_f64()
    )]
    LockTimeout {
        path: PathBuf,
        timeout: std::time::Duration,
    },
    /// The store on disk is unreadable or inconsistent.
    #[error("store {path}: {message}")]
    Store { path: PathBuf, message: String },
    /// A file of the store's committed generation is missing, or differs from what the
    /// manifest records, or cannot be read back (exit code 4 in the CLI). An ingest that finds
    /// one commits nothing.
    #[error("{path}: the store is damaged: {problem}")]
    Damaged { path: PathBuf, problem: String },
    #[error(transparent)]
    Core(#[from] funnel_core::CoreError),
    /// Internal: a file reader stopped because the run had already ended with another error.
    /// Never returned by [`crate::ingest`].
    #[error("reading stopped: the run ended early")]
    Cancelled,
}

impl IngestError {
    pub(crate) fn store(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> IngestError {
        IngestError::Store {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn damaged(
        path: impl Into<PathBuf>,
        problem: impl std::fmt::Display,
    ) -> IngestError {
        IngestError::Damaged {
            path: path.into(),
            problem: problem.to_string(),
        }
    }

    pub(crate) fn unreadable(
        path: impl Into<PathBuf>,
        line: Option<u64>,
        message: impl std::fmt::Display,
    ) -> IngestError {
        IngestError::UnreadableInput {
            path: path.into(),
            line,
            // Messages quote what the file holds (a damaged footer's column names, ...).
            message: crate::limits::one_line(&message.to_string()),
        }
    }

    /// True for errors about the input data (exit code 3 in the CLI).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            IngestError::InputNotFound { .. }
                | IngestError::UnsupportedInput { .. }
                | IngestError::InsideStore { .. }
                | IngestError::UnreadableInput { .. }
                | IngestError::RejectRateExceeded { .. }
        )
    }

    /// True when the store itself is damaged (exit code 4 in the CLI).
    pub fn is_damage(&self) -> bool {
        matches!(self, IngestError::Damaged { .. })
    }

    /// True when another ingest held the store's lock for too long (exit code 5 in the CLI).
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, IngestError::LockTimeout { .. })
    }

    /// True for errors in the options given (exit code 2 in the CLI).
    pub fn is_usage_error(&self) -> bool {
        matches!(self, IngestError::InvalidOption { .. })
    }
}
