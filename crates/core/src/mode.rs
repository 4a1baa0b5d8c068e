//! windowFunnel modes: the names a funnel file writes ([`Mode`]) and the set of them one funnel
//! runs with ([`ModeSet`]), the one form the kernels and the SQL compiler read.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

/// windowFunnel modes, with ClickHouse's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    StrictOrder,
    StrictIncrease,
    StrictDeduplication,
    StrictOnce,
    AllowReentry,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::StrictOrder,
        Mode::StrictIncrease,
        Mode::StrictDeduplication,
        Mode::StrictOnce,
        Mode::AllowReentry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::StrictOrder => "strict_order",
            Mode::StrictIncrease => "strict_increase",
            Mode::StrictDeduplication => "strict_deduplication",
            Mode::StrictOnce => "strict_once",
            Mode::AllowReentry => "allow_reentry",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The modes of one funnel, as flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModeSet {
    pub strict_order: bool,
    pub strict_increase: bool,
    pub strict_deduplication: bool,
    pub strict_once: bool,
    pub allow_reentry: bool,
}

impl ModeSet {
    pub fn contains(self, mode: Mode) -> bool {
        match mode {
            Mode::StrictOrder => self.strict_order,
            Mode::StrictIncrease => self.strict_increase,
            Mode::StrictDeduplication => self.strict_deduplication,
            Mode::StrictOnce => self.strict_once,
            Mode::AllowReentry => self.allow_reentry,
        }
    }
}

impl FromIterator<Mode> for ModeSet {
    fn from_iter<I: IntoIterator<Item = Mode>>(modes: I) -> ModeSet {
        let mut set = ModeSet::default();
        for m in modes {
            *match m {
                Mode::StrictOrder => &mut set.strict_order,
                Mode::StrictIncrease => &mut set.strict_increase,
                Mode::StrictDeduplication => &mut set.strict_deduplication,
                Mode::StrictOnce => &mut set.strict_once,
                Mode::AllowReentry => &mut set.allow_reentry,
            } = true;
        }
        set
    }
}

impl From<&BTreeSet<Mode>> for ModeSet {
    fn from(modes: &BTreeSet<Mode>) -> ModeSet {
        modes.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_exactly_its_modes() {
        for bits in 0u32..32 {
            let modes: Vec<Mode> = Mode::ALL
                .into_iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, m)| m)
                .collect();
            let set: ModeSet = modes.iter().copied().collect();
            for m in Mode::ALL {
                assert_eq!(set.contains(m), modes.contains(&m), "{m} in {bits:b}");
            }
            assert_eq!(
                ModeSet::from(&modes.iter().copied().collect::<BTreeSet<_>>()),
                set
            );
        }
    }
}
