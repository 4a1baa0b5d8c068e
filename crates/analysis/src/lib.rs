//! Computations over the funnel store.
//!
//! The store is read through its manifest (never by globbing, so files of an unfinished ingest
//! are never seen).
//!
//! - [`analyze`]: funnels (ClickHouse `windowFunnel` semantics, [`Kernel`]) with breakdowns.
//! - [`inspect`]: a summary of what the store holds.

mod compare;
mod engine;
mod error;
mod extended;
mod inspect;
mod kernel;
mod report;
mod stats;

pub use compare::{
    CompareOptions, Comparison, Difference, Group, MIN_SAMPLE, Rate, StepCost, compare,
    compare_report, comparison_spec,
};
pub use engine::{
    Analysis, AnalyzeOptions, AuditRow, Interval, analyze, report_from_levels, write_audit,
};
pub use error::AnalysisError;
pub use inspect::{CountRow, StoreSummary, inspect};
pub use kernel::{Kernel, Modes, Scratch};
pub use report::{Durations, FunnelReport, GroupReport, StepReport, TimeToConvert};
pub use stats::{Z95, fisher_exact, holm, newcombe, wilson, z_test};
