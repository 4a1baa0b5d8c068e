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
/// `_conflict_field`, `_conflict_value`, `_conflict_message` and `_conflict_raw` (the event as
/// the embedded quarantine's JSON). Texts are whole: the quarantine writer cuts them to its
/// limit, as it does the embedded ingest's. Rows the rules rejected are left out.
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
         CASE WHEN _verdict = 'duplicate_conflict' THEN {message} END AS _conflict_message, \
         CASE WHEN _verdict = 'duplicate_conflict' THEN {raw} END AS _conflict_raw \
         FROM (SELECT r.*, {verdict} AS _verdict FROM ({run}) r{join})",
        field = d.string(EVENT_ID),
        message = d.string(CONFLICT_MESSAGE),
        raw = event_json(properties),
    )
}

/// A validated row as the normalised event's JSON object, the raw text the embedded ingest
/// quarantines a conflict with: its non-null fields in key order (the store's names), the
/// instant in UTC with milliseconds, the amount with four decimals.
fn event_json(properties: &[(String, String)]) -> String {
    let d = Dialect::Spark;
    let mut fields: Vec<(String, String)> = CONTRACT_COLUMNS
        .iter()
        .map(|c| {
            let value = match *c {
                TS => utc_text("_ts_ms"),
                AMOUNT => amount_text("_amount_units"),
                CURRENCY => "_currency".to_string(),
                // The required fields are non-empty in a valid row.
                _ => format!("NULLIF({}, '')", d.ident(c)),
            };
            (c.to_string(), value)
        })
        .collect();
    for (export, store) in properties {
        fields.push((store.clone(), format!("NULLIF({}, '')", d.ident(export))));
    }
    fields.push((UNPARSED_AMOUNT.to_string(), "_unparsed_amount".to_string()));
    fields.sort();
    let args: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}, {v}", d.string(k)))
        .collect();
    let mut json = format!(
        "to_json(named_struct({}), map('ignoreNullFields', 'true'))",
        args.join(", ")
    );
    // Spark (Jackson) writes `\u001F` where serde_json writes `\u001f`: the six hex letters of
    // the control characters' escapes in lower case, where the backslash before `u` starts an
    // escape (an even number of backslashes before it).
    for letter in ['A', 'B', 'C', 'D', 'E', 'F'] {
        let pattern = format!(r"(?<!\\)((?:\\\\)*)\\u00([01]){letter}");
        let replacement = format!(r"$1\\u00$2{}", letter.to_ascii_lowercase());
        json = format!(
            "regexp_replace({json}, {}, {})",
            d.string(&pattern),
            d.string(&replacement)
        );
    }
    json
}

/// Epoch milliseconds as `funnel_core::time::format_ms` writes them
/// (`2021-09-17T02:00:00.000Z`), by integer arithmetic: no session time zone involved.
fn utc_text(ms: &str) -> String {
    let day = 86_400_000;
    let two = |e: String| format!("lpad(CAST({e} AS STRING), 2, '0')");
    let tod = format!("pmod({ms}, {day})");
    format!(
        "concat(CAST(date_add(DATE'1970-01-01', CAST(({ms} - {tod}) DIV {day} AS INT)) AS STRING), \
         'T', {h}, ':', {mi}, ':', {s}, '.', lpad(CAST({tod} % 1000 AS STRING), 3, '0'), 'Z')",
        h = two(format!("{tod} DIV 3600000")),
        mi = two(format!("{tod} DIV 60000 % 60")),
        s = two(format!("{tod} DIV 1000 % 60")),
    )
}

/// Amount units (10^-4) as the embedded ingest writes an amount (`-12.5000`).
fn amount_text(units: &str) -> String {
    let scale = 10i64.pow(AMOUNT_SCALE);
    format!(
        "concat(CASE WHEN {units} < 0 THEN '-' ELSE '' END, CAST(abs({units}) DIV {scale} AS STRING), \
         '.', lpad(CAST(abs({units}) % {scale} AS STRING), {width}, '0'))",
        width = AMOUNT_SCALE,
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
