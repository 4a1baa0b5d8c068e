//! Small groups (`--min-persons K`, CONTRACT §9): a group with fewer than K step-1 persons is
//! marked suppressed and serialised with `null` for every count, rate and time. Nothing is
//! recomputed: totals and `"(other)"` still count its persons.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::{FunnelReport, GroupReport, StepReport};

/// Marks every group (breakdown values, trend groups, and the total) of `report` with fewer
/// than `min_persons` step-1 persons; 0 marks none.
pub fn suppress(report: &mut FunnelReport, min_persons: u64) {
    for g in report.groups.iter_mut().chain(report.trend.iter_mut()) {
        g.suppressed = g.steps.first().is_some_and(|s| s.persons < min_persons);
    }
}

impl Serialize for GroupReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut st =
            serializer.serialize_struct("GroupReport", 3 + usize::from(self.suppressed))?;
        st.serialize_field("key", &self.key)?;
        if self.suppressed {
            st.serialize_field("excluded_open_windows", &None::<u64>)?;
            let steps: Vec<Hidden<'_>> = self.steps.iter().map(Hidden).collect();
            st.serialize_field("steps", &steps)?;
            st.serialize_field("suppressed", &true)?;
        } else {
            st.serialize_field("excluded_open_windows", &self.excluded_open_windows)?;
            st.serialize_field("steps", &self.steps)?;
        }
        st.end()
    }
}

/// A step of a suppressed group: its name, and `null` for each of [`StepReport`]'s numbers.
struct Hidden<'a>(&'a StepReport);

/// The fields of [`StepReport`] besides `name`, in its order.
const NUMBERS: [&str; 7] = [
    "persons",
    "conversion_from_previous",
    "conversion_from_first",
    "dropped_from_previous",
    "pending",
    "stopped_before",
    "time_to_convert",
];

impl Serialize for Hidden<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let optional = usize::from(self.0.dropped_next.is_some());
        let mut st = serializer.serialize_struct("StepReport", 1 + NUMBERS.len() + optional)?;
        st.serialize_field("name", &self.0.name)?;
        for field in NUMBERS {
            st.serialize_field(field, &None::<u64>)?;
        }
        if optional > 0 {
            st.serialize_field("dropped_next", &None::<u64>)?;
        }
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TimeToConvert;

    fn group(persons: u64) -> GroupReport {
        let step = |name: &str, persons: u64| StepReport {
            name: name.into(),
            persons,
            conversion_from_previous: 0.5,
            conversion_from_first: 0.5,
            dropped_from_previous: 1,
            pending: 0,
            stopped_before: 1,
            time_to_convert: Some(TimeToConvert {
                from_previous: None,
                from_first: None,
            }),
            dropped_next: Some(Vec::new()),
        };
        GroupReport {
            key: [("journey".to_string(), Some("x".to_string()))].into(),
            excluded_open_windows: 0,
            steps: vec![step("a", persons), step("b", persons / 2)],
            suppressed: false,
        }
    }

    #[test]
    fn a_suppressed_group_has_the_same_fields_all_null() {
        let shown = serde_json::to_value(group(10)).unwrap();
        assert!(shown.get("suppressed").is_none());
        let mut g = group(2);
        g.suppressed = true;
        let hidden = serde_json::to_value(&g).unwrap();
        assert_eq!(hidden["suppressed"], true);
        assert!(hidden["excluded_open_windows"].is_null());
        for (s, h) in shown["steps"]
            .as_array()
            .unwrap()
            .iter()
            .zip(hidden["steps"].as_array().unwrap())
        {
            let keys = |v: &serde_json::Value| -> Vec<String> {
                v.as_object().unwrap().keys().cloned().collect()
            };
            // Every field of a shown step, no other, and only the name has a value.
            assert_eq!(keys(s), keys(h));
            for (k, v) in h.as_object().unwrap() {
                assert_eq!(v.is_null(), k != "name", "{k}");
            }
        }
    }

    #[test]
    fn suppression_marks_only_small_groups() {
        let mut r = FunnelReport {
            funnel: "f".into(),
            window_seconds: 1,
            modes: vec![],
            extensions: vec![],
            breakdown: vec![],
            cutoff: String::new(),
            closed_windows_only: false,
            from: None,
            to: None,
            groups: vec![group(100), group(4), group(5)],
            interval: None,
            trend: vec![group(3)],
            timezone: "UTC".into(),
        };
        suppress(&mut r, 5);
        let marks: Vec<bool> = r.groups.iter().map(|g| g.suppressed).collect();
        assert_eq!(marks, [false, true, false]);
        assert!(r.trend[0].suppressed);
        suppress(&mut r, 0);
        assert!(!r.groups.iter().chain(&r.trend).any(|g| g.suppressed));
    }
}
