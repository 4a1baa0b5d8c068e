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
use funnel_core::schema::{AMOUNT, CONTRACT_COLUMNS, CURRENCY, EVENT_ID, TS};

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
/// `accepted`, `duplicate` or `duplicate_conflict`. Rows the rules rejected are left out.
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
    let props = |pairs: Vec<(String, String)>| {
        let items: Vec<String> = pairs
            .iter()
            .map(|(key, value)| format!("named_struct('k', {}, 'v', {value})", d.string(key)))
            .collect();
        if items.is_empty() {
            "array_sort(filter(array(named_struct('k', '', 'v', CAST(NULL AS STRING))), \
             x -> x.v IS NOT NULL))"
                .to_string()
        } else {
            format!(
                "array_sort(filter(array({}), x -> x.v IS NOT NULL))",
                items.join(", ")
            )
        }
    };
    let mut run_props: Vec<(String, String)> = properties
        .iter()
        .map(|(export, store)| (store.clone(), text(export)))
        .collect();
    run_props.push((
        funnel_core::rules::UNPARSED_AMOUNT.to_string(),
        "_unparsed_amount".to_string(),
    ));
    let run_content = format!(
        "named_struct({}, 'ts', _ts_ms, 'amount', _amount_units, 'currency', _currency, \
         'props', {})",
        text_fields()
            .map(|c| format!("{}, {}", d.string(c), text(c)))
            .collect::<Vec<_>>()
            .join(", "),
        props(run_props),
    );
    let run = format!("SELECT *, {run_content} AS _content FROM {validated} WHERE _reason IS NULL");
    let first = "first_value(_content) OVER (PARTITION BY event_id ORDER BY _file, _row)";
    let position = "row_number() OVER (PARTITION BY event_id ORDER BY _file, _row)";
    let Some(stored) = stored else {
        return format!(
            "SELECT *, CASE WHEN {position} = 1 THEN 'accepted' \
             WHEN {first} = _content THEN 'duplicate' ELSE 'duplicate_conflict' END AS _verdict \
             FROM ({run}) r"
        );
    };
    let stored_content = format!(
        "named_struct({}, 'ts', unix_millis({ts}), 'amount', CAST({amount} * 10000 AS BIGINT), \
         'currency', {cur}, 'props', {})",
        text_fields()
            .map(|c| format!("{}, {}", d.string(c), text(c)))
            .collect::<Vec<_>>()
            .join(", "),
        props(
            stored_properties
                .iter()
                .map(|p| (p.clone(), text(p)))
                .collect()
        ),
        ts = i(TS),
        amount = i(AMOUNT),
        cur = text(CURRENCY),
    );
    format!(
        "SELECT r.*, CASE \
         WHEN s._stored IS NOT NULL THEN \
           CASE WHEN s._stored = r._content THEN 'duplicate' ELSE 'duplicate_conflict' END \
         WHEN {position} = 1 THEN 'accepted' \
         WHEN {first} = r._content THEN 'duplicate' ELSE 'duplicate_conflict' END AS _verdict \
         FROM ({run}) r LEFT JOIN (SELECT event_id AS _sid, {stored_content} AS _stored \
         FROM {stored}) s ON r.event_id = s._sid"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_version_rule_and_store() {
        let props = [("person_id".to_string(), "src_person_id".to_string())];
        let q = dedup_query("v", None, &props, &[]);
        assert!(q.contains("ORDER BY _file, _row") && !q.contains("JOIN"));
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
