//! Deduplication (CONTRACT §1) as Spark SQL: which valid rows of a run are new events, exact
//! duplicates, or `duplicate_conflict`s.
//!
//! The first accepted version of an event_id wins: one already in the store, else the run's
//! first valid row of it in (sorted path, row) order. A later row with the same content is a
//! duplicate (counted, not stored); one with other content is a conflict (quarantined). The
//! embedded ingest compares content hashes; here the content itself is compared (every field
//! the hash covers: the contract fields as normalised, the instant, the amount in units and the
//! non-empty properties), which is the relation the hash stands for, without a hash function
//! Spark would have to share with it.

use crate::Dialect;
use funnel_core::rules::{CONFLICT_MESSAGE, UNPARSED_AMOUNT};
use funnel_core::schema::{AMOUNT, AMOUNT_SCALE, CONTRACT_COLUMNS, CURRENCY, EVENT_ID, TS};

/// Text fields of the content: the contract columns but the event_id (the key), the instant,
/// the amount (compared in units) and the currency (compared with its default).
fn text_fields() -> impl Iterator<Item = &'static str> {
    CONTRACT_COLUMNS
        .into_iter()
        .filter(|c| ![EVENT_ID, TS, AMOUNT, CURRENCY].contains(c))
}

/// The verdict of every valid row of `validated` (the rules query's output over a relation
/// with every contract column, null where the export lacks it, plus `_file` and `_row`, the row's input file in sorted path order and its row in the file), against
/// `stored` (the store's events, or `None` for an empty store), as a column `_verdict`:
/// `accepted`, `duplicate` or `duplicate_conflict`, and for a conflict its quarantine
/// `_conflict_field`, `_conflict_value` and `_conflict_message`. Rows the rules rejected are
/// left out.
///
/// `properties` are the export's property columns as (export name, store name); the rules
/// query's unparsed amount is one more. `stored_properties` are the store's property columns.
pub fn dedup_query(
    validated: &str,
    stored: Option<&str>,
    properties: &[(String, String)],
    stored_properties: &[String],
) -> String {
    let d = Dialect::Spark;
    let i = |c: &str| d.ident(c);
    let text = |c: &str| format!("NULLIF({}, '')", i(c));
    // The content of an event: the text fields, the instant, the amount, the currency and the
    // non-empty properties as a sorted array of (key, value) pairs (maps do not compare).
    let content = |ts: &str, amount: &str, currency: &str, props: Vec<(String, String)>| {
        let fields: Vec<String> = text_fields()
            .map(|c| format!("{}, {}", d.string(c), text(c)))
            .collect();
        let pairs: Vec<String> = props
            .iter()
            .map(|(key, value)| format!("named_struct('k', {}, 'v', {value})", d.string(key)))
            .collect();
        format!(
            "named_struct({}, 'ts', {ts}, 'amount', {amount}, 'currency', {currency}, 'props', \
             array_sort(filter(CAST(array({}) AS ARRAY<STRUCT<k: STRING, v: STRING>>), \
             x -> x.v IS NOT NULL)))",
            fields.join(", "),
            pairs.join(", ")
        )
    };
    let mut run_props: Vec<(String, String)> = properties
        .iter()
        .map(|(export, store)| (store.clone(), text(export)))
        .collect();
    run_props.push((UNPARSED_AMOUNT.to_string(), "_unparsed_amount".to_string()));
    let run_content = content("_ts_ms", "_amount_units", "_currency", run_props);
    let run = format!("SELECT *, {run_content} AS _content FROM {validated} WHERE _reason IS NULL");
    let window = "OVER (PARTITION BY r.event_id ORDER BY r._file, r._row)";
    let (stored_verdict, join) = match stored {
        None => (String::new(), String::new()),
        Some(stored) => {
            let stored_content = content(
                &format!("unix_millis({})", i(TS)),
                &format!(
                    "CAST({} * {} AS BIGINT)",
                    i(AMOUNT),
                    10i64.pow(AMOUNT_SCALE)
                ),
                &text(CURRENCY),
                stored_properties
                    .iter()
                    .map(|p| (p.clone(), text(p)))
                    .collect(),
            );
            (
                "WHEN s._stored IS NOT NULL THEN \
                 CASE WHEN s._stored = r._content THEN 'duplicate' ELSE 'duplicate_conflict' END "
                    .to_string(),
                format!(
                    " LEFT JOIN (SELECT event_id AS _sid, {stored_content} AS _stored \
                     FROM {stored}) s ON r.event_id = s._sid"
                ),
            )
        }
    };
    let verdict = format!(
        "CASE {stored_verdict}WHEN row_number() {window} = 1 THEN 'accepted' \
         WHEN first_value(r._content) {window} = r._content THEN 'duplicate' \
         ELSE 'duplicate_conflict' END"
    );
    // A conflict's quarantine columns, as the embedded ingest writes them.
    format!(
        "SELECT *, CASE WHEN _verdict = 'duplicate_conflict' THEN {field} END AS _conflict_field, \
         CASE WHEN _verdict = 'duplicate_conflict' THEN event_id END AS _conflict_value, \
         CASE WHEN _verdict = 'duplicate_conflict' THEN {message} END AS _conflict_message \
         FROM (SELECT r.*, {verdict} AS _verdict FROM ({run}) r{join})",
        field = d.string(EVENT_ID),
        message = d.string(CONFLICT_MESSAGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_version_rule_and_store() {
        let props = [("person_id".to_string(), "src_person_id".to_string())];
        let q = dedup_query("v", None, &props, &[]);
        assert!(q.contains("ORDER BY r._file, r._row") && !q.contains("JOIN"));
        assert!(q.contains(&format!("{CONFLICT_MESSAGE:?}").replace('"', "'")));
        assert!(
            q.contains("'k', 'src_person_id', 'v', NULLIF(`person_id`, '')"),
            "{q}"
        );
        assert!(q.contains("'k', 'src_amount', 'v', _unparsed_amount"));
        let q = dedup_query("v", Some("s"), &props, &["campaign".to_string()]);
        assert!(
            q.contains("LEFT JOIN") && q.contains("'k', 'campaign', 'v', NULLIF(`campaign`, '')")
        );
    }
}
