//! What a cluster engine returns for a funnel: persons per group, level and window state.

/// Persons of one group who reached exactly `level`, with their reported chain's window open
/// (or closed) at the cutoff.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LevelCount {
    /// `None`: all persons; otherwise the breakdown values (in the funnel's breakdown order) of
    /// the step-1 events, `None` where an event lacks the column.
    pub key: Option<Vec<Option<String>>>,
    pub level: u32,
    pub window_open: bool,
    pub persons: u64,
}
