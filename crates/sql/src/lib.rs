//! Funnel definitions compiled to SQL, so the same TOML files run on cluster engines.
//!
//! The planner starts from the validated [`funnel_core::FunnelSpec`] the embedded engine uses
//! ([`Plan::new`] refuses, naming the option, what SQL cannot compute exactly), and renders one
//! query in either dialect ([`query`]): Spark SQL with higher-order functions (`aggregate`,
//! `transform`, `filter`), or ClickHouse with `windowFunnel` and `arrayFold`. Every value and
//! column name from a funnel file is a quoted literal or identifier, never spliced raw.

mod dialect;
mod error;
mod plan;
mod query;

pub use error::SqlError;
pub use plan::{Dialect, Plan, PlanOptions};
pub use query::{audit_query, query};
