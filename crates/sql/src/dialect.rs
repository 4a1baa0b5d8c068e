//! Spelling of the few SQL constructs the query needs, per dialect.
//!
//! Everything taken from a funnel file goes through [`Dialect::string`] or
//! [`Dialect::ident`]; nothing else in the query is data.

use crate::Dialect;

impl Dialect {
    /// A string literal. Both dialects read backslash escapes in literals, so backslash and quote
    /// are escaped (a lone backslash could otherwise start `\u0027` in Spark). NUL is escaped
    /// too: `\0` in ClickHouse, but `\u0000` in Spark, which reads `\0` followed by two octal
    /// digits as one octal escape (`\012` is a newline).
    pub fn string(self, s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('\'');
        for c in s.chars() {
            match (c, self) {
                ('\\', _) => out.push_str("\\\\"),
                ('\'', _) => out.push_str("\\'"),
                ('\0', Dialect::Spark) => out.push_str("\\u0000"),
                ('\0', Dialect::ClickHouse) => out.push_str("\\0"),
                (c, _) => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    /// A quoted identifier.
    pub fn ident(self, s: &str) -> String {
        match self {
            // Spark: a backquote inside a quoted identifier is doubled; no backslash escapes.
            Dialect::Spark => format!("`{}`", s.replace('`', "``")),
            Dialect::ClickHouse => format!("`{}`", s.replace('\\', "\\\\").replace('`', "\\`")),
        }
    }

    /// The event source: a table (`db.table`, each part quoted) or a Parquet path or glob.
    pub fn source(self, source: &str) -> String {
        let is_path = source.contains('/') || source.ends_with(".parquet");
        match (self, is_path) {
            (Dialect::Spark, true) => format!("parquet.{}", self.ident(source)),
            (Dialect::ClickHouse, true) => format!("file({}, Parquet)", self.string(source)),
            (_, false) => source
                .split('.')
                .map(|p| self.ident(p))
                .collect::<Vec<_>>()
                .join("."),
        }
    }

    /// `ts` as milliseconds since the epoch.
    pub fn millis(self, column: &str) -> String {
        match self {
            Dialect::Spark => format!("unix_millis({column})"),
            // toDateTime64 lets a table's DateTime (seconds) column serve as well as DateTime64.
            Dialect::ClickHouse => format!("toUnixTimestamp64Milli(toDateTime64({column}, 3))"),
        }
    }

    pub fn iff(self, c: &str, a: &str, b: &str) -> String {
        match self {
            Dialect::Spark => format!("IF({c}, {a}, {b})"),
            Dialect::ClickHouse => format!("if({c}, {a}, {b})"),
        }
    }

    /// `CASE WHEN c1 THEN v1 ... ELSE otherwise END`.
    pub fn cases(self, arms: &[(String, String)], otherwise: &str) -> String {
        match self {
            Dialect::Spark => {
                let mut s = String::from("CASE");
                for (c, v) in arms {
                    s.push_str(&format!(" WHEN {c} THEN {v}"));
                }
                format!("{s} ELSE {otherwise} END")
            }
            Dialect::ClickHouse => {
                let mut parts: Vec<String> = Vec::new();
                for (c, v) in arms {
                    parts.push(c.clone());
                    parts.push(v.clone());
                }
                parts.push(otherwise.to_string());
                format!("multiIf({})", parts.join(", "))
            }
        }
    }

    /// A boolean as the dialect stores it in the fold state.
    pub fn boolean(self, c: &str) -> String {
        match self {
            Dialect::Spark => c.to_string(),
            Dialect::ClickHouse => format!("toUInt8({c})"),
        }
    }

    /// A fold-state boolean as a condition.
    pub fn is_true(self, flag: &str) -> String {
        match self {
            Dialect::Spark => flag.to_string(),
            Dialect::ClickHouse => format!("{flag} = 1"),
        }
    }

    pub fn bool_lit(self, b: bool) -> &'static str {
        match (self, b) {
            (Dialect::Spark, true) => "true",
            (Dialect::Spark, false) => "false",
            (Dialect::ClickHouse, true) => "toUInt8(1)",
            (Dialect::ClickHouse, false) => "toUInt8(0)",
        }
    }

    /// A field of a fold state or entry: by name in Spark structs, by position in ClickHouse
    /// tuples.
    pub fn field(self, value: &str, name: &str, position: usize) -> String {
        match self {
            Dialect::Spark => format!("{value}.{name}"),
            Dialect::ClickHouse => format!("tupleElement({value}, {position})"),
        }
    }

    /// A struct (Spark) or tuple (ClickHouse) of `(name, expression)` fields.
    pub fn record(self, fields: &[(&str, String)]) -> String {
        match self {
            Dialect::Spark => format!(
                "named_struct({})",
                fields
                    .iter()
                    .map(|(n, v)| format!("'{n}', {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Dialect::ClickHouse => format!(
                "tuple({})",
                fields
                    .iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Element `index0` (0-based, always in range) of an array.
    pub fn get(self, array: &str, index0: &str) -> String {
        match self {
            Dialect::Spark => format!("{array}[{index0}]"),
            Dialect::ClickHouse => format!("arrayElement({array}, ({index0}) + 1)"),
        }
    }

    /// The last element of a non-empty array.
    pub fn last(self, array: &str) -> String {
        match self {
            Dialect::Spark => format!("element_at({array}, -1)"),
            Dialect::ClickHouse => format!("arrayElement({array}, -1)"),
        }
    }

    /// The array with each element `v` at 0-based position `j` replaced by `body` (which may
    /// use `v` and `j`).
    pub fn map_indexed(self, array: &str, body: &str) -> String {
        match self {
            Dialect::Spark => format!("transform({array}, (v, j) -> {body})"),
            Dialect::ClickHouse => format!(
                "arrayMap((v, j) -> {body}, {array}, arrayMap(i -> toInt64(i) - 1, arrayEnumerate({array})))"
            ),
        }
    }

    pub fn map(self, array: &str, var: &str, body: &str) -> String {
        match self {
            Dialect::Spark => format!("transform({array}, {var} -> {body})"),
            Dialect::ClickHouse => format!("arrayMap({var} -> {body}, {array})"),
        }
    }

    pub fn filter(self, array: &str, var: &str, body: &str) -> String {
        match self {
            Dialect::Spark => format!("filter({array}, {var} -> {body})"),
            Dialect::ClickHouse => format!("arrayFilter({var} -> {body}, {array})"),
        }
    }

    pub fn exists(self, array: &str, var: &str, body: &str) -> String {
        match self {
            Dialect::Spark => format!("exists({array}, {var} -> {body})"),
            Dialect::ClickHouse => format!("arrayExists({var} -> {body}, {array})"),
        }
    }

    pub fn count_if(self, array: &str, var: &str, body: &str) -> String {
        match self {
            Dialect::Spark => format!("size(filter({array}, {var} -> {body}))"),
            Dialect::ClickHouse => format!("toInt64(arrayCount({var} -> {body}, {array}))"),
        }
    }

    pub fn size(self, array: &str) -> String {
        match self {
            Dialect::Spark => format!("size({array})"),
            Dialect::ClickHouse => format!("toInt64(length({array}))"),
        }
    }

    pub fn contains(self, array: &str, value: &str) -> String {
        match self {
            Dialect::Spark => format!("array_contains({array}, {value})"),
            Dialect::ClickHouse => format!("has({array}, {value})"),
        }
    }

    pub fn append(self, array: &str, value: &str) -> String {
        match self {
            Dialect::Spark => format!("array_append({array}, {value})"),
            Dialect::ClickHouse => format!("arrayPushBack({array}, {value})"),
        }
    }

    pub fn concat(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Spark => format!("concat({a}, {b})"),
            Dialect::ClickHouse => format!("arrayConcat({a}, {b})"),
        }
    }

    /// The last element as a one-element array.
    pub fn keep_last(self, array: &str) -> String {
        match self {
            Dialect::Spark => format!("slice({array}, -1, 1)"),
            Dialect::ClickHouse => format!("arraySlice({array}, -1, 1)"),
        }
    }

    /// The first element as a one-element array (empty for an empty array).
    pub fn keep_first(self, array: &str) -> String {
        match self {
            Dialect::Spark => format!("slice({array}, 1, 1)"),
            Dialect::ClickHouse => format!("arraySlice({array}, 1, 1)"),
        }
    }

    /// `FROM table` with one row per element `alias` of the table's array column `array`
    /// (rows with an empty array left out).
    pub fn explode(self, table: &str, array: &str, alias: &str) -> String {
        match self {
            Dialect::Spark => format!("{table} LATERAL VIEW explode({array}) exploded AS {alias}"),
            Dialect::ClickHouse => format!("{table} ARRAY JOIN {array} AS {alias}"),
        }
    }

    /// The label of the calendar period (`funnel_core::Interval::label`) holding the instant
    /// `ms` (an epoch-milliseconds expression) in the time zone `tz`. The local day is counted
    /// from the local wall clock (the instant shifted by the zone's offset at that instant),
    /// with floor division, so instants before 1970 fall in their own day too; neither engine's
    /// session time zone is read.
    pub fn period(self, interval: funnel_core::Interval, tz: &str, ms: &str) -> String {
        const DAY: i64 = 86_400_000;
        let local = match self {
            Dialect::Spark => format!(
                "unix_millis(from_utc_timestamp(timestamp_millis({ms}), {}))",
                self.string(tz)
            ),
            Dialect::ClickHouse => format!(
                "({ms} + 1000 * toInt64(timeZoneOffset(fromUnixTimestamp64Milli({ms}, {}))))",
                self.string(tz)
            ),
        };
        let floor_mod = match self {
            Dialect::Spark => "pmod",
            Dialect::ClickHouse => "positiveModulo",
        };
        // Days since 1970-01-01 of the local date (an exact division).
        let whole_days = format!("({local} - {floor_mod}({local}, {DAY}))");
        let day = match self {
            Dialect::Spark => format!("({whole_days} DIV {DAY})"),
            Dialect::ClickHouse => format!("intDiv({whole_days}, {DAY})"),
        };
        // 1970-01-01 was a Thursday: Monday-based weekday = (day + 3) mod 7.
        let monday = format!("({day} - {floor_mod}({day} + 3, 7))");
        let date = |days: &str| match self {
            Dialect::Spark => format!("CAST(date_from_unix_date(CAST({days} AS INT)) AS STRING)"),
            Dialect::ClickHouse => {
                format!("toString(addDays(toDate32('1970-01-01'), toInt64({days})))")
            }
        };
        match interval {
            funnel_core::Interval::Day => date(&day),
            funnel_core::Interval::Week => date(&monday),
            funnel_core::Interval::Month => format!("substring({}, 1, 7)", date(&day)),
        }
    }

    pub fn array(self, items: &[String]) -> String {
        match self {
            Dialect::Spark => format!("array({})", items.join(", ")),
            Dialect::ClickHouse => format!("[{}]", items.join(", ")),
        }
    }

    /// `n` copies of `value`, typed `ty` (Spark type, ClickHouse type).
    pub fn repeat(self, value: &str, n: usize) -> String {
        match self {
            Dialect::Spark => format!("array_repeat({value}, {n})"),
            Dialect::ClickHouse => format!("arrayWithConstant({n}, {value})"),
        }
    }

    /// `fold(array, init, (acc, x) -> body)`.
    pub fn fold(self, array: &str, init: &str, body: &str) -> String {
        match self {
            Dialect::Spark => format!("aggregate({array}, {init}, (acc, x) -> {body})"),
            Dialect::ClickHouse => format!("arrayFold((acc, x) -> {body}, {array}, {init})"),
        }
    }

    /// The per-group list of `item`, sorted ascending (structs and tuples compare field by
    /// field).
    pub fn sorted_flat_list(self, items: &str) -> String {
        match self {
            Dialect::Spark => format!("array_sort(flatten(collect_list({items})))"),
            Dialect::ClickHouse => format!("arraySort(arrayFlatten(groupArray({items})))"),
        }
    }

    /// `e` as a 64-bit integer.
    pub fn int64(self, e: &str) -> String {
        match self {
            Dialect::Spark => format!("CAST({e} AS BIGINT)"),
            Dialect::ClickHouse => format!("toInt64({e})"),
        }
    }

    /// The per-group list of `item`, sorted ascending.
    pub fn sorted_list(self, item: &str) -> String {
        match self {
            Dialect::Spark => format!("array_sort(collect_list({item}))"),
            Dialect::ClickHouse => format!("arraySort(groupArray({item}))"),
        }
    }

    /// Null-safe equality.
    pub fn same(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Spark => format!("({a} <=> {b})"),
            Dialect::ClickHouse => {
                format!("(ifNull({a} = {b}, 0) OR ({a} IS NULL AND {b} IS NULL))")
            }
        }
    }

    /// `column IN (values)`, false (never NULL) where the column is absent.
    pub fn is_in(self, column: &str, values: &[String]) -> String {
        let list = values
            .iter()
            .map(|v| self.string(v))
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            Dialect::Spark => format!("COALESCE({column} IN ({list}), false)"),
            Dialect::ClickHouse => format!("ifNull({column} IN ({list}), 0)"),
        }
    }

    /// `value` where it is one of `kept` (null among them, if kept), else `"(other)"`.
    pub fn kept_or_other(self, value: &str, kept: &[Option<String>]) -> String {
        let other = self.string(funnel_core::schema::OTHER);
        let texts: Vec<String> = kept.iter().flatten().cloned().collect();
        let null = if kept.iter().any(Option::is_none) {
            self.null_text().to_string()
        } else {
            other.clone()
        };
        let listed = if texts.is_empty() {
            self.bool_lit(false).to_string()
        } else {
            self.is_in(value, &texts)
        };
        self.cases(
            &[
                (format!("{value} IS NULL"), null),
                (listed, value.to_string()),
            ],
            &other,
        )
    }

    /// An empty array of strings.
    pub fn empty_texts(self) -> &'static str {
        match self {
            Dialect::Spark => "CAST(array() AS ARRAY<STRING>)",
            Dialect::ClickHouse => "CAST([], 'Array(String)')",
        }
    }

    /// A breakdown value as a nullable string.
    pub fn text(self, e: &str) -> String {
        match self {
            Dialect::Spark => format!("CAST({e} AS STRING)"),
            Dialect::ClickHouse => format!("CAST({e} AS Nullable(String))"),
        }
    }

    pub fn null_text(self) -> &'static str {
        match self {
            Dialect::Spark => "CAST(NULL AS STRING)",
            Dialect::ClickHouse => "CAST(NULL AS Nullable(String))",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_identifiers_are_escaped() {
        for d in [Dialect::Spark, Dialect::ClickHouse] {
            assert_eq!(d.string("it's"), r"'it\'s'");
            assert_eq!(
                d.string(r"a\'; DROP TABLE x; --"),
                r"'a\\\'; DROP TABLE x; --'"
            );
            assert_eq!(d.string(r"\u0027"), r"'\\u0027'");
        }
        // NUL before digits: Spark would read `\012` as an octal escape (a newline).
        assert_eq!(Dialect::Spark.string("\u{0}12"), r"'\u000012'");
        assert_eq!(Dialect::ClickHouse.string("\u{0}12"), r"'\012'");
        assert_eq!(Dialect::Spark.ident("we`ird"), "`we``ird`");
        assert_eq!(Dialect::ClickHouse.ident("we`ird"), r"`we\`ird`");
        assert_eq!(Dialect::ClickHouse.source("db.events"), "`db`.`events`");
        assert_eq!(
            Dialect::ClickHouse.source("/s/current/events/*/*.parquet"),
            "file('/s/current/events/*/*.parquet', Parquet)"
        );
        assert_eq!(
            Dialect::Spark.source("/s/g1/events"),
            "parquet.`/s/g1/events`"
        );
        assert_eq!(Dialect::Spark.source("lake.events"), "`lake`.`events`");
    }
}
