//! The normalised event: what a valid export row becomes before it is stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use funnel_core::schema::AMOUNT_SCALE;
use xxhash_rust::xxh3::Xxh3;

/// A valid, normalised event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub event_id: String,
    pub user_id: String,
    pub event_type: String,
    /// Epoch milliseconds, UTC.
    pub ts_ms: i64,
    pub platform: Option<String>,
    pub journey: Option<String>,
    pub chat_type: Option<String>,
    pub warning_action: Option<String>,
    pub account_id: Option<String>,
    pub order_id: Option<String>,
    /// Scaled by 10^[`AMOUNT_SCALE`].
    pub amount: Option<i64>,
    pub currency: Option<String>,
    /// Store column name -> value; empty values are never stored.
    pub properties: BTreeMap<String, String>,
    /// Assigned at commit time by identity stitching.
    pub person_id: String,
    pub content_hash: u64,
    pub source_file: Arc<str>,
    pub source_line: u64,
    pub run: u64,
    /// Index of the input file in this run (not stored; 0 for events read from the store).
    pub file: u32,
    /// 1-based row number in the input file (not stored; 0 for events read from the store).
    pub row: u64,
}

impl Event {
    /// Hash of everything the export said about the event (not where it was read from, not the
    /// person it was stitched to). Two rows with one event_id and equal hashes are duplicates.
    pub fn compute_content_hash(&self) -> u64 {
        let mut h = Xxh3::new();
        let mut put = |tag: u8, v: Option<&str>| {
            h.update(&[tag]);
            match v {
                Some(s) => {
                    h.update(&[1]);
                    h.update(&(s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                None => h.update(&[0]),
            }
        };
        put(1, Some(&self.event_id));
        put(2, Some(&self.user_id));
        put(3, Some(&self.event_type));
        put(4, Some(&self.ts_ms.to_string()));
        put(5, self.platform.as_deref());
        put(6, self.journey.as_deref());
        put(7, self.chat_type.as_deref());
        put(8, self.warning_action.as_deref());
        put(9, self.account_id.as_deref());
        put(10, self.order_id.as_deref());
        put(11, self.amount.map(|a| a.to_string()).as_deref());
        put(12, self.currency.as_deref());
        for (k, v) in &self.properties {
            put(13, Some(k));
            put(14, Some(v));
        }
        h.digest()
    }
}

impl Event {
    /// The normalised event as a JSON object (contract columns, then properties), for the
    /// quarantine of a `duplicate_conflict`.
    pub fn to_json(&self) -> String {
        use serde_json::{Map, Value};
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.to_string(), Value::String(v));
            }
        };
        put("event_id", Some(self.event_id.clone()));
        put("user_id", Some(self.user_id.clone()));
        put("event_type", Some(self.event_type.clone()));
        put("ts", Some(funnel_core::time::format_ms(self.ts_ms)));
        put("platform", self.platform.clone());
        put("journey", self.journey.clone());
        put("chat_type", self.chat_type.clone());
        put("warning_action", self.warning_action.clone());
        put("account_id", self.account_id.clone());
        put("order_id", self.order_id.clone());
        put("amount", self.amount.map(format_amount));
        put("currency", self.currency.clone());
        for (k, v) in &self.properties {
            put(k, Some(v.clone()));
        }
        Value::Object(m).to_string()
    }
}

/// Parses a decimal amount (`199`, `199.00`, `-3.5`, `+7`) into units of 10^-AMOUNT_SCALE.
/// Exponents, thousands separators and more than AMOUNT_SCALE significant decimals are refused.
pub(crate) fn parse_amount(text: &str) -> Result<i64, String> {
    let s = text.trim();
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    let digits_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() && frac_part.is_empty() || !digits_ok(int_part) || !digits_ok(frac_part)
    {
        return Err("not a decimal number".into());
    }
    let scale = AMOUNT_SCALE as usize;
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > scale {
        return Err(format!("more than {scale} decimal places"));
    }
    let mut units: i64 = 0;
    for b in int_part.bytes() {
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(i64::from(b - b'0')))
            .ok_or("amount too large")?;
    }
    for i in 0..scale {
        let d = frac_trimmed
            .as_bytes()
            .get(i)
            .map_or(0, |b| i64::from(b - b'0'));
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(d))
            .ok_or("amount too large")?;
    }
    // Keep within Decimal128(18, _).
    if units >= 1_000_000_000_000_000_000 {
        return Err("amount too large".into());
    }
    Ok(if negative { -units } else { units })
}

/// Text of a scaled amount, e.g. 1990000 -> "199.0000".
pub(crate) fn format_amount(units: i64) -> String {
    let scale = 10i64.pow(AMOUNT_SCALE);
    let sign = if units < 0 { "-" } else { "" };
    let a = units.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        a / scale as u64,
        a % scale as u64,
        width = AMOUNT_SCALE as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("199.00"), Ok(1_990_000));
        assert_eq!(parse_amount("199"), Ok(1_990_000));
        assert_eq!(parse_amount(".5"), Ok(5_000));
        assert_eq!(parse_amount("5."), Ok(50_000));
        assert_eq!(parse_amount("0.0001"), Ok(1));
        assert_eq!(parse_amount("1.230000000"), Ok(12_300));
        assert_eq!(parse_amount("-3.5"), Ok(-35_000));
        assert_eq!(parse_amount("+7"), Ok(70_000));
        assert_eq!(parse_amount("-0.00"), Ok(0));
        for bad in [
            "",
            ".",
            "abc",
            "1e3",
            "1,000.00",
            "1.2.3",
            "--1",
            "1.00001",
            "¥12",
            "99999999999999999999",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_amount(1_990_000), "199.0000");
        assert_eq!(format_amount(-35_000), "-3.5000");
        assert_eq!(format_amount(1), "0.0001");
    }

    #[test]
    fn hash_depends_on_content_not_lineage() {
        let a = Event {
            event_id: "e1".into(),
            user_id: "u1".into(),
            event_type: "click".into(),
            ts_ms: 1,
            platform: None,
            journey: Some("external_link".into()),
            chat_type: None,
            warning_action: None,
            account_id: None,
            order_id: None,
            amount: None,
            currency: None,
            properties: BTreeMap::from([("campaign".to_string(), "c1".to_string())]),
            person_id: String::new(),
            content_hash: 0,
            source_file: Arc::from("a.csv"),
            source_line: 2,
            run: 1,
            file: 0,
            row: 0,
        };
        let mut b = a.clone();
        b.source_file = Arc::from("b.jsonl");
        b.source_line = 9;
        b.person_id = "p".into();
        assert_eq!(a.compute_content_hash(), b.compute_content_hash());
        for change in [
            |e: &mut Event| e.ts_ms += 1,
            |e: &mut Event| e.journey = None,
            |e: &mut Event| e.platform = Some("external_link".into()),
            |e: &mut Event| {
                e.properties.insert("item_id".into(), "i".into());
            },
        ] {
            let mut c = a.clone();
            change(&mut c);
            assert_ne!(a.compute_content_hash(), c.compute_content_hash());
        }
    }
}
