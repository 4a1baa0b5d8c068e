//! Timestamp and time-zone parsing (CONTRACT §1: RFC 3339 with `Z` or an offset, integer epoch
//! milliseconds, or a naive local time read in a given time zone), shared by ingest and the
//! analysis options (`--cutoff`, `--from`, `--to`).

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone};
pub use chrono_tz::Tz;

/// The zone in which timestamps without an offset are read when none is named (`funnel ingest
/// --timezone`): where the scenario's exports come from.
pub const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

/// Parses an IANA time-zone name such as `Asia/Shanghai` or `UTC`.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|e| e.to_string())
}

/// Like [`parse_ts`], and also a bare date (`2021-09-17`: local midnight in `tz`).
pub fn parse_instant(text: &str, tz: &Tz) -> Result<i64, String> {
    let s = text.trim();
    let b = s.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        parse_ts(&format!("{s} 00:00"), tz)
    } else {
        parse_ts(text, tz)
    }
}

/// The textual forms of a timestamp, after surrounding (Unicode) whitespace is trimmed, as a
/// regular expression: the one statement of the grammar. [`parse_ts`] reads exactly this
/// language by hand; the cluster ingest's SQL matches this pattern (`funnel-sql`), and the
/// Spark check compares the two on random text.
///
/// ```text
/// epoch      -?[0-9]+                                    integer epoch milliseconds
/// date-time  YYYY-MM-DD (T|t|space) hh:mm[:ss[.f...]] [[space] offset]
/// offset     Z | z | (+|-)hh[:]mm
/// ```
///
/// Groups: 1 epoch; 2-4 year, month, day; 5-7 hour, minute, second; 8 fraction; 9 `Z`;
/// 10-12 offset sign, hours, minutes. A value that matches must also be a real calendar date
/// and clock time (hour 0-23, minute 0-59, second 0-60, offset up to 23:59); second 60 (a leap
/// second) is the first second of the next minute; digits past milliseconds are truncated.
/// Without an offset the time is local in the ingest's zone: a wall-clock time that falls in a
/// daylight-saving gap is rejected, one that repeats is the earlier instant.
pub const TIMESTAMP_PATTERN: &str = r"^(?:(-?[0-9]+)|([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(?: ?(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2})))?)$";

/// Parses a textual timestamp ([`TIMESTAMP_PATTERN`]) into epoch milliseconds (UTC).
/// Sub-millisecond digits are truncated toward the past, as the engine compares times at
/// millisecond precision.
pub fn parse_ts(text: &str, tz: &Tz) -> Result<i64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(EMPTY_TIMESTAMP.into());
    }
    if is_integer(s) {
        return s
            .parse::<i64>()
            .map_err(|_| EPOCH_OUT_OF_RANGE.to_string())
            .and_then(check_range);
    }
    let f = DateTimeText::read(s.as_bytes()).ok_or(NOT_A_TIMESTAMP)?;
    let local = f.local_ms().ok_or(NOT_A_TIMESTAMP)?;
    match f.offset_minutes {
        Some(offset) => check_range(local - i64::from(offset) * 60_000),
        None => local_ms_to_utc_ms(local, tz),
    }
}

/// Message of text that is not in the grammar, or names no real date and time.
pub const NOT_A_TIMESTAMP: &str = "not RFC 3339, epoch milliseconds or a local date-time";
/// Message of a timestamp that is only white space.
pub const EMPTY_TIMESTAMP: &str = "empty timestamp";
/// Message of epoch milliseconds beyond 64 bits.
pub const EPOCH_OUT_OF_RANGE: &str = "epoch milliseconds out of range";
/// Message of an instant outside [`MIN_MS`]..=[`MAX_MS`].
pub const OUTSIDE_YEARS: &str = "timestamp outside years 1..9999";
/// The message of a local time in a daylight-saving gap is these two around the wall clock
/// (`YYYY-MM-DD hh:mm:ss[.mmm]`), then the zone's name.
pub const GAP_MESSAGE: [&str; 2] = ["local time ", " does not exist in "];

/// The fields of a date-time of the grammar, not yet checked against the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTimeText {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    milli: u32,
    /// East of UTC, in minutes; `None` for a local time.
    offset_minutes: Option<i32>,
}

impl DateTimeText {
    /// The fields of `b`, when it is a date-time of [`TIMESTAMP_PATTERN`] with an offset in
    /// range (the calendar is checked by [`DateTimeText::local_ms`]).
    fn read(b: &[u8]) -> Option<DateTimeText> {
        let num = |at: usize, width: usize| -> Option<u32> {
            b.get(at..at + width)?.iter().try_fold(0u32, |acc, c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        let at = |i: usize, c: u8| b.get(i) == Some(&c);
        let separators = at(4, b'-') && at(7, b'-') && at(13, b':');
        if !(separators && matches!(b.get(10), Some(b'T' | b't' | b' '))) {
            return None;
        }
        let mut f = DateTimeText {
            year: num(0, 4)?,
            month: num(5, 2)?,
            day: num(8, 2)?,
            hour: num(11, 2)?,
            minute: num(14, 2)?,
            second: 0,
            milli: 0,
            offset_minutes: None,
        };
        let mut i = 16;
        if at(i, b':') {
            f.second = num(i + 1, 2)?;
            i += 3;
            if at(i, b'.') {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                for k in 0..3 {
                    let d = if k < digits { b[i + 1 + k] - b'0' } else { 0 };
                    f.milli = f.milli * 10 + u32::from(d);
                }
                i += 1 + digits;
            }
        }
        if i == b.len() {
            return Some(f);
        }
        if at(i, b' ') {
            i += 1;
        }
        match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => f.offset_minutes = Some(0),
            Some(&sign @ (b'+' | b'-')) => {
                let hours = num(i + 1, 2)?;
                let colon = usize::from(at(i + 3, b':'));
                let minutes = num(i + 3 + colon, 2)?;
                if i + 5 + colon != b.len() {
                    return None;
                }
                if hours > 23 || minutes > 59 {
                    return None;
                }
                let east = (hours * 60 + minutes) as i32;
                f.offset_minutes = Some(if sign == b'-' { -east } else { east });
            }
            _ => return None,
        }
        Some(f)
    }

    /// Milliseconds since the epoch of the wall clock the fields name, when they name a real
    /// date and clock time.
    fn local_ms(&self) -> Option<i64> {
        let y = self.year;
        let leap = y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
        let days_in_month = match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        if !(1..=days_in_month).contains(&self.day)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
        {
            return None;
        }
        let days = days_from_civil(
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
        );
        let seconds = i64::from((self.hour * 60 + self.minute) * 60 + self.second);
        Some((days * 86_400 + seconds) * 1000 + i64::from(self.milli))
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads a naive local time (milliseconds since the epoch of the local wall clock) in `tz`.
pub fn local_ms_to_utc_ms(local_ms: i64, tz: &Tz) -> Result<i64, String> {
    let naive = DateTime::from_timestamp_millis(local_ms)
        .ok_or_else(|| "timestamp out of range".to_string())?
        .naive_utc();
    local_to_utc_ms(naive, tz)
}

fn local_to_utc_ms(naive: NaiveDateTime, tz: &Tz) -> Result<i64, String> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(dt) => check_range(dt.timestamp_millis()),
        // A repeated wall-clock hour (end of daylight saving): the earlier instant.
        LocalResult::Ambiguous(early, _) => check_range(early.timestamp_millis()),
        LocalResult::None => Err(format!("{}{naive}{}{tz}", GAP_MESSAGE[0], GAP_MESSAGE[1])),
    }
}

/// The earliest instant a timestamp may name: 0001-01-01T00:00:00Z, in epoch milliseconds.
pub const MIN_MS: i64 = -62_135_596_800_000;
/// The latest instant a timestamp may name: 9999-12-31T23:59:59.999Z, in epoch milliseconds.
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Years 0001..=9999 ([`MIN_MS`]..=[`MAX_MS`]): what RFC 3339 can express, and what Parquet
/// readers accept. Every instant ingest stores passes this check, whatever its input form.
pub fn check_range(ms: i64) -> Result<i64, String> {
    if (MIN_MS..=MAX_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(OUTSIDE_YEARS.into())
    }
}

fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 3339 text (UTC, millisecond precision) of epoch milliseconds.
pub fn format_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    fn sh() -> Tz {
        parse_timezone("Asia/Shanghai").unwrap()
    }

    #[test]
    fn accepted_forms_agree() {
        let want = 1_631_844_000_123; // 2021-09-17T02:00:00.123Z
        for s in [
            "2021-09-17T10:00:00.123+08:00",
            "2021-09-17T02:00:00.123Z",
            "2021-09-17t02:00:00.123z",
            "2021-09-17 10:00:00.123+08:00",
            "2021-09-17T10:00:00.123+0800",
            "1631844000123",
            " 1631844000123 ",
            "2021-09-17T10:00:00.123",
            "2021-09-17 10:00:00.123",
            "2021-09-17T10:00:00.123456",
        ] {
            assert_eq!(parse_ts(s, &sh()), Ok(want), "{s}");
        }
        assert_eq!(parse_ts("2021-09-17 10:00", &sh()), Ok(want - 123));
    }

    #[test]
    fn naive_time_uses_the_given_zone() {
        let utc = parse_timezone("UTC").unwrap();
        assert_eq!(
            parse_ts("2021-09-17 10:00:00", &utc).unwrap()
                - parse_ts("2021-09-17 10:00:00", &sh()).unwrap(),
            8 * 3600 * 1000
        );
        // Spring-forward gap in Berlin does not exist; the autumn hour is read as the earlier one.
        let berlin = parse_timezone("Europe/Berlin").unwrap();
        assert!(parse_ts("2021-03-28 02:30:00", &berlin).is_err());
        assert_eq!(
            parse_ts("2021-10-31 02:30:00", &berlin),
            parse_ts("2021-10-31T02:30:00+02:00", &berlin)
        );
    }

    #[test]
    fn malformed_timestamps_are_rejected() {
        for s in [
            "",
            "yesterday",
            "2021-13-01T00:00:00Z",
            "2021-09-31T10:00:00Z",
            "2021-09-17T25:00:00",
            "2021-09-17",
            "17/09/2021 10:00",
            "1.6e12",
            "99999999999999999999",
            "2021-09-17T10:00:00+25:00",
            "21-09-17 10:00:00",
            "21-09-17T10:00:00+08:00",
            "+2021-09-17 10:00:00",
            "-1-09-17 10:00:00",
        ] {
            assert!(parse_ts(s, &sh()).is_err(), "{s:?} should not parse");
        }
    }

    /// The grammar by example: what each part admits, and the forms the chrono-format parser
    /// of earlier versions accepted by accident and this grammar does not.
    #[test]
    fn the_grammar_of_timestamps() {
        let utc = parse_timezone("UTC").unwrap();
        let ok = |s: &str| parse_ts(s, &utc).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        let base = ok("2021-09-17T10:00:00Z");
        for (s, plus_ms) in [
            ("2021-09-17t10:00:00z", 0),
            ("2021-09-17 10:00:00", 0),
            ("2021-09-17t10:00", 0),
            ("2021-09-17T10:00Z", 0),
            ("2021-09-17T10:00 Z", 0),
            ("2021-09-17 10:00:00 +00:00", 0),
            ("2021-09-17T12:00:00+0200", 0),
            ("2021-09-17T09:30:00-00:30", 0),
            ("2021-09-17T10:00:00.1", 100),
            ("2021-09-17T10:00:00.0129999", 12),
            ("2021-09-17T09:59:60", 0),
            ("\u{3000}2021-09-17T10:00:00\t", 0),
        ] {
            assert_eq!(ok(s), base + plus_ms, "{s:?}");
        }
        for s in [
            "2021-9-17 10:00:00",
            "2021-09-7 10:00:00",
            "2021-09-17 1:00:00",
            "2021-09-17 10:0:00",
            "2021-09-17 10:00:0",
            "2021-09-1710:00:00",
            "2021-09-17  10:00:00",
            "2021-09-17T10:00:00.",
            "2021-09-17T10:00:00,5",
            "2021-09-17T10:00:00+08",
            "2021-09-17T10:00:00+8:00",
            "2021-09-17T10:00:00+08:00:00",
            "2021-09-17T10:00:00+24:00",
            "2021-09-17T10:00:00+08:60",
            "2021-09-17T10:00:00  Z",
            "2021-09-17T10:00:00UTC",
            "2021-09-17T10:00:61",
            "2021-09-17T10:60",
            "2021-09-17T24:00",
            "2021-00-17T10:00",
            "2021-09-00T10:00",
            "2100-02-29T10:00",
            "10000-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_ts(s, &utc), Err(NOT_A_TIMESTAMP.to_string()), "{s:?}");
        }
        assert_eq!(ok("2000-02-29 00:00"), 951_782_400_000);
        assert_eq!(
            parse_ts("0000-12-31T23:59:59Z", &utc),
            Err("timestamp outside years 1..9999".to_string())
        );
    }

    /// Random real dates and times, written in the canonical forms, read as chrono reads them.
    #[test]
    fn canonical_forms_agree_with_chrono() {
        let mut x = 7u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ms = MIN_MS + (x >> 1) as i64 % (MAX_MS - MIN_MS);
            let offset = ((x >> 40) % (2 * 1439 + 1)) as i32 - 1439;
            let dt = DateTime::from_timestamp_millis(ms).unwrap();
            let fixed = chrono::FixedOffset::east_opt(offset * 60).unwrap();
            let local = dt.with_timezone(&fixed);
            for (form, want) in [
                ("%Y-%m-%dT%H:%M:%S%.3f%:z", ms),
                ("%Y-%m-%d %H:%M:%S%.3f%z", ms),
                ("%Y-%m-%dT%H:%M:%S%.9fZ", ms),
            ] {
                let text = if form.ends_with('Z') {
                    dt.format(form).to_string()
                } else {
                    local.format(form).to_string()
                };
                if local.year() < 1 || local.year() > 9999 {
                    continue;
                }
                assert_eq!(parse_ts(&text, &Tz::UTC), Ok(want), "{text}");
            }
            let naive = dt.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string();
            assert_eq!(parse_ts(&naive, &Tz::UTC), Ok(ms), "{naive}");
        }
    }

    #[test]
    fn bad_timezone_is_an_error() {
        assert!(parse_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn instants_accept_dates() {
        assert_eq!(
            parse_instant("2021-09-17", &sh()),
            parse_ts("2021-09-17 00:00:00", &sh())
        );
        assert_eq!(
            parse_instant("2021-09-17T02:00:00Z", &sh()),
            Ok(1_631_844_000_000)
        );
        assert!(parse_instant("17.09.2021", &sh()).is_err());
        assert!(parse_instant("21-09-17", &sh()).is_err());
        assert!(parse_instant("1-09-17", &sh()).is_err());
    }

    #[test]
    fn the_range_is_years_1_to_9999() {
        let utc = parse_timezone("UTC").unwrap();
        assert_eq!(format_ms(MIN_MS), "0001-01-01T00:00:00.000Z");
        assert_eq!(format_ms(MAX_MS), "9999-12-31T23:59:59.999Z");
        for ms in [MIN_MS, MAX_MS] {
            assert_eq!(parse_ts(&format_ms(ms), &utc), Ok(ms));
            assert_eq!(parse_ts(&ms.to_string(), &utc), Ok(ms));
        }
        for ms in [MIN_MS - 1, MAX_MS + 1] {
            assert!(parse_ts(&ms.to_string(), &utc).is_err(), "{ms}");
        }
        // A local time in year 1 east of UTC is an instant in year 0.
        assert!(parse_ts("0001-01-01 00:00:00", &sh()).is_err());
    }

    #[test]
    fn format_round_trips() {
        assert_eq!(format_ms(1_631_844_000_123), "2021-09-17T02:00:00.123Z");
        assert_eq!(parse_ts(&format_ms(-5), &sh()), Ok(-5));
    }
}
