//! Computations over the funnel store.
//!
//! The store is read through its manifest (never by globbing, so files of an unfinished ingest
//! are never seen).
//!
//! - [`analyze`] (`engine/`): funnels with breakdowns and trends, one pass over the store for
//!   all of them: `scan.rs` (the only part that knows Parquet and polars), `walk.rs` (each
//!   person once, for every funnel), `groups.rs`, `accumulate.rs`, `schedule.rs`.
//! - `kernel/`: the per-person kernels, ClickHouse `windowFunnel` exactly ([`Kernel`]) and the
//!   extended kernel, and the one dispatch between them.
//! - `report/`: the reported numbers ([`FunnelReport`]), assembled from the embedded engine's
//!   groups or from a cluster engine's level counts ([`report_from_levels`]).
//! - `audit.rs`: the `--persons-out` table ([`write_audit`]).
//! - [`compare`]: journeys compared with sound statistics (`stats/`), adjusted for strata
//!   (`compare/adjusted.rs`) and before/after an instant (`compare/split.rs`).
//! - [`inspect`]: a summary of what the store holds.

mod audit;
mod compare;
mod engine;
mod error;
mod inspect;
mod kernel;
mod report;
mod stats;

pub use audit::{AuditRow, write_audit};
pub use compare::{
    Adjusted, AdjustedDid, BeforeAfter, CompareOptions, Comparison, Did, DidStratum, Difference,
    Group, MIN_SAMPLE, Rate, Split, SplitStratum, StepCost, Stratum, StratumValue, analyze_options,
    compare, compare_reports, comparison_specs,
};
pub use engine::{Analysis, AnalyzeOptions, Interval, analyze};
pub use error::AnalysisError;
pub use inspect::{CountRow, StoreSummary, inspect};
pub use kernel::{Kernel, Scratch};
pub use report::{
    Destination, Durations, FunnelReport, GroupReport, HISTOGRAM_BOUNDS_SECS, NOTHING_MORE,
    StepReport, TimeToConvert, WINDOW_OPEN, other_last, report_from_levels, suppress, top_values,
};
pub use stats::{
    Estimate, Pooled, Side, Table, Z95, chi2_sf, did, fisher_exact, holm, mantel_haenszel,
    newcombe, pooled_did, wilson, z_test,
};
