//! Calendar periods of trends: one home for what a period is and how it is labelled, read by
//! the embedded engine and compiled to SQL by `funnel-sql`.
//!
//! A period is the local calendar day, ISO week or month (in the run's time zone) of an
//! instant. Labels: `YYYY-MM-DD` for a day, the Monday of the week as `YYYY-MM-DD`, `YYYY-MM`
//! for a month.

use chrono::{Datelike, TimeZone};
use chrono_tz::Tz;

/// Calendar periods for trends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    /// ISO weeks, labelled by their Monday.
    Week,
    Month,
}

impl Interval {
    pub fn name(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }

    /// The label of the period holding the instant `ms` (milliseconds since the epoch) in `tz`.
    pub fn label(self, ms: i64, tz: &Tz) -> String {
        let local = tz
            .timestamp_millis_opt(ms)
            .single()
            .expect("UTC instants map to one local time")
            .date_naive();
        match self {
            Interval::Day => local.format("%Y-%m-%d").to_string(),
            Interval::Week => {
                let monday =
                    local - chrono::Days::new(u64::from(local.weekday().num_days_from_monday()));
                monday.format("%Y-%m-%d").to_string()
            }
            Interval::Month => local.format("%Y-%m").to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_local_calendar() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        // 2021-09-19T16:00:00Z is Monday 2021-09-20 00:00 in Shanghai.
        let ms = 1_632_067_200_000;
        assert_eq!(Interval::Day.label(ms, &tz), "2021-09-20");
        assert_eq!(Interval::Day.label(ms - 1, &tz), "2021-09-19");
        assert_eq!(Interval::Week.label(ms, &tz), "2021-09-20");
        assert_eq!(Interval::Week.label(ms - 1, &tz), "2021-09-13");
        assert_eq!(Interval::Month.label(ms, &tz), "2021-09");
        assert_eq!(Interval::Day.label(-1, &chrono_tz::UTC), "1969-12-31");
        assert_eq!(Interval::Week.label(0, &chrono_tz::UTC), "1969-12-29");
    }
}
