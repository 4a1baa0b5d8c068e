//! Validation and normalisation of one row (CONTRACT §1), by the rule table of
//! [`funnel_core::rules`]: its rules run in order and the first failure is the row's reason.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono_tz::Tz;
use funnel_core::RejectReason;
use funnel_core::rules::{CURRENCY_DEFAULT, Check, ROW_RULES, UNPARSED_AMOUNT};
use funnel_core::schema::{self, is_valid_event_type};

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
    let s = cell.value_text();
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

impl<'a> Fields<'a> {
    /// The text of a contract field a rule reads (`ts` is a cell, read by [`parse_cell`]).
    fn get(&self, field: &str) -> Option<&Text<'a>> {
        match field {
            schema::EVENT_ID => self.event_id.as_ref(),
            schema::USER_ID => self.user_id.as_ref(),
            schema::EVENT_TYPE => self.event_type.as_ref(),
            schema::WARNING_ACTION => self.warning_action.as_ref(),
            schema::ACCOUNT_ID => self.account_id.as_ref(),
            schema::ORDER_ID => self.order_id.as_ref(),
            schema::AMOUNT => self.amount.as_ref(),
            _ => unreachable!("no row rule reads {field}"),
        }
    }
}

/// A timestamp cell in epoch milliseconds (UTC), or why not, with the offending text.
fn parse_cell(cell: &Cell<'_>, tz: &Tz) -> Result<i64, (String, String)> {
    match cell {
        Cell::Str(s) => parse_ts(s, tz).map_err(|m| (s.to_string(), m)),
        // A Parquet instant: in range like every other (a saturated unit conversion is not).
        Cell::TsUtcMs(ms) => check_range(*ms).map_err(|m| (cell.ts_text(), m)),
        // A wall clock outside years 1..9999 is refused as the same instant would be (no text
        // of the grammar writes it); any other is read in the zone. Both are quoted as
        // `Cell::ts_text` gives them to a cluster's rules.
        Cell::TsLocalMs(ms) => check_range(*ms)
            .and_then(|_| local_ms_to_utc_ms(*ms, tz))
            .map_err(|m| (cell.ts_text(), m)),
    }
}

/// Validates and normalises one row; the event borrows the row's text. The checks are the
/// rows of [`ROW_RULES`], in order.
pub(crate) fn normalize<'a>(
    cells: &'a [(&'a Column, Cell<'a>)],
    tz: &Tz,
    lineage: &Lineage,
) -> Result<Event<'a>, Rejection> {
    let mut f = split(cells);
    let mut ts_ms = None;
    let mut amount = None;
    for rule in &ROW_RULES {
        if rule.on.is_some_and(|t| f.event_type.as_deref() != Some(t)) {
            continue;
        }
        // A present value that fails: the rule's message, else its parser's.
        let fail = |value: &str, message: &str| {
            Err(Rejection::new(
                rule.reason,
                Some(value),
                rule.invalid.unwrap_or(message),
            ))
        };
        let present = match rule.field() {
            schema::TS => f.ts.is_some(),
            field => f.get(field).is_some(),
        };
        if !present {
            match rule.absent {
                Some(message) => return Err(Rejection::new(rule.reason, None, message)),
                None => continue,
            }
        }
        // The text of the rule's field, present (ts is read by the Timestamp check alone).
        let text = || f.get(rule.field()).map_or("", AsRef::as_ref);
        match rule.check {
            Check::Any => {}
            Check::Timestamp => match f.ts.map(|cell| parse_cell(cell, tz)) {
                Some(Ok(ms)) => ts_ms = Some(ms),
                Some(Err((value, message))) => return fail(&value, &message),
                None => {}
            },
            Check::EventType if is_valid_event_type(text()) => {}
            Check::OneOf(values) if values.contains(&text()) => {}
            Check::Amount => match parse_amount(text()) {
                Ok(units) => amount = Some(units),
                Err(message) => return fail(text(), &message),
            },
            Check::NonNegative if amount.is_none_or(|units| units >= 0) => {}
            Check::EventType | Check::OneOf(_) | Check::NonNegative => return fail(text(), ""),
        }
    }
    let (Some(event_id), Some(user_id), Some(event_type), Some(ts_ms)) = (
        f.event_id.take(),
        f.user_id.take(),
        f.event_type.take(),
        ts_ms,
    ) else {
        unreachable!("the row rules require event_id, user_id, event_type and ts")
    };
    // An amount no rule parsed: kept when it parses, else its text is kept as a property.
    let amount = match (amount, f.amount.take()) {
        (Some(units), _) => Some(units),
        (None, None) => None,
        (None, Some(text)) => match parse_amount(&text) {
            Ok(units) => Some(units),
            Err(_) => {
                f.properties.insert(Cow::Borrowed(UNPARSED_AMOUNT), text);
                None
            }
        },
    };
    let currency = match f.currency.take() {
        None if event_type == CURRENCY_DEFAULT.on => Some(Cow::Borrowed(CURRENCY_DEFAULT.value)),
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
    use funnel_core::schema::WARNING_ACTIONS;

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
    fn messages_of_an_absent_and_of_a_bad_value_differ() {
        let message = |extra: &[(&str, &str)]| {
            let v = with(extra, &[]);
            let pairs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
            run(&pairs).unwrap_err().message
        };
        assert_eq!(
            message(&[("event_type", "warning")]),
            "warning row without warning_action"
        );
        assert_eq!(
            message(&[("event_type", "warning"), ("warning_action", "x")]),
            "warning_action is not one of shown, continue, return, report"
        );
        assert_eq!(
            message(&[("event_type", "purchase"), ("order_id", "o")]),
            "purchase row without amount"
        );
        assert_eq!(
            message(&[
                ("event_type", "purchase"),
                ("order_id", "o"),
                ("amount", "x")
            ]),
            "not a decimal number"
        );
        assert_eq!(
            message(&[("ts", "x")]),
            "not RFC 3339, epoch milliseconds or a local date-time"
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
        // A wall clock past 9999 is refused even where its instant would not be (Shanghai is
        // eight hours ahead), quoted by its digits; one in a daylight-saving gap (Shanghai,
        // 1988-04-17 02:30) by its text.
        cells.pop();
        cells.push((col("ts"), Cell::TsLocalMs(MAX_MS + 1)));
        let rej = normalize(&cells, &tz, &lineage).unwrap_err();
        assert_eq!(
            rej.value.as_deref(),
            Some((MAX_MS + 1).to_string().as_str())
        );
        cells.pop();
        cells.push((col("ts"), Cell::TsLocalMs(577_247_400_000)));
        let rej = normalize(&cells, &tz, &lineage).unwrap_err();
        assert_eq!(
            rej.value.as_deref(),
            Some("1988-04-17T02:30:00.000"),
            "{rej:?}"
        );
    }
}
