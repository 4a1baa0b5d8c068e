//! The cluster ingest's rows piped through `funnel spark-worker` on the workers with Spark's
//! `TRANSFORM`: the bucket of a key (the store's hash, which Spark has no function for) and the
//! store's files, written by the embedded ingest's own writers (protocol in the CLI's
//! `worker/mod.rs`). Each query sends JSON lines (JSON escapes tabs and line breaks, which
//! `TRANSFORM`'s text protocol needs) and answers the worker's lines as a column `line`; a
//! writer's lines name the files it wrote, with their sums, for the manifest.
//!
//! A file is one worker's: the rows of one file go to one task (`DISTRIBUTE BY`), sorted so that
//! they come together (`SORT BY`); a worker that meets a key again after another refuses to
//! go on, so a lost order fails the query instead of splitting a file.

use crate::Dialect;

/// The columns of an event relation handed to the writers, in the order of
/// `funnel_ingest::HandedEvent`'s fields: the contract fields as stored (absent is null), the
/// instant in epoch milliseconds (`ts_ms BIGINT`), the amount in units of 10^-4
/// (`amount_units BIGINT`), `properties MAP<STRING, STRING>` (store names, non-empty values),
/// `person_id`, and the lineage `source_file`, `source_line BIGINT` and `run BIGINT`.
pub const HANDED_EVENT_COLUMNS: [&str; 17] = [
    "event_id",
    "user_id",
    "event_type",
    "ts_ms",
    "platform",
    "journey",
    "chat_type",
    "warning_action",
    "account_id",
    "order_id",
    "amount_units",
    "currency",
    "properties",
    "person_id",
    "source_file",
    "source_line",
    "run",
];

/// `s` quoted for the shell (`TRANSFORM` runs its command with `/bin/bash -c`).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` as one shell word: itself when it is a plain word (letters, digits, `-`, `_`, `.`, `/`,
/// `=`), quoted otherwise.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=".contains(&b));
    if plain { s.to_string() } else { shell_quote(s) }
}

/// The SQL string of the shell command that runs `funnel spark-worker ARGS` with the `funnel`
/// binary at `worker` (each argument one shell word).
pub(crate) fn worker_command(worker: &str, args: &[&str]) -> String {
    let mut command = format!("{} spark-worker", shell_quote(worker));
    for a in args {
        command.push(' ');
        command.push_str(&shell_word(a));
    }
    Dialect::Spark.string(&command)
}

/// The event of a row of an event relation ([`HANDED_EVENT_COLUMNS`]) as a struct.
fn event_struct(alias: &str) -> String {
    let d = Dialect::Spark;
    let fields: Vec<String> = HANDED_EVENT_COLUMNS
        .iter()
        .map(|c| format!("{}, {alias}.{}", d.string(c), d.ident(c)))
        .collect();
    format!("named_struct({})", fields.join(", "))
}

/// Pipes `lines` (a subquery yielding `_group`, `_order` and `line STRING`) through the
/// worker command `command`: each `_group` in one task, its lines in `_order` order.
fn piped(lines: &str, command: &str) -> String {
    format!(
        "SELECT TRANSFORM(line) USING {command} AS (line STRING) FROM \
         ({lines} DISTRIBUTE BY _group SORT BY _group, _order)"
    )
}

/// The bucket (of `buckets`) of each key of `keys` (a relation with a column `key STRING`,
/// non-null, distinct): columns `key STRING`, `bucket INT`.
pub fn hash_query(keys: &str, worker: &str, buckets: u32) -> String {
    let d = Dialect::Spark;
    let command = worker_command(worker, &["hash", "--buckets", &buckets.to_string()]);
    format!(
        "SELECT h.key, h.bucket FROM (SELECT from_json(line, {schema}, map('mode', 'FAILFAST')) \
         AS h FROM (SELECT TRANSFORM(request) USING {command} AS (line STRING) FROM \
         (SELECT to_json(named_struct('key', key)) AS request FROM {keys})))",
        schema = d.string("key STRING, bucket INT"),
    )
}

/// Where the writers put a generation's files.
#[derive(Debug, Clone, Copy)]
pub struct Generation<'a> {
    /// The `funnel` binary on the workers.
    pub worker: &'a str,
    /// The generation's directory, as the workers reach it.
    pub dir: &'a str,
    pub generation: u64,
}

/// Relations are table names or aliased subqueries.
///
/// Writes the bucket files of the events of `events` (an event relation with a column
/// `bucket INT` more): one line per file, `{"kind": "events", "file": ..., "sum": ...}`.
/// `properties`: the generation's property columns (sorted).
pub fn write_events_query(
    events: &str,
    g: Generation<'_>,
    properties: &[String],
    row_group_rows: usize,
) -> String {
    let properties = json_array(properties);
    let command = worker_command(
        g.worker,
        &[
            "write-events",
            "--dir",
            g.dir,
            "--generation",
            &g.generation.to_string(),
            "--properties",
            &properties,
            "--row-group-rows",
            &row_group_rows.to_string(),
        ],
    );
    let lines = format!(
        "SELECT e.bucket AS _group, 0 AS _order, \
         to_json(named_struct('bucket', e.bucket, 'event', {event})) AS line FROM (SELECT * FROM {events}) e",
        event = event_struct("e"),
    );
    piped(&lines, &command)
}

/// Writes the event-id index partitions of `new` (an event relation with a column
/// `partition INT` more: the run's new events) and `stored` (columns `partition INT`,
/// `event_id STRING`, `content_hash DECIMAL(20, 0)`: the stored index rows of the same
/// partitions): one line per file, `{"kind": "ids", "file": ..., "sum": ...}`.
pub fn write_ids_query(new: &str, stored: Option<&str>, g: Generation<'_>) -> String {
    let command = worker_command(
        g.worker,
        &[
            "write-ids",
            "--dir",
            g.dir,
            "--generation",
            &g.generation.to_string(),
        ],
    );
    let mut lines = format!(
        "SELECT n.partition AS _group, 0 AS _order, \
         to_json(named_struct('partition', n.partition, 'event', {event})) AS line FROM (SELECT * FROM {new}) n",
        event = event_struct("n"),
    );
    if let Some(stored) = stored {
        // The hash is an unsigned 64-bit integer (Spark reads it as a decimal); JSON numbers
        // carry it whole.
        lines.push_str(&format!(
            " UNION ALL SELECT s.partition AS _group, 0 AS _order, \
             to_json(named_struct('partition', s.partition, 'event_id', s.event_id, \
             'content_hash', CAST(s.content_hash AS DECIMAL(20, 0)))) AS line \
             FROM (SELECT * FROM {stored}) s"
        ));
    }
    piped(&lines, &command)
}

/// Writes a run's quarantine file at `path` from `rows` (columns `_order`, an order key, and
/// the quarantine's `run`, `source_file`, `line`, `row`, `reason`, `field`, `value`,
/// `message`, `raw`) in `_order` order, in one task: one line,
/// `{"kind": "quarantine", "sum": ...}`, or none when there is no row.
pub fn write_quarantine_query(rows: &str, worker: &str, path: &str) -> String {
    let command = worker_command(worker, &["write-quarantine", "--path", path]);
    let lines = format!(
        "SELECT 0 AS _group, q._order, to_json(named_struct('run', q.run, \
         'source_file', q.source_file, 'line', q.line, 'row', q.row, 'reason', q.reason, \
         'field', q.field, 'value', q.value, 'message', q.message, 'raw', q.raw)) AS line \
         FROM (SELECT * FROM {rows}) q"
    );
    piped(&lines, &command)
}

/// Writes the identity file at `path` from `links` (columns `v`, an id, and `l`, its
/// person_id), in id order, in one task: one line, `{"kind": "identity", "sum": ...}`, or none
/// when there is no link.
pub fn write_identity_query(links: &str, worker: &str, path: &str) -> String {
    let command = worker_command(worker, &["write-identity", "--path", path]);
    let lines = format!(
        "SELECT 0 AS _group, k.v AS _order, \
         to_json(named_struct('id', k.v, 'person_id', k.l)) AS line FROM (SELECT * FROM {links}) k"
    );
    piped(&lines, &command)
}

/// `items` as a JSON array of strings.
fn json_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_command_is_quoted_for_the_shell_and_for_sql() {
        let c = worker_command(
            "/opt/it's here/funnel",
            &["write-quarantine", "--path", "/a b"],
        );
        assert_eq!(
            c,
            r"'\'/opt/it\'\\\'\'s here/funnel\' spark-worker write-quarantine --path \'/a b\''"
        );
    }

    #[test]
    fn property_names_reach_the_worker_as_a_json_array() {
        let names = ["a\"b".to_string(), "c\\d\n".to_string(), "中".to_string()];
        assert_eq!(json_array(&names), r#"["a\"b","c\\d\u000a","中"]"#);
        assert_eq!(json_array(&[]), "[]");
    }

    #[test]
    fn a_file_goes_whole_to_one_task_in_order() {
        let g = Generation {
            worker: "/bin/funnel",
            dir: "/s/g000002",
            generation: 2,
        };
        let q = write_events_query("ev", g, &["note".into()], 40);
        assert!(
            q.contains("DISTRIBUTE BY _group SORT BY _group, _order"),
            "{q}"
        );
        assert!(
            q.contains(r#"--properties \'["note"]\' --row-group-rows 40'"#),
            "{q}"
        );
        assert!(q.contains("'source_line', e.`source_line`"), "{q}");
        let q = write_ids_query("n", Some("s"), g);
        assert!(
            q.contains("UNION ALL") && q.contains("DECIMAL(20, 0)"),
            "{q}"
        );
        assert!(!write_ids_query("n", None, g).contains("UNION ALL"));
        let q = hash_query("k", "/bin/funnel", 64);
        assert!(q.contains(r"spark-worker hash --buckets 64'"), "{q}");
    }
}
