//! Funnel definitions compiled to SQL, so the same TOML files run on cluster engines.
//!
//! The planner starts from the validated [`funnel_core::FunnelSpec`] the embedded engine uses
//! ([`Plan::new`] refuses, naming the option, what SQL cannot compute exactly), and renders one
//! query in either dialect ([`query`]): Spark SQL with higher-order functions (`aggregate`,
//! `transform`, `filter`), or ClickHouse with `windowFunnel` and `arrayFold`. Every value and
//! column name from a funnel file is a quoted literal or identifier, never spliced raw.
//!
//! [`read_query`] reads a cluster ingest's input files on the workers with the ingest's own
//! readers; [`rules_query`] compiles the row rules of the contract (`funnel_core::rules`) to the Spark
//! SQL that validates and normalises export rows in the cluster ingest; [`Stitch`] is the
//! cluster ingest's identity stitching (connected components, by minimum-label hooking and shortcutting);
//! [`write_events_query`] and its siblings hand the rows of the new generation to the
//! workers' writers, so the cluster writes the store's files with the embedded ingest's code.

mod dedup;
mod dialect;
mod error;
mod plan;
mod query;
mod read;
mod rules;
mod stitch;
mod worker;

pub use dedup::dedup_query;
pub use error::SqlError;
pub use plan::{Dialect, Plan, PlanOptions};
pub use query::{audit_query, query};
pub use read::{READ_COLUMNS, read_query};
pub use rules::rules_query;
pub use stitch::Stitch;
pub use worker::{
    Generation, HANDED_EVENT_COLUMNS, hash_query, write_events_query, write_identity_query,
    write_ids_query, write_quarantine_query,
};
