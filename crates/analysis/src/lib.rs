//! Computations over the funnel store.
//!
//! The store is read through its manifest (never by globbing, so files of an unfinished ingest
//! are never seen). So far: [`inspect`], a summary of what the store holds.

mod error;
mod inspect;
mod kernel;

pub use error::AnalysisError;
pub use inspect::{CountRow, StoreSummary, inspect};
pub use kernel::{Kernel, Modes};
