//! Timestamp and time-zone parsing (CONTRACT §1: RFC 3339 with `Z` or an offset, integer epoch
//! milliseconds, or a naive local time read in a given time zone), shared by ingest and the
//! analysis options (`--cutoff`, `--from`, `--to`).

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
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
    if !s.is_empty() && !is_integer(s) {
        four_digit_year(s)?;
    }
    match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) => local_to_utc_ms(d.and_hms_opt(0, 0, 0).expect("midnight exists"), tz),
        Err(_) => parse_ts(text, tz),
    }
}

const NAIVE_FORMATS: [&str; 4] = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

const OFFSET_FORMATS: [&str; 2] = ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z"];

/// Parses a textual timestamp into epoch milliseconds (UTC). Sub-millisecond digits are
/// truncated toward the past, as the engine compares times at millisecond precision.
pub fn parse_ts(text: &str, tz: &Tz) -> Result<i64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty timestamp".into());
    }
    if is_integer(s) {
        return s
            .parse::<i64>()
            .map_err(|_| "epoch milliseconds out of range".to_string())
            .and_then(check_range);
    }
    four_digit_year(s)?;
    if let Some(naive) = fast_naive(s) {
        return local_to_utc_ms(naive, tz);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return check_range(dt.timestamp_millis());
    }
    for f in OFFSET_FORMATS {
        if let Ok(dt) = DateTime::parse_from_str(s, f) {
            return check_range(dt.timestamp_millis());
        }
    }
    for f in NAIVE_FORMATS {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, f) {
            return local_to_utc_ms(naive, tz);
        }
    }
    Err(NOT_A_TIMESTAMP.into())
}

const NOT_A_TIMESTAMP: &str = "not RFC 3339, epoch milliseconds or a local date-time";

/// Every date form starts with a four-digit year and a dash; chrono's `%Y` would also read
/// `21-09-17` (as the year 21) or `+2021-09-17`.
fn four_digit_year(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    if b.len() > 4 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
        Ok(())
    } else {
        Err(NOT_A_TIMESTAMP.into())
    }
}

/// The common export form `YYYY-MM-DD HH:MM:SS[.fff]` (or with `T`), without an offset, read
/// without the format machinery; anything else (or anything invalid) is left to the general path,
/// so the result is always the one `NAIVE_FORMATS` would give.
fn fast_naive(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() < 19
        || !matches!(b[10], b' ' | b'T')
        || b[4] != b'-'
        || b[7] != b'-'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let mut milli = 0;
    if b.len() > 19 {
        let frac = &b[20..];
        if b[19] != b'.'
            || frac.is_empty()
            || frac.len() > 9
            || !frac.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        for i in 0..3 {
            milli = milli * 10 + frac.get(i).map_or(0, |c| u32::from(c - b'0'));
        }
    }
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    date.and_hms_milli_opt(num(11..13)?, num(14..16)?, num(17..19)?, milli)
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
        LocalResult::None => Err(format!("local time {naive} does not exist in {tz}")),
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
        Err("timestamp outside years 1..9999".into())
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

    #[test]
    fn fast_path_agrees_with_the_formats() {
        let mut cases = vec![
            "2021-09-17 10:00:00".to_string(),
            "2021-09-17T10:00:00.5".into(),
            "2021-09-17 10:00:00.123456789".into(),
            "2021-09-17 10:00:00.".into(),
            "2021-09-17 10:00:00.1234567890".into(),
            "2021-02-29 10:00:00".into(),
            "2021-09-17 24:00:00".into(),
            "2021-09-17 23:59:60".into(),
            "2021-09-17 10:00:00Z".into(),
            "2021-09-17 10:0a:00".into(),
            "+021-09-17 10:00:00".into(),
        ];
        let mut x = 7u64;
        for _ in 0..2000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let d = |m: u64| (x >> (m * 5)) % 10;
            cases.push(format!(
                "20{}{}-{}{}-{}{} {}{}:{}{}:{}{}.{}",
                d(1),
                d(2),
                d(3) % 2,
                d(4),
                d(5) % 4,
                d(6),
                d(7) % 3,
                d(8),
                d(9) % 7,
                d(10),
                d(11) % 7,
                d(12),
                d(0)
            ));
        }
        assert!(
            fast_naive("2021-09-17 10:00:00.123").is_some()
                && fast_naive("2021-09-17T10:00:00").is_some()
        );
        for c in cases {
            let general = NAIVE_FORMATS
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(&c, f).ok());
            if let Some(fast) = fast_naive(&c) {
                assert_eq!(
                    Some(fast.and_utc().timestamp_millis()),
                    general.map(|g| g.and_utc().timestamp_millis()),
                    "{c}"
                );
            }
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
