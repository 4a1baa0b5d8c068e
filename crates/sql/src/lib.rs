//! Funnel definitions compiled to SQL, so the same TOML files run on cluster engines.
//!
//! The planner starts from the validated [`funnel_core::FunnelSpec`] the embedded engine uses.
//! Every value and column name from a funnel file is escaped (string literals, quoted
//! identifiers), never spliced raw. Anything a dialect cannot express exactly is an error naming
//! the option, never an approximation.
//!
//! - [`clickhouse`]: `windowFunnel` with its modes; breakdowns by the contract's step-1 rule.

mod clickhouse;

pub use clickhouse::{SqlError, clickhouse, quote_identifier, quote_string};
