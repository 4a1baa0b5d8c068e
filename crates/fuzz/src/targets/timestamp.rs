//! `funnel_core::time`: the timestamp parsers of ingest and of the analysis options.

use funnel_core::time::{
    MAX_MS, MIN_MS, Tz, format_ms, local_ms_to_utc_ms, parse_instant, parse_timezone, parse_ts,
};

use crate::reference;

/// Zones with a fixed offset, a half-hour offset, summer time, and the extreme offset.
const ZONES: [&str; 5] = [
    "UTC",
    "Asia/Shanghai",
    "America/St_Johns",
    "Europe/Berlin",
    "Pacific/Kiritimati",
];

/// The input as text: `parse_ts` and `parse_instant` in several zones, and the first 8 bytes as
/// naive epoch milliseconds (what a Parquet timestamp column without a zone holds).
///
/// Invariants: every accepted instant is in years 1..9999, is formatted by `format_ms` as the
/// reference formats it, and parses back from that text; an accepted text is epoch ms or starts
/// with a four-digit year; `parse_instant` agrees with `parse_ts`, and reads a date as local
/// midnight; on the forms the reference covers (RFC 3339 with `Z` or an offset, epoch ms), the
/// result is the reference's in every zone.
pub fn timestamp(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let zones: Vec<Tz> = ZONES
        .iter()
        .map(|z| parse_timezone(z).expect("known zone"))
        .collect();
    let want = reference::timestamp(&text);
    for tz in &zones {
        let got = parse_ts(&text, tz);
        if let Ok(ms) = got {
            accepted(ms, tz).map_err(|e| format!("{text:?} in {tz}: {e}"))?;
            if !is_epoch_ms(text.trim()) && !four_digit_year(text.trim()) {
                return Err(format!(
                    "{text:?} in {tz}: accepted as {ms} without a four-digit year"
                ));
            }
        }
        match (&want, &got) {
            (None, _) | (Some(Err(())), Err(_)) => {}
            (Some(Ok(a)), Ok(b)) if a == b => {}
            (Some(w), g) => {
                return Err(format!(
                    "{text:?} in {tz}: parse_ts gives {g:?}, the RFC 3339 reference {w:?}"
                ));
            }
        }
        // parse_instant is parse_ts, and also reads a date as its local midnight.
        let instant = parse_instant(&text, tz);
        let agrees = match (&got, &instant) {
            (Ok(a), Ok(b)) => a == b,
            (Ok(_), Err(_)) => false,
            (Err(_), Err(_)) => true,
            (Err(_), Ok(b)) => {
                !text.contains(':')
                    && parse_ts(&format!("{} 00:00:00", text.trim()), tz).as_ref() == Ok(b)
            }
        };
        if !agrees {
            return Err(format!(
                "{text:?} in {tz}: parse_instant gives {instant:?}, parse_ts {got:?}"
            ));
        }
        if let Ok(ms) = instant {
            accepted(ms, tz).map_err(|e| format!("{text:?} in {tz} (instant): {e}"))?;
        }
    }
    if let Some(bytes) = input.get(..8) {
        let local = i64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        for tz in &zones {
            if let Ok(ms) = local_ms_to_utc_ms(local, tz) {
                accepted(ms, tz).map_err(|e| format!("local ms {local} in {tz}: {e}"))?;
                // No zone is more than a day away from UTC.
                if (ms as i128 - local as i128).abs() > 86_400_000 {
                    return Err(format!("local ms {local} in {tz} is {ms} UTC"));
                }
                if tz.to_string() == "UTC" && ms != local {
                    return Err(format!("local ms {local} in UTC is {ms}"));
                }
            }
        }
    }
    Ok(())
}

fn accepted(ms: i64, tz: &Tz) -> Result<(), String> {
    if !(MIN_MS..=MAX_MS).contains(&ms) {
        return Err(format!("accepted {ms}, outside years 1..9999"));
    }
    let text = format_ms(ms);
    let want = reference::format_timestamp(ms);
    if text != want {
        return Err(format!(
            "format_ms({ms}) is {text:?}, the reference {want:?}"
        ));
    }
    match parse_ts(&text, tz) {
        Ok(back) if back == ms => Ok(()),
        other => Err(format!(
            "{text:?} (format_ms of {ms}) parses back as {other:?}"
        )),
    }
}

fn is_epoch_ms(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Every date form of the contract starts `YYYY-`.
fn four_digit_year(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 4 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}
