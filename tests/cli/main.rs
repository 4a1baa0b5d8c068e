//! End-to-end tests of the `funnel` binary: generate -> ingest -> compare with the generator's
//! ground truth, re-ingest, batches, crash safety, hostile inputs, exit codes.
//!
//! One test binary (each links polars), in themed modules sharing `util`.

mod analyze;
mod audit;
mod cluster;
mod hostile_input;
mod ingest;
mod reports;
mod store_safety;
mod util;
