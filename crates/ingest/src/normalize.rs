//! Validation and normalisation of one row (CONTRACT §1).
//!
//! Checks run in a fixed order and the first failure is the row's reason:
//! required columns (event_id, user_id, event_type, ts), event_type pattern, ts parse, then the
//! per-type rules (warning_action, account_id, order_id, amount).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono_tz::Tz;
use funnel_core::RejectReason;
use funnel_core::schema::{self, WARNING_ACTIONS, is_valid_event_type};

use crate::event::{Event, parse_amount};
use crate::read::{Cell, Column, Role};
use funnel_core::time::{check_range, local_ms_to_utc_ms, parse_ts};

/// Why a row is rejected, with the offending field and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub reason: RejectReason,
    pub field: Option<String>,
    pub value: Option<String>,
    pub message: String,
}

impl Rejection {
    fn new(reason: RejectReason, value: Option<&str>, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            field: reason.field().map(str::to_string),
            value: value.map(str::to_string),
            message: message.into(),
        }
    }
}

/// Where a row came from, stamped on the stored event.
#[derive(Debug, Clone)]
pub(crate) struct Lineage {
    pub source_file: Arc<str>,
    pub line: u64,
    pub run: u64,
    pub file: u32,
    pub row: u64,
}

/// A row's cells by role, borrowed from the row.
#[derive(Default)]
struct Fields<'a> {
    event_id: Option<Text<'a>>,
    user_id: Option<Text<'a>>,
    event_type: Option<Text<'a>>,
    ts: Option<&'a Cell<'a>>,
    platform: Option<Text<'a>>,
    journey: Option<Text<'a>>,
    chat_type: Option<Text<'a>>,
    warning_action: Option<Text<'a>>,
    account_id: Option<Text<'a>>,
    order_id: Option<Text<'a>>,
    amount: Option<Text<'a>>,
    currency: Option<Text<'a>>,
    properties: BTreeMap<Text<'a>, Text<'a>>,
}

type Text<'a> = Cow<'a, str>;

fn text<'a>(cell: &'a Cell<'a>) -> Option<Text<'a>> {
    let s = match cell {
        Cell::Str(s) => Cow::Borrowed(s.as_ref()),
        Cell::TsUtcMs(ms) | Cell::TsLocalMs(ms) => Cow::Owned(ms.to_string()),
    };
    (!s.is_empty()).then_some(s)
}

fn split<'a>(cells: &'a [(&'a Column, Cell<'a>)]) -> Fields<'a> {
    let mut f = Fields::default();
    for (col, cell) in cells {
        if matches!(&cell, Cell::Str(s) if s.is_empty()) {
            continue; // empty means absent
        }
        let slot = match col.role {
            Role::EventId => &mut f.event_id,
            Role::UserId => &mut f.user_id,
            Role::EventType => &mut f.event_type,
            Role::Ts => {
                f.ts = Some(cell);
                continue;
            }
            Role::Platform => &mut f.platform,
            Role::Journey => &mut f.journey,
            Role::ChatType => &mut f.chat_type,
            Role::WarningAction => &mut f.warning_action,
            Role::AccountId => &mut f.account_id,
            Role::OrderId => &mut f.order_id,
            Role::Amount => &mut f.amount,
            Role::Currency => &mut f.currency,
            Role::Property => {
                if let Some(v) = text(cell) {
                    f.properties.insert(Cow::Borrowed(&col.store_name), v);
                }
                continue;
            }
        };
        *slot = text(cell);
    }
    f
}

/// Validates and normalises one row; the event borrows the row's text.
pub(crate) fn normalize<'a>(
    cells: &'a [(&'a Column, Cell<'a>)],
    tz: &Tz,
    lineage: &Lineage,
) -> Result<Event<'a>, Rejection> {
    use RejectReason::*;
    let mut f = split(cells);
    let event_id = f
        .event_id
        .take()
        .ok_or_else(|| Rejection::new(MissingEventId, None, "event_id is absent or empty"))?;
    let user_id = f
        .user_id
        .take()
        .ok_or_else(|| Rejection::new(MissingUserId, None, "user_id is absent or empty"))?;
    let event_type = f
        .event_type
        .take()
        .ok_or_else(|| Rejection::new(MissingEventType, None, "event_type is absent or empty"))?;
    let ts =
        f.ts.take()
            .ok_or_else(|| Rejection::new(MissingTs, None, "ts is absent or empty"))?;
    if !is_valid_event_type(&event_type) {
        return Err(Rejection::new(
            BadEventType,
            Some(&event_type),
            "event_type does not match [a-z][a-z0-9_]*",
        ));
    }
    let ts_ms = match ts {
        Cell::Str(s) => parse_ts(s, tz).map_err(|m| Rejection::new(BadTimestamp, Some(s), m))?,
        // A Parquet instant: in range like every other (a saturated unit conversion is not).
        Cell::TsUtcMs(ms) => {
            check_range(*ms).map_err(|m| Rejection::new(BadTimestamp, Some(&ms.to_string()), m))?
        }
        Cell::TsLocalMs(ms) => local_ms_to_utc_ms(*ms, tz)
            .map_err(|m| Rejection::new(BadTimestamp, Some(&ms.to_string()), m))?,
    };
    match event_type.as_ref() {
        "warning" => match f.warning_action.as_deref() {
            Some(a) if WARNING_ACTIONS.contains(&a) => {}
            Some(a) => {
                return Err(Rejection::new(
                    BadWarningAction,
                    Some(a),
                    "warning_action is not one of shown, continue, return, report",
                ));
            }
            None => {
                return Err(Rejection::new(
                    BadWarningAction,
                    None,
                    "warning row without warning_action",
                ));
            }
        },
        schema::LOGIN if f.account_id.is_none() => {
            return Err(Rejection::new(
                MissingAccountId,
                None,
                "login row without account_id",
            ));
        }
        "purchase" if f.order_id.is_none() => {
            return Err(Rejection::new(
                MissingOrderId,
                None,
                "purchase row without order_id",
            ));
        }
        _ => {}
    }
    let is_purchase = event_type == "purchase";
    let amount = match f.amount.take() {
        None if is_purchase => {
            return Err(Rejection::new(
                BadAmount,
                None,
                "purchase row without amount",
            ));
        }
        None => None,
        Some(text) => match parse_amount(&text) {
            Ok(units) if units < 0 && is_purchase => {
                return Err(Rejection::new(
                    NegativeAmount,
                    Some(&text),
                    "purchase amount is negative",
                ));
            }
            Ok(units) => Some(units),
            Err(m) if is_purchase => return Err(Rejection::new(BadAmount, Some(&text), m)),
            // Not a purchase: the contract does not reject the row; keep the text as a property.
            Err(_) => {
                f.properties.insert(
                    Cow::Owned(format!("{}amount", schema::RENAMED_PROPERTY_PREFIX)),
                    text,
                );
                None
            }
        },
    };
    let currency = match f.currency.take() {
        None if is_purchase => Some(Cow::Borrowed(schema::DEFAULT_CURRENCY)),
        c => c,
    };
    let mut event = Event {
        event_id,
        user_id,
        event_type,
        ts_ms,
        platform: f.platform,
        journey: f.journey,
        chat_type: f.chat_type,
        warning_action: f.warning_action,
        account_id: f.account_id,
        order_id: f.order_id,
        amount,
        currency,
        properties: f.properties,
        person_id: Cow::Borrowed(""),
        content_hash: 0,
        source_file: lineage.source_file.clone(),
        source_line: lineage.line,
        run: lineage.run,
        file: lineage.file,
        row: lineage.row,
    };
    event.content_hash = event.compute_content_hash();
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_timezone;

    /// A column that lives as long as the test.
    fn col(name: &str) -> &'static Column {
        Box::leak(Box::new(Column::new(name)))
    }

    fn row(pairs: &[(&str, &str)]) -> Vec<(&'static Column, Cell<'static>)> {
        pairs
            .iter()
            .map(|(k, v)| (col(k), Cell::Str(Cow::Owned(v.to_string()))))
            .collect()
    }

    fn run(pairs: &[(&str, &str)]) -> Result<Event<'static>, Rejection> {
        let lineage = Lineage {
            source_file: Arc::from("t.csv"),
            line: 2,
            run: 1,
            file: 0,
            row: 1,
        };
        normalize(
            &row(pairs),
            &parse_timezone("Asia/Shanghai").unwrap(),
            &lineage,
        )
        .map(Event::into_owned)
    }

    const BASE: [(&str, &str); 4] = [
        ("event_id", "e1"),
        ("user_id", "wx_1"),
        ("event_type", "click"),
        ("ts", "2021-09-17T10:00:00+08:00"),
    ];

    fn with(extra: &[(&str, &str)], drop: &[&str]) -> Vec<(&'static str, String)> {
        let mut v: Vec<(&str, String)> = BASE
            .iter()
            .filter(|(k, _)| !drop.contains(k))
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        for (k, val) in extra {
            v.retain(|(kk, _)| kk != k);
            let key: &'static str = Box::leak(k.to_string().into_boxed_str());
            v.push((key, val.to_string()));
        }
        v
    }

    fn reason(extra: &[(&str, &str)], drop: &[&str]) -> Option<(RejectReason, Option<String>)> {
        let v = with(extra, drop);
        let pairs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run(&pairs).err().map(|r| (r.reason, r.value))
    }

    #[test]
    fn valid_click_keeps_properties() {
        let e = run(&[
            ("event_id", "e1"),
            ("user_id", "wx_1"),
            ("event_type", "click"),
            ("ts", "1631844000000"),
            ("journey", "external_link"),
            ("campaign", "autumn"),
            ("person_id", "spoof"),
            ("item_id", ""),
        ])
        .unwrap();
        assert_eq!(e.ts_ms, 1_631_844_000_000);
        assert_eq!(e.journey.as_deref(), Some("external_link"));
        assert_eq!(
            e.properties.get("campaign").map(AsRef::as_ref),
            Some("autumn")
        );
        assert_eq!(
            e.properties.get("src_person_id").map(AsRef::as_ref),
            Some("spoof")
        );
        assert!(!e.properties.contains_key("item_id"), "empty means absent");
        assert_eq!(e.currency, None);
        assert_ne!(e.content_hash, 0);
    }

    #[test]
    fn every_reason_is_reachable() {
        use RejectReason::*;
        assert_eq!(reason(&[], &["event_id"]), Some((MissingEventId, None)));
        assert_eq!(
            reason(&[("event_id", "")], &[]),
            Some((MissingEventId, None))
        );
        assert_eq!(reason(&[], &["user_id"]), Some((MissingUserId, None)));
        assert_eq!(reason(&[], &["event_type"]), Some((MissingEventType, None)));
        assert_eq!(reason(&[], &["ts"]), Some((MissingTs, None)));
        assert_eq!(
            reason(&[("ts", "2021-02-30 10:00:00")], &[]),
            Some((BadTimestamp, Some("2021-02-30 10:00:00".into())))
        );
        assert_eq!(
            reason(&[("event_type", "Click")], &[]),
            Some((BadEventType, Some("Click".into())))
        );
        assert_eq!(
            reason(&[("event_type", "warning")], &[]),
            Some((BadWarningAction, None))
        );
        assert_eq!(
            reason(
                &[("event_type", "warning"), ("warning_action", "ignore")],
                &[]
            ),
            Some((BadWarningAction, Some("ignore".into())))
        );
        assert_eq!(
            reason(&[("event_type", "login")], &[]),
            Some((MissingAccountId, None))
        );
        assert_eq!(
            reason(&[("event_type", "purchase"), ("amount", "1")], &[]),
            Some((MissingOrderId, None))
        );
        assert_eq!(
            reason(&[("event_type", "purchase"), ("order_id", "o1")], &[]),
            Some((BadAmount, None))
        );
        assert_eq!(
            reason(
                &[
                    ("event_type", "purchase"),
                    ("order_id", "o1"),
                    ("amount", "12,00")
                ],
                &[]
            ),
            Some((BadAmount, Some("12,00".into())))
        );
        assert_eq!(
            reason(
                &[
                    ("event_type", "purchase"),
                    ("order_id", "o1"),
                    ("amount", "-1.00")
                ],
                &[]
            ),
            Some((NegativeAmount, Some("-1.00".into())))
        );
    }

    #[test]
    fn first_failing_check_wins() {
        // Both event_id and ts are bad: the required-column check comes first.
        assert_eq!(
            reason(&[("ts", "nonsense")], &["event_id"]).map(|r| r.0),
            Some(RejectReason::MissingEventId)
        );
        // Bad type and bad ts: the type check comes first.
        assert_eq!(
            reason(&[("ts", "nonsense"), ("event_type", "9x")], &[]).map(|r| r.0),
            Some(RejectReason::BadEventType)
        );
    }

    #[test]
    fn valid_typed_rows() {
        let v = with(
            &[
                ("event_type", "purchase"),
                ("order_id", "o1"),
                ("amount", "199.00"),
            ],
            &[],
        );
        let pairs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let e = run(&pairs).unwrap();
        assert_eq!(e.amount, Some(1_990_000));
        assert_eq!(e.currency.as_deref(), Some("CNY"));
        // A zero amount is fine; a refund-like negative amount on a non-purchase row is kept.
        assert!(
            reason(
                &[
                    ("event_type", "purchase"),
                    ("order_id", "o"),
                    ("amount", "0")
                ],
                &[]
            )
            .is_none()
        );
        assert!(reason(&[("event_type", "refund"), ("amount", "-5")], &[]).is_none());
        // Other event names are accepted as they are.
        assert!(reason(&[("event_type", "view")], &[]).is_none());
        for a in WARNING_ACTIONS {
            assert!(reason(&[("event_type", "warning"), ("warning_action", a)], &[]).is_none());
        }
        assert!(reason(&[("event_type", "login"), ("account_id", "acct_1")], &[]).is_none());
    }

    #[test]
    fn unparsable_amount_on_other_rows_is_kept_as_property() {
        let v = with(&[("amount", "n/a")], &[]);
        let pairs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let e = run(&pairs).unwrap();
        assert_eq!(e.amount, None);
        assert_eq!(
            e.properties.get("src_amount").map(AsRef::as_ref),
            Some("n/a")
        );
    }

    #[test]
    fn typed_timestamps() {
        let lineage = Lineage {
            source_file: Arc::from("t.parquet"),
            line: 1,
            run: 1,
            file: 0,
            row: 1,
        };
        let tz = parse_timezone("Asia/Shanghai").unwrap();
        let mut cells = row(&[("event_id", "e"), ("user_id", "u"), ("event_type", "click")]);
        cells.push((col("ts"), Cell::TsLocalMs(1_631_872_800_000))); // 10:00 wall clock
        assert_eq!(
            normalize(&cells, &tz, &lineage).unwrap().ts_ms,
            1_631_844_000_000
        );
        cells.pop();
        cells.push((col("ts"), Cell::TsUtcMs(1_631_844_000_000)));
        assert_eq!(
            normalize(&cells, &tz, &lineage).unwrap().ts_ms,
            1_631_844_000_000
        );
        // Instants outside years 1..9999 (found by fuzzing Parquet input: they were stored, and
        // DuckDB read them as null): rejected like the same text would be.
        use funnel_core::time::{MAX_MS, MIN_MS};
        for ms in [MIN_MS - 1, MAX_MS + 1, i64::MIN + 1, i64::MAX] {
            cells.pop();
            cells.push((col("ts"), Cell::TsUtcMs(ms)));
            let rej = normalize(&cells, &tz, &lineage).unwrap_err();
            assert_eq!(rej.reason, RejectReason::BadTimestamp, "{ms}");
        }
        for ms in [MIN_MS, MAX_MS] {
            cells.pop();
            cells.push((col("ts"), Cell::TsUtcMs(ms)));
            assert_eq!(normalize(&cells, &tz, &lineage).unwrap().ts_ms, ms);
        }
    }
}
