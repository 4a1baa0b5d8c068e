//! The normalised event: what a valid export row becomes before it is stored.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use funnel_core::rules::{AMOUNT_TOO_LARGE, AMOUNT_UNITS_LIMIT, NOT_A_DECIMAL, TOO_MANY_DECIMALS};
use funnel_core::schema::AMOUNT_SCALE;

/// A valid, normalised event. Its text borrows from the row it was read from where it can
/// (`Event<'static>` owns it), so validating a row copies no text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub user_id: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    /// Epoch milliseconds, UTC.
    pub ts_ms: i64,
    pub platform: Option<Cow<'a, str>>,
    pub journey: Option<Cow<'a, str>>,
    pub chat_type: Option<Cow<'a, str>>,
    pub warning_action: Option<Cow<'a, str>>,
    pub account_id: Option<Cow<'a, str>>,
    pub order_id: Option<Cow<'a, str>>,
    /// Scaled by 10^[`AMOUNT_SCALE`].
    pub amount: Option<i64>,
    pub currency: Option<Cow<'a, str>>,
    /// Store column name -> value; empty values are never stored.
    pub properties: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    /// Assigned at commit time by identity stitching.
    pub person_id: Cow<'a, str>,
    pub content_hash: u64,
    pub source_file: Arc<str>,
    pub source_line: u64,
    pub run: u64,
    /// Index of the input file in this run (not stored; 0 for events read from the store).
    pub file: u32,
    /// 1-based row number in the input file (not stored; 0 for events read from the store).
    pub row: u64,
}

impl Event<'_> {
    /// Hash of everything the export said about the event (not where it was read from, not the
    /// person it was stitched to). Two rows with one event_id and equal hashes are duplicates.
    ///
    /// The hashed bytes, per field in order: a tag byte, then `0` for an absent value or `1`,
    /// the value's length (u64, little endian) and its bytes; `ts` and `amount` as decimal text;
    /// the properties in key order as key (tag 13) and value (tag 14). One xxh3-64 (seed 0) of
    /// the whole, serialised into a reused buffer (the stored `_content_hash` of every event).
    pub fn compute_content_hash(&self) -> u64 {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            buf.clear();
            let mut put = |tag: u8, v: Option<&[u8]>| {
                buf.push(tag);
                match v {
                    Some(s) => {
                        buf.push(1);
                        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
                        buf.extend_from_slice(s);
                    }
                    None => buf.push(0),
                }
            };
            fn text<'b>(v: &'b Option<Cow<'_, str>>) -> Option<&'b [u8]> {
                v.as_deref().map(str::as_bytes)
            }
            put(1, Some(self.event_id.as_bytes()));
            put(2, Some(self.user_id.as_bytes()));
            put(3, Some(self.event_type.as_bytes()));
            let mut num = [0u8; 24];
            put(4, Some(decimal(self.ts_ms, &mut num)));
            put(5, text(&self.platform));
            put(6, text(&self.journey));
            put(7, text(&self.chat_type));
            put(8, text(&self.warning_action));
            put(9, text(&self.account_id));
            put(10, text(&self.order_id));
            let mut num = [0u8; 24];
            put(11, self.amount.map(|a| decimal(a, &mut num)));
            put(12, text(&self.currency));
            for (k, v) in &self.properties {
                put(13, Some(k.as_bytes()));
                put(14, Some(v.as_bytes()));
            }
            xxhash_rust::xxh3::xxh3_64(buf)
        })
    }
}

/// `n` as decimal text (what `{n}` formats), written at the end of `out`.
fn decimal(n: i64, out: &mut [u8; 24]) -> &[u8] {
    let mut i = out.len();
    let mut u = n.unsigned_abs();
    loop {
        i -= 1;
        out[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        out[i] = b'-';
    }
    &out[i..]
}

impl Event<'_> {
    /// The event with text of its own.
    #[cfg(test)]
    pub fn into_owned(self) -> Event<'static> {
        let own = |c: Option<Cow<'_, str>>| c.map(|c| Cow::Owned(c.into_owned()));
        Event {
            event_id: Cow::Owned(self.event_id.into_owned()),
            user_id: Cow::Owned(self.user_id.into_owned()),
            event_type: Cow::Owned(self.event_type.into_owned()),
            ts_ms: self.ts_ms,
            platform: own(self.platform),
            journey: own(self.journey),
            chat_type: own(self.chat_type),
            warning_action: own(self.warning_action),
            account_id: own(self.account_id),
            order_id: own(self.order_id),
            amount: self.amount,
            currency: own(self.currency),
            properties: self
                .properties
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
                .collect(),
            person_id: Cow::Owned(self.person_id.into_owned()),
            content_hash: self.content_hash,
            source_file: self.source_file,
            source_line: self.source_line,
            run: self.run,
            file: self.file,
            row: self.row,
        }
    }

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
        let own = |v: &Option<Cow<'_, str>>| v.as_deref().map(str::to_string);
        put("event_id", Some(self.event_id.to_string()));
        put("user_id", Some(self.user_id.to_string()));
        put("event_type", Some(self.event_type.to_string()));
        put("ts", Some(funnel_core::time::format_ms(self.ts_ms)));
        put("platform", own(&self.platform));
        put("journey", own(&self.journey));
        put("chat_type", own(&self.chat_type));
        put("warning_action", own(&self.warning_action));
        put("account_id", own(&self.account_id));
        put("order_id", own(&self.order_id));
        put("amount", self.amount.map(format_amount));
        put("currency", own(&self.currency));
        for (k, v) in &self.properties {
            put(k, Some(v.to_string()));
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
        return Err(NOT_A_DECIMAL.into());
    }
    let scale = AMOUNT_SCALE as usize;
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > scale {
        return Err(TOO_MANY_DECIMALS.into());
    }
    let mut units: i64 = 0;
    for b in int_part.bytes() {
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(i64::from(b - b'0')))
            .ok_or(AMOUNT_TOO_LARGE)?;
    }
    for i in 0..scale {
        let d = frac_trimmed
            .as_bytes()
            .get(i)
            .map_or(0, |b| i64::from(b - b'0'));
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(d))
            .ok_or(AMOUNT_TOO_LARGE)?;
    }
    if units >= AMOUNT_UNITS_LIMIT {
        return Err(AMOUNT_TOO_LARGE.into());
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
    fn decimal_is_what_display_writes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut values = vec![
            0,
            1,
            -1,
            9,
            10,
            -10,
            99,
            100,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x as i64 >> (x % 60));
        }
        let mut out = [0u8; 24];
        for n in values {
            assert_eq!(decimal(n, &mut out), n.to_string().as_bytes(), "{n}");
        }
    }

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

    /// The content hash as first written: xxh3 streamed field by field.
    fn streamed_hash(e: &Event<'_>) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
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
        put(1, Some(&e.event_id));
        put(2, Some(&e.user_id));
        put(3, Some(&e.event_type));
        put(4, Some(&e.ts_ms.to_string()));
        put(5, e.platform.as_deref());
        put(6, e.journey.as_deref());
        put(7, e.chat_type.as_deref());
        put(8, e.warning_action.as_deref());
        put(9, e.account_id.as_deref());
        put(10, e.order_id.as_deref());
        put(11, e.amount.map(|a| a.to_string()).as_deref());
        put(12, e.currency.as_deref());
        for (k, v) in &e.properties {
            put(13, Some(k));
            put(14, Some(v));
        }
        h.digest()
    }

    #[test]
    fn hash_is_the_streamed_hash_of_the_same_bytes() {
        for i in 0..2000u64 {
            let mut e = crate::batch::tests::event(i);
            e.ts_ms = (i as i64 - 1000) * 86_400_017_311;
            e.amount = (i % 3 != 0).then_some(i64::MAX - (i as i64) * 999_999_937);
            if i % 5 == 0 {
                e.amount = Some(i64::MIN + i as i64);
            }
            assert_eq!(e.compute_content_hash(), streamed_hash(&e), "event {i}");
        }
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
            properties: BTreeMap::from([("campaign".into(), "c1".into())]),
            person_id: "".into(),
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
