//! What a cluster engine returns for a funnel: persons per group, level and window state, and
//! the distribution of the reported chains' times to convert.

/// Persons of one group who reached exactly `level`, with their reported chain's window open
/// (or closed) at the cutoff.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LevelCount {
    /// `None` with `period` `None`: all persons; otherwise the breakdown values (in the funnel's
    /// breakdown order) of the step-1 events, `None` where an event lacks the column.
    pub key: Option<Vec<Option<String>>>,
    /// A trend group: the period label of the step-1 events (with `key`: and their values).
    pub period: Option<String>,
    pub level: u32,
    pub window_open: bool,
    pub persons: u64,
}

/// Persons of one group whose reported chain reached step `step` (0-based, at least 1)
/// `ms` milliseconds after the previous step (`from_first` false) or after step 1
/// (`from_first` true).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationCount {
    /// As [`LevelCount::key`].
    pub key: Option<Vec<Option<String>>>,
    /// As [`LevelCount::period`].
    pub period: Option<String>,
    pub step: u32,
    pub from_first: bool,
    pub ms: i64,
    /// The chain's window is open at the cutoff (`--closed-windows-only` leaves it out).
    pub window_open: bool,
    pub persons: u64,
}

/// Where the persons of one group who stopped at `level` (short of the last step) went next
/// ("where the dropped went").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NextCount {
    /// As [`LevelCount::key`].
    pub key: Option<Vec<Option<String>>>,
    /// As [`LevelCount::period`].
    pub period: Option<String>,
    pub level: u32,
    pub window_open: bool,
    /// `Some((event type, its value of the next_by column))`: the event that followed their
    /// chain within the window; `None`: nothing did.
    pub next: Option<(Option<String>, Option<String>)>,
    pub persons: u64,
}
