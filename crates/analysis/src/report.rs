//! Funnel results as reported (CONTRACT §6).

use std::collections::BTreeMap;

use funnel_core::FunnelSpec;
use serde::Serialize;

/// One step of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub name: String,
    /// Persons whose level is at least this step.
    pub persons: u64,
    /// persons / persons of the previous step (0 when that is 0; 1 for a non-empty first step).
    pub conversion_from_previous: f64,
    /// persons / persons of step 1 (0 when that is 0).
    pub conversion_from_first: f64,
    /// persons of the previous step minus persons (0 for the first step).
    pub dropped_from_previous: u64,
}

/// The funnel for all persons (`key` empty) or for one breakdown value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupReport {
    /// Breakdown column -> value of the step-1 event (`null` where it lacks the column).
    pub key: BTreeMap<String, Option<String>>,
    pub steps: Vec<StepReport>,
}

/// The result of one funnel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelReport {
    pub funnel: String,
    pub window_seconds: i64,
    /// windowFunnel modes in effect (empty: default mode).
    pub modes: Vec<String>,
    pub breakdown: Vec<String>,
    /// The first group has the empty key (no breakdown); one group per breakdown value follows.
    pub groups: Vec<GroupReport>,
}

/// Step counts from a histogram of levels (`levels[l]` = persons whose level is exactly `l`).
pub(crate) fn group(
    spec: &FunnelSpec,
    key: BTreeMap<String, Option<String>>,
    levels: &[u64],
) -> GroupReport {
    let n = spec.steps.len();
    let mut at_least = vec![0u64; n + 1];
    let mut acc = 0;
    for l in (1..=n).rev() {
        acc += levels.get(l).copied().unwrap_or(0);
        at_least[l] = acc;
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let first = at_least[1];
    let steps = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let persons = at_least[i + 1];
            let prev = if i == 0 { persons } else { at_least[i] };
            StepReport {
                name: s.name.clone(),
                persons,
                conversion_from_previous: ratio(persons, prev),
                conversion_from_first: ratio(persons, first),
                dropped_from_previous: prev - persons,
            }
        })
        .collect();
    GroupReport { key, steps }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates() {
        let spec = funnel_core::parse_funnel(
            "name = \"f\"\nwindow = \"1d\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n[[steps]]\nname = \"b\"\nevent_type = \"warning\"\n[[steps]]\nname = \"c\"\nevent_type = \"purchase\"\n",
            "f.toml",
        )
        .unwrap();
        // 10 persons at level 0 (not counted), 360 at 1, 440 at 2, 200 at 3.
        let g = group(&spec, BTreeMap::new(), &[10, 360, 440, 200]);
        let persons: Vec<u64> = g.steps.iter().map(|s| s.persons).collect();
        assert_eq!(persons, vec![1000, 640, 200]);
        assert_eq!(g.steps[0].conversion_from_previous, 1.0);
        assert_eq!(g.steps[1].conversion_from_previous, 0.64);
        assert_eq!(g.steps[1].dropped_from_previous, 360);
        assert_eq!(g.steps[2].conversion_from_first, 0.2);
        let empty = group(&spec, BTreeMap::new(), &[]);
        assert!(
            empty
                .steps
                .iter()
                .all(|s| s.persons == 0 && s.conversion_from_previous == 0.0)
        );
    }
}
