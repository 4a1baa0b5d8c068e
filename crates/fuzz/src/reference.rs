//! Slow, independent implementations that the targets compare the real code with: written from
//! the specifications (RFC 3339, the contract's decimal amounts, the SQL engines' lexers), not
//! from the code under test, and sharing nothing with it.

/// The accepted instants: 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z, in epoch ms.
const MIN_MS: i128 = -62_135_596_800_000;
const MAX_MS: i128 = 253_402_300_799_999;

/// Days from 1970-01-01 to the proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// What the reference says of a timestamp text: `None` when the text is outside the forms it
/// covers (RFC 3339 `date-time` with `Z` or a numeric offset, or integer epoch milliseconds,
/// exactly, without surrounding space; a leap second is not covered either); else the instant
/// in epoch ms, or `Err` when the text is of that form but names no accepted instant.
pub fn timestamp(text: &str) -> Option<Result<i64, ()>> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = b.get(r)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| s.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0')))
    };
    let in_range = |ms: i128| {
        if (MIN_MS..=MAX_MS).contains(&ms) {
            Ok(ms as i64)
        } else {
            Err(())
        }
    };
    // Epoch milliseconds: -?DIGIT+
    let body = text.strip_prefix('-').unwrap_or(text);
    if !body.is_empty() && body.bytes().all(|c| c.is_ascii_digit()) {
        let mut v: i128 = 0;
        for c in body.bytes() {
            v = v * 10 + i128::from(c - b'0');
            if v > 10 * MAX_MS {
                return Some(Err(()));
            }
        }
        return Some(in_range(if text.starts_with('-') { -v } else { v }));
    }
    // full-date "T" partial-time time-offset
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, s) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut i = 19;
    let mut frac_ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        for k in 0..3 {
            frac_ms = frac_ms * 10
                + b.get(start + k)
                    .filter(|_| start + k < i)
                    .map_or(0, |c| i64::from(c - b'0'));
        }
    }
    let offset_min = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return Some(Err(()));
            }
            if *sign == b'-' {
                -(oh * 60 + om)
            } else {
                oh * 60 + om
            }
        }
        _ => return None,
    };
    if s == 60 {
        return None;
    }
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return Some(Err(()));
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    Some(in_range(i128::from(secs) * 1000 + i128::from(frac_ms)))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of an accepted instant.
pub fn format_timestamp(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// A decimal amount (`[+-]digits[.digits]`, at least one digit, surrounding space ignored) in
/// units of 10^-`scale`, by exact digit-string arithmetic: `None` when it is not of that form,
/// has non-zero digits beyond `scale` decimals, or is 10^18 units or more in magnitude.
pub fn amount(text: &str, scale: usize) -> Option<i64> {
    let s = text.trim();
    let (negative, body) = match s.chars().next() {
        Some('-') => (true, &s[1..]),
        Some('+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let all_digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    if frac.len() > scale && frac[scale..].chars().any(|c| c != '0') {
        return None;
    }
    let mut units = String::from(int);
    units.extend(frac.chars().chain(std::iter::repeat('0')).take(scale));
    let units = units.trim_start_matches('0');
    if units.len() > 18 {
        return None;
    }
    let v: i64 = if units.is_empty() {
        0
    } else {
        units.parse().ok()?
    };
    Some(if negative { -v } else { v })
}

/// The dialects whose lexers the SQL references model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sql {
    /// Spark SQL: `'...'` and `"..."` strings with backslash escapes (octal `\NNN`, `\uXXXX`,
    /// ...; `SparkParserUtils.unescapeSQLString`), `` `...` `` identifiers with doubled
    /// backquotes.
    Spark,
    /// ClickHouse: `'...'` strings, `` `...` `` and `"..."` identifiers, all with backslash
    /// escapes and a doubled quote for a quote (`\xHH`, `\0`, ...; an unknown escape keeps its
    /// backslash).
    ClickHouse,
}

/// A quoted token of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quoted {
    Literal(Vec<u8>),
    Ident(Vec<u8>),
}

/// The query split the way the dialect's lexer splits it: the text outside quotes (with each
/// quoted token replaced by one `\u{1}`) and the quoted tokens, decoded. `Err` when a quote is
/// not closed.
pub fn sql_tokens(d: Sql, query: &str) -> Result<(String, Vec<Quoted>), String> {
    let chars: Vec<char> = query.chars().collect();
    let mut outside = String::new();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let kind = match (d, c) {
            (_, '\'') | (Sql::Spark, '"') => Some(false),
            (_, '`') | (Sql::ClickHouse, '"') => Some(true),
            _ => None,
        };
        let Some(is_ident) = kind else {
            outside.push(c);
            i += 1;
            continue;
        };
        let start = i;
        i += 1;
        loop {
            let Some(&x) = chars.get(i) else {
                return Err(format!("quote at char {start} is not closed"));
            };
            let backslash_escapes = !(d == Sql::Spark && is_ident);
            if x == '\\' && backslash_escapes {
                i += 2;
            } else if x == c {
                if chars.get(i + 1) == Some(&c) && (d == Sql::ClickHouse || is_ident) {
                    i += 2;
                } else {
                    i += 1;
                    break;
                }
            } else {
                i += 1;
            }
        }
        let raw: String = chars[start..i].iter().collect();
        outside.push('\u{1}');
        tokens.push(match (d, is_ident) {
            (Sql::Spark, false) => Quoted::Literal(spark_unescape(&raw).into_bytes()),
            (Sql::Spark, true) => {
                Quoted::Ident(raw[1..raw.len() - 1].replace("``", "`").into_bytes())
            }
            (Sql::ClickHouse, false) => Quoted::Literal(clickhouse_unescape(&raw)),
            (Sql::ClickHouse, true) => Quoted::Ident(clickhouse_unescape(&raw)),
        });
    }
    Ok((outside, tokens))
}

/// Spark's decoding of a string literal token (quotes included).
fn spark_unescape(token: &str) -> String {
    let b: Vec<char> = token.chars().collect();
    let end = b.len() - 1;
    let mut out = String::new();
    let mut i = 1;
    let hex = |from: usize, n: usize| -> Option<u32> {
        if from + n > end {
            return None;
        }
        let s: String = b[from..from + n].iter().collect();
        s.chars()
            .all(|c| c.is_ascii_hexdigit())
            .then(|| u32::from_str_radix(&s, 16).ok())
            .flatten()
    };
    while i < end {
        let c = b[i];
        if c != '\\' || i + 1 == end {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        let e = b[i];
        if let (true, Some(v)) = (e == 'u', hex(i + 1, 4)) {
            out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            i += 5;
        } else if let (true, Some(v)) = (e == 'U', hex(i + 1, 8)) {
            out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            i += 9;
        } else if i + 3 <= end
            && matches!(b[i], '0' | '1')
            && matches!(b[i + 1], '0'..='7')
            && matches!(b[i + 2], '0'..='7')
        {
            let v = (b[i] as u32 - 48) * 64 + (b[i + 1] as u32 - 48) * 8 + (b[i + 2] as u32 - 48);
            out.push(char::from_u32(v).expect("below 128"));
            i += 3;
        } else {
            match e {
                '0' => out.push('\0'),
                'b' => out.push('\u{8}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'Z' => out.push('\u{1a}'),
                '%' => out.push_str("\\%"),
                '_' => out.push_str("\\_"),
                other => out.push(other),
            }
            i += 1;
        }
    }
    out
}

/// ClickHouse's decoding of a quoted token (string or identifier, quotes included), as bytes.
fn clickhouse_unescape(token: &str) -> Vec<u8> {
    let b = token.as_bytes();
    let (quote, end) = (b[0], b.len() - 1);
    let mut out = Vec::new();
    let mut i = 1;
    while i < end {
        let c = b[i];
        if c == quote {
            // A doubled quote (the lexer only lets doubled ones through).
            out.push(quote);
            i += 2;
            continue;
        }
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = b[i + 1];
        i += 2;
        match e {
            b'x' if i + 2 <= end && b[i..i + 2].iter().all(u8::is_ascii_hexdigit) => {
                let s = std::str::from_utf8(&b[i..i + 2]).expect("hex digits");
                out.push(u8::from_str_radix(s, 16).expect("hex digits"));
                i += 2;
            }
            b'0' => out.push(0),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'e' => out.push(0x1b),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'N' => {}
            b'\\' | b'\'' | b'"' | b'`' => out.push(e),
            _ => {
                // An unknown escape keeps its backslash; the next byte is read as it is.
                out.push(b'\\');
                i -= 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1, 1, 1) * 86_400_000, MIN_MS as i64);
        for z in [-719_162, -1, 0, 59, 60, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(format_timestamp(MAX_MS as i64), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn reference_timestamps() {
        assert_eq!(
            timestamp("2021-09-17T10:00:00.123+08:00"),
            Some(Ok(1_631_844_000_123))
        );
        assert_eq!(timestamp("1969-12-31T23:59:59.9999z"), Some(Ok(-1)));
        assert_eq!(timestamp("0001-01-01T00:00:00+00:01"), Some(Err(())));
        assert_eq!(timestamp("-62135596800000"), Some(Ok(MIN_MS as i64)));
        assert_eq!(timestamp("2021-02-29T00:00:00Z"), Some(Err(())));
        assert_eq!(timestamp("2021-09-17 10:00:00Z"), None);
        assert_eq!(timestamp(" 5"), None);
    }

    #[test]
    fn reference_amounts() {
        assert_eq!(amount(" 199.00 ", 4), Some(1_990_000));
        assert_eq!(amount("-.5", 4), Some(-5000));
        assert_eq!(amount("0.00010", 4), Some(1));
        assert_eq!(amount("0.00005", 4), None);
        assert_eq!(
            amount("99999999999999.9999", 4),
            Some(999_999_999_999_999_999)
        );
        assert_eq!(amount("100000000000000", 4), None);
        assert_eq!(amount(".", 4), None);
    }

    #[test]
    fn reference_lexers() {
        let (outside, t) = sql_tokens(Sql::Spark, r"SELECT 'a\'b\012', `x``y` FROM t").unwrap();
        assert_eq!(outside, "SELECT \u{1}, \u{1} FROM t");
        assert_eq!(
            t,
            vec![
                Quoted::Literal(b"a'b\n".to_vec()),
                Quoted::Ident(b"x`y".to_vec())
            ]
        );
        let (_, t) = sql_tokens(Sql::ClickHouse, r"SELECT 'a''b\012\q', `x\`y`").unwrap();
        assert_eq!(
            t,
            vec![
                Quoted::Literal(b"a'b\x0012\\q".to_vec()),
                Quoted::Ident(b"x`y".to_vec())
            ]
        );
        assert!(sql_tokens(Sql::ClickHouse, r"SELECT 'a\'").is_err());
    }
}
