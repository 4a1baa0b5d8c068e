//! Seeded mutation fuzzing on the stable toolchain: no compiler instrumentation, no nightly.
//!
//! A target is a function `fn(&[u8]) -> Result<(), String>`: it runs the code under test on the
//! input and checks invariants that must hold for every input (counts reconcile, values round
//! trip, a reference implementation agrees, an error is one line); `Err` is a finding, and so is a
//! panic, which [`check`] catches. The `funnel-fuzz` binary mutates the seed inputs of a target's
//! corpus (`corpus/<target>/`) with a deterministic generator and writes every failing input to a
//! findings directory; `tests/corpus.rs` replays the corpus under `cargo test`.
//!
//! - [`targets`]: the targets and their registry, [`targets::TARGETS`].
//! - [`Mutator`]: the mutations (bit flips, splices, quotes, NULs, huge repeats, interesting
//!   numbers and timestamps, ...), driven by a seed.
//! - [`check`]: one run of a target with panics caught; [`record_panics`] keeps the panic
//!   location for the report and silences the default hook.
//! - [`reference`]: slow, independent parsers and unquoters the targets compare against.

mod guard;
mod mutate;
pub mod reference;
pub mod targets;

pub use guard::{check, record_panics};
pub use mutate::Mutator;
pub use targets::{TARGETS, Target, target};
