//! The ClickHouse dialect: `windowFunnel(window, modes...)(ts, cond1, ..., condN)` per person.
//!
//! The query returns one row per group and level: `group` (the breakdown key as a JSON object,
//! `{}` for all persons), `level` and `persons`. A step's count is the sum of `persons` over the
//! rows of its group with `level` at least that step (CONTRACT §5).

use funnel_core::{Attribution, FunnelSpec, schema};

/// What the ClickHouse dialect cannot express.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(
        "{source_name}: {option} cannot be expressed exactly in the {dialect} dialect: {reason}"
    )]
    Unsupported {
        source_name: String,
        dialect: &'static str,
        option: String,
        reason: String,
    },
}

/// A string literal: backslash and quote escaped.
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An identifier in backquotes, backquote and backslash escaped.
pub fn quote_identifier(s: &str) -> String {
    format!("`{}`", s.replace('\\', "\\\\").replace('`', "\\`"))
}

/// A table (`db.table`, each part quoted) or a Parquet path or glob (`file(...)`).
fn source_expr(source: &str) -> String {
    if source.contains('/') || source.ends_with(".parquet") {
        format!("file({}, Parquet)", quote_string(source))
    } else {
        source
            .split('.')
            .map(quote_identifier)
            .collect::<Vec<_>>()
            .join(".")
    }
}

fn condition(event_type: &str, filters: &[funnel_core::Filter], extra: Option<&str>) -> String {
    let mut parts = vec![format!(
        "{} = {}",
        quote_identifier(schema::EVENT_TYPE),
        quote_string(event_type)
    )];
    for f in filters {
        let values: Vec<String> = f.values.iter().map(|v| quote_string(v)).collect();
        // A filter on an absent value is false, never NULL.
        parts.push(format!(
            "ifNull({} IN ({}), 0)",
            quote_identifier(&f.column),
            values.join(", ")
        ));
    }
    if let Some(e) = extra {
        parts.push(e.to_string());
    }
    format!("toUInt8({})", parts.join(" AND "))
}

/// The query for `spec` over `source` (a table name or a Parquet path/glob with the store's
/// columns).
pub fn clickhouse(spec: &FunnelSpec, source: &str) -> Result<String, SqlError> {
    let unsupported = |option: &str, reason: &str| SqlError::Unsupported {
        source_name: spec.source.clone(),
        dialect: "clickhouse",
        option: option.to_string(),
        reason: reason.to_string(),
    };
    if spec.is_extended() {
        return Err(unsupported(
            "order, exclusions, optional, within, hold_constant or count = \"attempts\"",
            "windowFunnel has no such option; use the embedded engine",
        ));
    }
    if spec.attribution != Attribution::Step1 {
        return Err(unsupported(
            "attribution",
            "only the step-1 breakdown rule is compiled",
        ));
    }
    if spec.steps.len() > 32 {
        return Err(unsupported(
            "steps",
            "windowFunnel takes at most 32 conditions",
        ));
    }
    let src = source_expr(source);
    let ts = format!(
        "toUInt64(toUnixTimestamp64Milli({}))",
        quote_identifier(schema::TS)
    );
    let params: Vec<String> = std::iter::once(spec.window_ms.to_string())
        .chain(spec.modes.iter().map(|m| quote_string(m.as_str())))
        .collect();
    let funnel = |step1_extra: Option<&str>| -> String {
        let conds: Vec<String> = spec
            .steps
            .iter()
            .enumerate()
            .map(|(k, s)| {
                condition(
                    &s.event_type,
                    &s.filters,
                    if k == 0 { step1_extra } else { None },
                )
            })
            .collect();
        format!(
            "windowFunnel({})({ts}, {})",
            params.join(", "),
            conds.join(", ")
        )
    };
    let person = quote_identifier(schema::PERSON_ID);
    let mut parts = vec![format!(
        "SELECT '{{}}' AS `group`, level, count() AS persons FROM (SELECT {person}, {} AS level FROM {src} GROUP BY {person}) WHERE level > 0 GROUP BY level",
        funnel(None)
    )];
    if !spec.breakdown.is_empty() {
        // Per combination K of breakdown values on step-1 events: step 1 also requires K.
        let cols: Vec<String> = spec.breakdown.iter().map(|c| quote_identifier(c)).collect();
        let keys: Vec<String> = (0..cols.len()).map(|i| format!("k{i}")).collect();
        let key_match: Vec<String> = cols
            .iter()
            .zip(&keys)
            .map(|(c, k)| format!("isNotDistinctFrom(e.{c}, g.{k})"))
            .collect();
        let json: Vec<String> = spec
            .breakdown
            .iter()
            .zip(&keys)
            .map(|(c, k)| {
                format!(
                    "{}, if(isNull({k}), 'null', toJSONString(assumeNotNull({k})))",
                    quote_string(&format!("{}:", serde_key(c)))
                )
            })
            .collect();
        let distinct: Vec<String> = cols
            .iter()
            .zip(&keys)
            .map(|(c, k)| format!("{c} AS {k}"))
            .collect();
        let step1 = condition(&spec.steps[0].event_type, &spec.steps[0].filters, None);
        parts.push(format!(
            "SELECT concat('{{', {json}, '}}') AS `group`, level, count() AS persons FROM (\
             SELECT e.{person}, {keys_g}, {f} AS level FROM {src} AS e CROSS JOIN (SELECT DISTINCT {distinct} FROM {src} WHERE {step1}) AS g \
             GROUP BY e.{person}, {keys_plain}) WHERE level > 0 GROUP BY `group`, level",
            keys_plain = keys.join(", "),
            json = json.join(", ',', "),
            keys_g = keys.iter().map(|k| format!("g.{k} AS {k}")).collect::<Vec<_>>().join(", "),
            f = funnel(Some(&key_match.join(" AND "))),
            distinct = distinct.join(", "),
        ));
    }
    Ok(format!(
        "{}\nORDER BY `group`, level\n",
        parts.join("\nUNION ALL\n")
    ))
}

/// A JSON object key for a column name (as serde_json would write it).
fn serde_key(c: &str) -> String {
    let mut out = String::from("\"");
    for ch in c.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> FunnelSpec {
        funnel_core::parse_funnel(text, "f.toml").unwrap()
    }

    #[test]
    fn literals_and_identifiers_are_escaped() {
        assert_eq!(quote_string("it's"), r"'it\'s'");
        assert_eq!(
            quote_string(r"a\'; DROP TABLE x; --"),
            r"'a\\\'; DROP TABLE x; --'"
        );
        assert_eq!(quote_identifier("we`ird"), r"`we\`ird`");
        assert_eq!(source_expr("db.events"), "`db`.`events`");
        assert_eq!(
            source_expr("/s/current/events/*/*.parquet"),
            "file('/s/current/events/*/*.parquet', Parquet)"
        );
    }

    #[test]
    fn a_hostile_funnel_stays_data() {
        let f = spec(
            r#"
name = "x"
window = "1h"
mode = ["strict_order"]
breakdown = "journey"
[[steps]]
name = "a"
event_type = "click"
where = { journey = ["x') OR 1=1 --", "y\\'z"] }
[[steps]]
name = "b"
event_type = "purchase"
"#,
        );
        let sql = clickhouse(&f, "events").unwrap();
        assert!(sql.contains(r"'x\') OR 1=1 --'"), "{sql}");
        assert!(sql.contains(r"'y\\\'z'"), "{sql}");
        assert!(
            sql.contains("windowFunnel(3600000, 'strict_order')"),
            "{sql}"
        );
        // Outside string literals the text has no injected SQL.
        let mut outside = String::new();
        let mut in_str = false;
        let mut escaped = false;
        for c in sql.chars() {
            if in_str {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '\'' {
                    in_str = false;
                }
            } else if c == '\'' {
                in_str = true;
            } else {
                outside.push(c);
            }
        }
        assert!(
            !outside.contains("1=1") && !outside.contains("--"),
            "{outside}"
        );
    }

    #[test]
    fn what_cannot_be_expressed_is_refused() {
        let f = spec(
            "name = \"x\"\nwindow = \"1h\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n[[steps]]\nname = \"b\"\nevent_type = \"view\"\noptional = true\n",
        );
        let e = clickhouse(&f, "events").unwrap_err().to_string();
        assert!(e.contains("f.toml") && e.contains("optional"), "{e}");
        let many: String = (0..33)
            .map(|i| format!("[[steps]]\nname = \"s{i}\"\nevent_type = \"click\"\n"))
            .collect();
        let e = clickhouse(
            &spec(&format!("name = \"x\"\nwindow = \"1h\"\n{many}")),
            "events",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("32"), "{e}");
    }
}
