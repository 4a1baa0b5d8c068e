//! The fuzz targets: one function per piece of code under test, and the registry the binary and
//! the corpus tests read.

mod amount;
mod funnel_toml;
mod ingest;
mod sql_quote;
mod timestamp;

pub use amount::amount;
pub use funnel_toml::funnel_toml;
pub use ingest::{csv, csv_gz, jsonl, jsonl_gz, parquet};
pub use sql_quote::sql_quote;
pub use timestamp::timestamp;

/// A fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    /// Runs the code under test on the input; `Err` names the broken invariant.
    pub run: fn(&[u8]) -> Result<(), String>,
    /// Longest input the mutator produces (bounds the memory a run can take).
    pub max_len: usize,
    /// Directories under `corpus/` whose files are the target's seed inputs.
    pub corpus: &'static [&'static str],
    /// Tokens of the input format the mutator inserts.
    pub dictionary: &'static [&'static [u8]],
}

const CSV_TOKENS: &[&[u8]] = &[
    b"event_id,user_id,event_type,ts",
    b",platform,journey,chat_type,warning_action,account_id,order_id,amount,currency",
    b"\"\"",
    b"\",\"",
    b"click",
    b"warning",
    b"login",
    b"purchase",
    b"continue",
    b"shown",
    b"external_link",
    b"event_id",
    b"ts",
    b"amount",
    b"person_id",
    b"source_file",
];

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"\"",
    b"null",
    b"true",
    b"1e999",
    b"-0.0",
    b"\\u0000",
    b"\\ud800",
    b"\\\"",
    b"{\"a\":{\"b\":[1,2,{}]}}",
    b"\"event_id\":",
    b"\"user_id\":",
    b"\"event_type\":\"purchase\"",
    b"\"ts\":",
    b"\"amount\":",
    b"\"order_id\":\"o1\"",
    b"\"account_id\":\"a1\"",
    b"\"warning_action\":\"continue\"",
];

const PARQUET_TOKENS: &[&[u8]] = &[
    b":str",
    b":lstr",
    b":bin",
    b":i32",
    b":i64",
    b":u64",
    b":f32",
    b":f64",
    b":bool",
    b":dec",
    b":date32",
    b":dict",
    b":list",
    b":ts_s",
    b":ts_ms",
    b":ts_us",
    b":ts_ns",
    b":ts_ms_utc",
    b":ts_ns_utc",
    b":ts_ms_sh",
    b"ts:ts_ms_utc",
    b"amount:f64",
    b"amount:dec",
    b"PAR1",
];

const TOML_TOKENS: &[&[u8]] = &[
    b"[[steps]]\nname = \"s\"\nevent_type = \"click\"\n",
    b"[[exclusions]]\nevent_type = \"view\"\n",
    b"name = ",
    b"window = ",
    b"\"1d\"",
    b"\"0s\"",
    b"\"9223372036854775807w\"",
    b"mode = [\"strict_order\", \"allow_reentry\"]",
    b"\"strict_once\"",
    b"where = { journey = [\"a\", \"b\"] }",
    b"where = { \"x\\ny\" = 1.5 }",
    b"breakdown = [\"journey\", \"campaign\"]",
    b"optional = true",
    b"within = \"5m\"",
    b"order = \"any\"",
    b"count = \"attempts\"",
    b"hold_constant = \"item_id\"",
    b"attribution = \"first_touch\"",
    b"after = \"s\"",
    b"before = \"s\"",
    b"\"\"\"",
    b"'''",
    b"#",
    b" = ",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\\u0000",
    b"\\n",
    b"1979-05-27T07:32:00Z",
];

const SQL_TOKENS: &[&[u8]] = &[
    b"'",
    b"\\",
    b"`",
    b"\"",
    b"\\0",
    b"\\u0027",
    b"\\x27",
    b"''",
    b"``",
    b"--",
    b"/*",
    b"*/",
    b"\0",
    b"\x1f",
    b"0",
    b"12",
    b"7",
    b"\\012",
    b";",
    b"%",
    b"_",
    b"\\%",
    b"r'",
    b"$$",
    b".",
    b"/",
    b".parquet",
    b"\n",
];

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    Target {
        name: "csv",
        run: csv,
        max_len: 16 * 1024,
        corpus: &["csv"],
        dictionary: CSV_TOKENS,
    },
    Target {
        name: "csv_gz",
        run: csv_gz,
        max_len: 16 * 1024,
        corpus: &["csv", "gz"],
        dictionary: CSV_TOKENS,
    },
    Target {
        name: "jsonl",
        run: jsonl,
        max_len: 16 * 1024,
        corpus: &["jsonl"],
        dictionary: JSON_TOKENS,
    },
    Target {
        name: "jsonl_gz",
        run: jsonl_gz,
        max_len: 16 * 1024,
        corpus: &["jsonl", "gz"],
        dictionary: JSON_TOKENS,
    },
    Target {
        name: "parquet",
        run: parquet,
        max_len: 16 * 1024,
        corpus: &["parquet"],
        dictionary: PARQUET_TOKENS,
    },
    Target {
        name: "timestamp",
        run: timestamp,
        max_len: 256,
        corpus: &["timestamp"],
        dictionary: &[b"T", b"Z", b"+08:00", b"-", b":", b".", b" "],
    },
    Target {
        name: "amount",
        run: amount,
        max_len: 256,
        corpus: &["amount"],
        dictionary: &[b".", b"-", b"+", b"0", b"9", b" ", b"00000"],
    },
    Target {
        name: "funnel_toml",
        run: funnel_toml,
        max_len: 8 * 1024,
        corpus: &["funnel_toml"],
        dictionary: TOML_TOKENS,
    },
    Target {
        name: "sql_quote",
        run: sql_quote,
        max_len: 4 * 1024,
        corpus: &["sql_quote"],
        dictionary: SQL_TOKENS,
    },
];

/// The target of that name.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// `Err` unless `text` is one line (no line break of any kind) of at most `max` characters.
pub(crate) fn one_line(what: &str, text: &str, max: usize) -> Result<(), String> {
    let breaks = [
        '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}',
    ];
    if let Some(c) = text.chars().find(|c| breaks.contains(c)) {
        return Err(format!("{what} has a line break {c:?}: {text:?}"));
    }
    let n = text.chars().count();
    if n > max {
        let head: String = text.chars().take(200).collect();
        return Err(format!(
            "{what} is {n} characters long (at most {max}): {head:?}..."
        ));
    }
    Ok(())
}
