//! The row rules of CONTRACT §1 as data: one table that both ingests follow. The embedded ingest
//! (`funnel-ingest`) walks it for every row; the cluster ingest (`funnel-sql`) compiles it to one
//! SQL `CASE` chain. Neither spells a rule, its order or its message anywhere else.
//!
//! A row is checked rule by rule, in table order, and the first rule it fails is its rejection:
//! the rule's reason, the reason's field, the offending value (none when the field is absent) and
//! a message. A rule applies to every row, or only to rows of one event type ([`Rule::on`]; the
//! rules that read the event type come after the one that requires it). It fails when its field
//! is absent and [`Rule::absent`] gives a message for that, or when the field is present and its
//! value fails the rule's [`Check`]. Absent means missing, null or empty.
//!
//! What a valid row becomes besides its values is here too: [`CURRENCY_DEFAULT`] (a purchase
//! without a currency is in CNY) and [`UNPARSED_AMOUNT`] (an amount that no rule requires and that does not
//! parse is kept, as text, in a property).

use crate::schema::{DEFAULT_CURRENCY, LOGIN, PURCHASE, RejectReason, WARNING, WARNING_ACTIONS};

/// What a present value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Anything: the rule only requires the field.
    Any,
    /// `[a-z][a-z0-9_]*` ([`crate::schema::is_valid_event_type`]).
    EventType,
    /// A timestamp ([`crate::time::parse_ts`]: RFC 3339, integer epoch milliseconds, or a local
    /// date-time read in the ingest's zone), in years 1..9999. The message is the parser's.
    Timestamp,
    /// One of these values, exactly.
    OneOf(&'static [&'static str]),
    /// A plain decimal number with at most four decimals (the stored scale), sign allowed. The
    /// message is the parser's.
    Amount,
    /// An amount (already parsed by an earlier [`Check::Amount`] rule) not below zero.
    NonNegative,
}

/// One rule of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The rejection of a row that fails the rule; its field is [`Rule::field`].
    pub reason: RejectReason,
    /// Only rows of this event type; `None`: every row.
    pub on: Option<&'static str>,
    /// The message when the field is absent; `None`: an absent field passes the rule.
    pub absent: Option<&'static str>,
    /// What a present value must be.
    pub check: Check,
    /// The message when a present value fails; `None`: the check's parser gives it.
    pub invalid: Option<&'static str>,
}

impl Rule {
    /// The column the rule reads: its reason's field.
    pub fn field(&self) -> &'static str {
        self.reason
            .field()
            .expect("every row rule's reason names a field")
    }
}

const fn rule(
    reason: RejectReason,
    on: Option<&'static str>,
    absent: Option<&'static str>,
    check: Check,
    invalid: Option<&'static str>,
) -> Rule {
    Rule {
        reason,
        on,
        absent,
        check,
        invalid,
    }
}

/// The row rules, in the order they are checked.
pub const ROW_RULES: [Rule; 11] = {
    use Check::*;
    use RejectReason::*;
    [
        rule(
            MissingEventId,
            None,
            Some("event_id is absent or empty"),
            Any,
            None,
        ),
        rule(
            MissingUserId,
            None,
            Some("user_id is absent or empty"),
            Any,
            None,
        ),
        rule(
            MissingEventType,
            None,
            Some("event_type is absent or empty"),
            Any,
            None,
        ),
        rule(MissingTs, None, Some("ts is absent or empty"), Any, None),
        rule(
            BadEventType,
            None,
            None,
            EventType,
            Some("event_type does not match [a-z][a-z0-9_]*"),
        ),
        rule(BadTimestamp, None, None, Timestamp, None),
        rule(
            BadWarningAction,
            Some(WARNING),
            Some("warning row without warning_action"),
            OneOf(&WARNING_ACTIONS),
            Some("warning_action is not one of shown, continue, return, report"),
        ),
        rule(
            MissingAccountId,
            Some(LOGIN),
            Some("login row without account_id"),
            Any,
            None,
        ),
        rule(
            MissingOrderId,
            Some(PURCHASE),
            Some("purchase row without order_id"),
            Any,
            None,
        ),
        rule(
            BadAmount,
            Some(PURCHASE),
            Some("purchase row without amount"),
            Amount,
            None,
        ),
        rule(
            NegativeAmount,
            Some(PURCHASE),
            None,
            NonNegative,
            Some("purchase amount is negative"),
        ),
    ]
};

/// The currency a valid row of an event type gets when it names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrencyDefault {
    pub on: &'static str,
    pub value: &'static str,
}

/// A purchase without a currency is in CNY.
pub const CURRENCY_DEFAULT: CurrencyDefault = CurrencyDefault {
    on: PURCHASE,
    value: DEFAULT_CURRENCY,
};

/// The grammar of an amount ([`Check::Amount`]) after surrounding white space is trimmed:
/// groups 1 sign, 2 integer digits, 3 fraction digits, one of the two digit runs non-empty.
/// The embedded ingest reads it by hand (`funnel-ingest`'s `parse_amount`), the cluster ingest
/// by this pattern.
pub const AMOUNT_PATTERN: &str = r"^([+-]?)([0-9]*)(?:\.([0-9]*))?$";
/// Amounts are stored in units of 10^-[`AMOUNT_SCALE`](crate::schema::AMOUNT_SCALE) below this many units (Decimal128(18, _)).
pub const AMOUNT_UNITS_LIMIT: i64 = 1_000_000_000_000_000_000;
/// Message of an amount outside [`AMOUNT_PATTERN`].
pub const NOT_A_DECIMAL: &str = "not a decimal number";
/// Message of an amount with more decimals than [`AMOUNT_SCALE`](crate::schema::AMOUNT_SCALE) after its trailing zeros.
pub const TOO_MANY_DECIMALS: &str = "more than 4 decimal places";
/// Message of an amount of [`AMOUNT_UNITS_LIMIT`] units or more.
pub const AMOUNT_TOO_LARGE: &str = "amount too large";

/// The property that keeps the text of an amount that does not parse, on a row whose rules do
/// not require one (not a purchase): the amount column stays empty. It is `amount` with the
/// prefix of renamed columns, so no export column can take the name.
pub const UNPARSED_AMOUNT: &str = "src_amount";

/// The message of a `duplicate_conflict`: a row whose event_id was accepted before (earlier in
/// the run, in sorted path then file order, or in an earlier run) with other content.
pub const CONFLICT_MESSAGE: &str = "event_id was already accepted with different content";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{self, AMOUNT, AMOUNT_SCALE, RENAMED_PROPERTY_PREFIX};

    #[test]
    fn every_rule_reads_the_field_of_its_reason_and_the_type_first() {
        let type_required = ROW_RULES
            .iter()
            .position(|r| r.reason == RejectReason::MissingEventType)
            .unwrap();
        for (i, r) in ROW_RULES.iter().enumerate() {
            assert!(schema::CONTRACT_COLUMNS.contains(&r.field()), "{r:?}");
            if r.on.is_some() {
                assert!(
                    i > type_required,
                    "{r:?} reads the type before it is required"
                );
            }
            // A check that needs the value of an earlier check comes after it.
            if r.check == Check::NonNegative {
                assert!(
                    ROW_RULES[..i]
                        .iter()
                        .any(|p| p.check == Check::Amount && p.on == r.on)
                );
            }
            // Every failure has a message: a fixed one or its parser's.
            let parsed = matches!(r.check, Check::Timestamp | Check::Amount);
            assert_eq!(
                r.invalid.is_none(),
                parsed || r.check == Check::Any,
                "{r:?}"
            );
        }
    }

    #[test]
    fn the_table_covers_every_row_reason_once() {
        let row_reasons: Vec<_> = RejectReason::ALL
            .into_iter()
            .filter(|r| {
                !matches!(
                    r,
                    RejectReason::MalformedRecord
                        | RejectReason::RecordTooLarge
                        | RejectReason::ValueTooLarge
                        | RejectReason::NestedValue
                        | RejectReason::DuplicateConflict
                )
            })
            .collect();
        let mut table: Vec<_> = ROW_RULES.iter().map(|r| r.reason).collect();
        assert_eq!(table.len(), row_reasons.len());
        table.sort_by_key(|r| r.as_str());
        let mut want = row_reasons.clone();
        want.sort_by_key(|r| r.as_str());
        assert_eq!(table, want);
    }

    #[test]
    fn amount_messages_name_the_scale() {
        assert_eq!(
            TOO_MANY_DECIMALS,
            format!("more than {AMOUNT_SCALE} decimal places")
        );
        assert_eq!(AMOUNT_UNITS_LIMIT, 10i64.pow(18));
    }

    #[test]
    fn derived_names() {
        assert_eq!(
            UNPARSED_AMOUNT,
            format!("{RENAMED_PROPERTY_PREFIX}{AMOUNT}")
        );
    }
}
