//! Loads event exports into the funnel store.
//!
//! Inputs are CSV, JSON lines and Parquet files (CSV and JSON lines optionally gzip-compressed),
//! or directories of them. Every row read ends up in exactly one place: stored (validated,
//! normalised, stitched to a person), rejected into the quarantine with a reason, or counted as a
//! duplicate of an event already accepted. The store is a set of Parquet files, one per bucket of
//! persons, each sorted by `(person_id, ts, event_id)`, committed atomically by switching the
//! store's `current` link to a new generation directory.
//!
//! The entry point is [`ingest`]; [`verify`] checks a store's files against its manifest.

mod batch;
mod commit;
mod dedup;
mod error;
mod event;
mod footer;
mod handoff;
mod identity;
mod integrity;
mod limits;
mod normalize;
mod parallel;
mod read;
mod route;
mod run;
mod scan;
mod spill;
mod store;
mod write;

pub use commit::{NewGeneration, StoreRun};
pub use error::IngestError;
pub use handoff::{
    HandedEvent, HandedRejection, LinkWriter, RejectionWriter, write_bucket_file, write_id_file,
};
pub use integrity::{Problem, VerifyReport, verify};
pub use limits::{MAX_FIELD_BYTES, MAX_RECORD_BYTES, QUARANTINE_TEXT_BYTES};
pub use read::Skipped;
pub use run::{IngestOptions, IngestReport, Progress, ingest};
pub use scan::{ScanFile, ScanRow, ScanSummary, scan_file, scan_inputs};
pub use store::ROW_GROUP_ROWS;

/// Parses an IANA time-zone name (`--timezone`).
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, IngestError> {
    funnel_core::time::parse_timezone(name).map_err(|message| IngestError::InvalidOption {
        option: "--timezone",
        value: name.to_string(),
        message,
    })
}

/// Internals the fuzz targets (`crates/fuzz`) check directly; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// The amount parser of the readers (units of 10^-`AMOUNT_SCALE`).
    pub fn parse_amount(text: &str) -> Result<i64, String> {
        crate::event::parse_amount(text)
    }

    /// The text of a parsed amount, as the quarantine writes it.
    pub fn format_amount(units: i64) -> String {
        crate::event::format_amount(units)
    }
}
