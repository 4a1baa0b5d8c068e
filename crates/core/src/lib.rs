//! Shared types of the funnel engine.
//!
//! Both sides of the engine stand on this crate and on nothing of each other: `funnel-ingest`
//! writes the store described here, `funnel-analysis` reads it.
//!
//! - [`schema`]: the export columns of the contract, the store's extra columns, and the stable
//!   rejection reasons.
//! - [`Manifest`] and [`StoreLayout`]: how a store is laid out on disk and what its manifest says;
//!   [`Generation`]: a committed generation open for reading.
//! - [`lease`]: readers' leases, which keep a generation on disk while it is read.
//! - [`FileSum`]: size and checksum of a store file, as the manifest records them, computed
//!   while writing ([`SumWriter`]) or by reading.
//! - [`bucket_of`]: the person-hash that assigns a person to a bucket file.
//! - [`FunnelSpec`]: a validated funnel definition ([`load_funnel`]), shared by every executor;
//!   its [`ModeSet`] and its one "needs the extended kernel" rule ([`FunnelSpec::extension`]).
//! - [`rules`]: the row rules of the contract as one table, which both ingests follow.
//! - [`Interval`]: calendar periods of trends and their labels.
//! - [`LevelCount`] and [`DurationCount`]: what a cluster engine returns for a funnel.

mod checksum;
mod error;
pub mod lease;
mod levels;
mod manifest;
mod mode;
mod period;
pub mod rules;
pub mod schema;
mod spec;
pub mod time;

pub use checksum::{FileSum, SumWriter};
pub use error::CoreError;
pub use levels::{DurationCount, LevelCount, NextCount};
pub use manifest::{
    Counts, EventFile, Generation, IdFile, InputFile, MANIFEST_FILE, Manifest, RunRecord,
    STORE_FORMAT, STORE_FORMAT_VERSION, StoreLayout, bucket_of,
};
pub use mode::{Mode, ModeSet};
pub use period::Interval;
pub use schema::RejectReason;
pub use spec::{
    Attribution, CountUnit, Exclusion, Filter, FunnelSpec, MAX_STEPS, MAX_WINDOW_MS, Order,
    SpecError, Step, check_top, is_store_column, is_text_column, load_funnel, parse_funnel,
    parse_window,
};

/// The version of the tool, recorded in every manifest and report.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
