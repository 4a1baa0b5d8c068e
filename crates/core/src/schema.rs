//! Column names and value domains shared by ingest, analysis and the generator.

use std::fmt;

pub const EVENT_ID: &str = "event_id";
pub const USER_ID: &str = "user_id";
pub const EVENT_TYPE: &str = "event_type";
pub const TS: &str = "ts";
pub const PLATFORM: &str = "platform";
pub const JOURNEY: &str = "journey";
pub const CHAT_TYPE: &str = "chat_type";
pub const WARNING_ACTION: &str = "warning_action";
pub const ACCOUNT_ID: &str = "account_id";
pub const ORDER_ID: &str = "order_id";
pub const AMOUNT: &str = "amount";
pub const CURRENCY: &str = "currency";

/// A grouping column the analysis derives instead of reading it: `"before"` or `"after"` an
/// instant (`AnalyzeOptions::split_at_ms`) by the event's time. Only a breakdown may name it;
/// the parentheses keep it apart from every column a store can have.
pub const SPLIT: &str = "(split)";
/// The values of [`SPLIT`]: events before the instant, and at or after it.
pub const SPLIT_BEFORE: &str = "before";
pub const SPLIT_AFTER: &str = "after";

/// The breakdown value of the group of every value outside a funnel's `top` (CONTRACT §9).
pub const OTHER: &str = "(other)";

/// The export columns of CONTRACT §1, in their store order.
pub const CONTRACT_COLUMNS: [&str; 12] = [
    EVENT_ID,
    USER_ID,
    EVENT_TYPE,
    TS,
    PLATFORM,
    JOURNEY,
    CHAT_TYPE,
    WARNING_ACTION,
    ACCOUNT_ID,
    ORDER_ID,
    AMOUNT,
    CURRENCY,
];

/// The person an event belongs to after identity stitching.
pub const PERSON_ID: &str = "person_id";
/// Internal store columns (lineage and dedup); they follow the property columns.
pub const CONTENT_HASH: &str = "_content_hash";
pub const SOURCE_FILE: &str = "_source_file";
pub const SOURCE_LINE: &str = "_source_line";
pub const INGEST_RUN: &str = "_ingest_run";
pub const INTERNAL_COLUMNS: [&str; 4] = [CONTENT_HASH, SOURCE_FILE, SOURCE_LINE, INGEST_RUN];

/// Prefix given to an export column whose name is one of the store's own columns
/// (`person_id` or an internal one), so it is kept as a property without clashing.
pub const RENAMED_PROPERTY_PREFIX: &str = "src_";

/// Decimal scale of the stored `amount` column (`Decimal128(18, 4)`).
pub const AMOUNT_SCALE: u32 = 4;
pub const AMOUNT_PRECISION: u8 = 18;

/// Currency stored on purchase rows that name none.
pub const DEFAULT_CURRENCY: &str = "CNY";

/// The event type that links a user_id to an account_id (CONTRACT §2).
pub const LOGIN: &str = "login";
/// The event type of a purchase: the rows with an order and an amount.
pub const PURCHASE: &str = "purchase";
/// The event type of WeChat's external-link warning page: the rows with a `warning_action`.
pub const WARNING: &str = "warning";

/// Valid values of `warning_action`.
pub const WARNING_ACTIONS: [&str; 4] = ["shown", "continue", "return", "report"];

/// Store name of an export column: contract columns keep their name, a column that clashes with
/// a store column gets [`RENAMED_PROPERTY_PREFIX`], any other name is kept as a property.
pub fn store_column_name(export_name: &str) -> String {
    if export_name == PERSON_ID
        || INTERNAL_COLUMNS.contains(&export_name)
        || export_name.starts_with(RENAMED_PROPERTY_PREFIX)
            && store_column_name_is_renamed(export_name)
    {
        format!("{RENAMED_PROPERTY_PREFIX}{export_name}")
    } else {
        export_name.to_string()
    }
}

/// `src_person_id` in the export would collide with a renamed `person_id`; it is renamed again.
fn store_column_name_is_renamed(name: &str) -> bool {
    let rest = &name[RENAMED_PROPERTY_PREFIX.len()..];
    rest == PERSON_ID
        || INTERNAL_COLUMNS.contains(&rest)
        || rest.starts_with(RENAMED_PROPERTY_PREFIX)
}

/// `[a-z][a-z0-9_]*`: the event-type pattern of CONTRACT §1.
pub fn is_valid_event_type(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// Why a row was quarantined. The names are stable: they appear in the quarantine table, in
/// `rejected_by_reason` and in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    MissingEventId,
    MissingUserId,
    MissingEventType,
    MissingTs,
    BadTimestamp,
    BadEventType,
    BadWarningAction,
    MissingAccountId,
    MissingOrderId,
    BadAmount,
    NegativeAmount,
    MalformedRecord,
    /// A record (CSV) or line (JSON lines) longer than the ingest's record limit.
    RecordTooLarge,
    /// A field longer than the ingest's field limit.
    ValueTooLarge,
    /// A JSON object or array (or a nested Parquet value) in a contract column.
    NestedValue,
    DuplicateConflict,
}

impl RejectReason {
    pub const ALL: [RejectReason; 16] = [
        RejectReason::MissingEventId,
        RejectReason::MissingUserId,
        RejectReason::MissingEventType,
        RejectReason::MissingTs,
        RejectReason::BadTimestamp,
        RejectReason::BadEventType,
        RejectReason::BadWarningAction,
        RejectReason::MissingAccountId,
        RejectReason::MissingOrderId,
        RejectReason::BadAmount,
        RejectReason::NegativeAmount,
        RejectReason::MalformedRecord,
        RejectReason::RecordTooLarge,
        RejectReason::ValueTooLarge,
        RejectReason::NestedValue,
        RejectReason::DuplicateConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MissingEventId => "missing_event_id",
            RejectReason::MissingUserId => "missing_user_id",
            RejectReason::MissingEventType => "missing_event_type",
            RejectReason::MissingTs => "missing_ts",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::BadEventType => "bad_event_type",
            RejectReason::BadWarningAction => "bad_warning_action",
            RejectReason::MissingAccountId => "missing_account_id",
            RejectReason::MissingOrderId => "missing_order_id",
            RejectReason::BadAmount => "bad_amount",
            RejectReason::NegativeAmount => "negative_amount",
            RejectReason::MalformedRecord => "malformed_record",
            RejectReason::RecordTooLarge => "record_too_large",
            RejectReason::ValueTooLarge => "value_too_large",
            RejectReason::NestedValue => "nested_value",
            RejectReason::DuplicateConflict => "duplicate_conflict",
        }
    }

    /// The column the reason is about (`None` for a record that could not be split into fields,
    /// and for reasons that can be about any column: the rejection names it).
    pub fn field(self) -> Option<&'static str> {
        match self {
            RejectReason::MissingEventId | RejectReason::DuplicateConflict => Some(EVENT_ID),
            RejectReason::MissingUserId => Some(USER_ID),
            RejectReason::MissingEventType | RejectReason::BadEventType => Some(EVENT_TYPE),
            RejectReason::MissingTs | RejectReason::BadTimestamp => Some(TS),
            RejectReason::BadWarningAction => Some(WARNING_ACTION),
            RejectReason::MissingAccountId => Some(ACCOUNT_ID),
            RejectReason::MissingOrderId => Some(ORDER_ID),
            RejectReason::BadAmount | RejectReason::NegativeAmount => Some(AMOUNT),
            RejectReason::MalformedRecord
            | RejectReason::RecordTooLarge
            | RejectReason::ValueTooLarge
            | RejectReason::NestedValue => None,
        }
    }

    pub fn parse(s: &str) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_pattern() {
        for ok in ["click", "a", "page_view2", "x_"] {
            assert!(is_valid_event_type(ok), "{ok}");
        }
        for bad in [
            "",
            "Click",
            "1click",
            "_x",
            "click-through",
            "click ",
            "clíck",
        ] {
            assert!(!is_valid_event_type(bad), "{bad}");
        }
    }

    #[test]
    fn reasons_round_trip_and_are_unique() {
        let mut names: Vec<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::parse(r.as_str()), Some(r));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RejectReason::ALL.len());
    }

    #[test]
    fn clashing_columns_are_renamed() {
        assert_eq!(store_column_name("campaign"), "campaign");
        assert_eq!(store_column_name("event_id"), "event_id");
        assert_eq!(store_column_name("person_id"), "src_person_id");
        assert_eq!(store_column_name("_source_file"), "src__source_file");
        assert_eq!(store_column_name("src_person_id"), "src_src_person_id");
        assert_eq!(store_column_name("src_campaign"), "src_campaign");
    }
}
