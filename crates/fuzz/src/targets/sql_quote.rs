//! The SQL quoting of `funnel_sql` (both dialects): every value and column name of a funnel
//! file, and the source, are data in the query, never SQL.

use std::collections::BTreeSet;

use funnel_core::{Attribution, CountUnit, Filter, FunnelSpec, Mode, Order, Step};
use funnel_sql::{Dialect, Plan, PlanOptions};

use crate::reference::{Quoted, Sql, sql_tokens};

/// Separates the strings of an input.
const SEPARATOR: u8 = 0x1f;

/// The input is split at `\x1f` into strings (invalid UTF-8 replaced): the first is the source
/// (table or path), the next (up to 64) in turn an event type, a filter column, a filter value
/// and a breakdown column. The first byte also picks the modes.
///
/// Invariants, per dialect: each string rendered as a literal and as an identifier decodes back
/// to itself under the dialect's lexer (the reference); and the whole query, lexed, has exactly
/// the unquoted text of the same query built from harmless placeholder strings, with every
/// quoted token decoding to the string that its placeholder stands for.
pub fn sql_quote(input: &[u8]) -> Result<(), String> {
    let strings: Vec<String> = input
        .split(|&b| b == SEPARATOR)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let (source, rest) = strings.split_first().expect("split yields one piece");
    // At most 16 steps' worth (the planner's limit is 64 steps).
    let rest = &rest[..rest.len().min(64)];
    let rest = if rest.is_empty() {
        &["click".to_string()][..]
    } else {
        rest
    };
    let modes = input.first().copied().unwrap_or(0);
    let hostile = spec(rest, modes);
    let placeholders: Vec<String> = (0..rest.len()).map(placeholder).collect();
    let harmless = spec(&placeholders, modes);
    let options = PlanOptions {
        from_ms: Some(-62_135_596_800_000),
        to_ms: Some(253_402_300_799_999),
        cutoff_ms: (modes & 0x80 != 0).then_some(-1),
        fold_level: modes & 0x40 != 0,
        interval: (modes & 0x20 != 0).then_some(funnel_core::Interval::Week),
        timezone: "Asia/Shanghai".to_string(),
        split_at_ms: None,
        audit: modes & 0x10 != 0,
        next_by: (modes & 0x08 != 0).then(|| Some("warning_action".to_string())),
    };
    let plan = Plan::new(&hostile, options.clone()).map_err(|e| e.to_string())?;
    let plan0 = Plan::new(&harmless, options).map_err(|e| e.to_string())?;
    let (source0, source_parts) = harmless_source(source);
    for (d, lexer) in [
        (Dialect::Spark, Sql::Spark),
        (Dialect::ClickHouse, Sql::ClickHouse),
    ] {
        for s in rest.iter().chain([source]) {
            round_trip(d, lexer, s)?;
        }
        let sql = funnel_sql::query(&plan, d, source);
        let sql0 = funnel_sql::query(&plan0, d, &source0);
        let (outside, tokens) =
            sql_tokens(lexer, &sql).map_err(|e| format!("{}: {e}:\n{sql}", d.name()))?;
        let (outside0, tokens0) = sql_tokens(lexer, &sql0).expect("the harmless query lexes");
        if outside != outside0 || tokens.len() != tokens0.len() {
            return Err(format!(
                "{}: text escapes the quotes: the query outside quotes differs from that of \
                 harmless strings:\n{outside}\nexpected\n{outside0}",
                d.name()
            ));
        }
        for (got, want) in tokens.iter().zip(&tokens0) {
            let (Quoted::Literal(w) | Quoted::Ident(w)) = want;
            let meant = String::from_utf8_lossy(w);
            let expected = match meant
                .strip_prefix("zz_ph_")
                .and_then(|r| r.strip_suffix("_zz"))
            {
                Some(k) => rest[k.parse::<usize>().expect("placeholder index")].clone(),
                None => match source_parts.iter().position(|p| *p == meant) {
                    Some(i) => source_pieces(source)[i].clone(),
                    None => meant.into_owned(),
                },
            };
            let (Quoted::Literal(g) | Quoted::Ident(g)) = got;
            if std::mem::discriminant(got) != std::mem::discriminant(want)
                || g != expected.as_bytes()
            {
                return Err(format!(
                    "{}: a quoted token reads {:?}, meant {expected:?}",
                    d.name(),
                    String::from_utf8_lossy(g)
                ));
            }
        }
    }
    Ok(())
}

fn round_trip(d: Dialect, lexer: Sql, s: &str) -> Result<(), String> {
    for (kind, text) in [("literal", d.string(s)), ("identifier", d.ident(s))] {
        let decoded = match sql_tokens(lexer, &text) {
            Ok((outside, tokens)) if outside == "\u{1}" && tokens.len() == 1 => tokens,
            other => {
                return Err(format!(
                    "{}: the {kind} {text:?} of {s:?} is not one quoted token: {other:?}",
                    d.name()
                ));
            }
        };
        let want = match kind {
            "literal" => Quoted::Literal(s.as_bytes().to_vec()),
            _ => Quoted::Ident(s.as_bytes().to_vec()),
        };
        if decoded[0] != want {
            return Err(format!(
                "{}: the {kind} {text:?} of {s:?} reads back as {:?}",
                d.name(),
                decoded[0]
            ));
        }
    }
    Ok(())
}

fn placeholder(k: usize) -> String {
    format!("zz_ph_{k}_zz")
}

/// How the source is rendered: a Parquet path (one literal or identifier), or a table name
/// whose dot-separated parts are identifiers.
fn is_path(source: &str) -> bool {
    source.contains('/') || source.ends_with(".parquet")
}

fn source_pieces(source: &str) -> Vec<String> {
    if is_path(source) {
        vec![source.to_string()]
    } else {
        source.split('.').map(str::to_string).collect()
    }
}

/// A harmless source rendered the same way, and the placeholder of each piece.
fn harmless_source(source: &str) -> (String, Vec<String>) {
    let n = source_pieces(source).len();
    let parts: Vec<String> = (0..n).map(|i| format!("zz_src{i}_zz")).collect();
    if is_path(source) {
        let p = format!("/{}", parts[0]);
        (p.clone(), vec![p])
    } else {
        (parts.join("."), parts)
    }
}

/// A funnel of the strings in turn as event type, filter column, filter value and breakdown
/// column (built directly, so strings the file parser would refuse are tried too).
fn spec(strings: &[String], modes: u8) -> FunnelSpec {
    let mut steps: Vec<Step> = Vec::new();
    let mut breakdown = Vec::new();
    for (i, s) in strings.iter().enumerate() {
        match i % 4 {
            0 => steps.push(Step {
                name: format!("s{}", steps.len()),
                event_type: s.clone(),
                filters: Vec::new(),
                optional: false,
                within_ms: None,
            }),
            1 => steps
                .last_mut()
                .expect("a step first")
                .filters
                .push(Filter {
                    column: s.clone(),
                    values: Vec::new(),
                }),
            2 => steps
                .last_mut()
                .and_then(|st| st.filters.last_mut())
                .expect("a filter first")
                .values
                .push(s.clone()),
            _ => breakdown.push(s.clone()),
        }
    }
    for st in &mut steps {
        for f in &mut st.filters {
            if f.values.is_empty() {
                f.values.push(String::new());
            }
        }
    }
    let modes: BTreeSet<Mode> = Mode::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| modes & (1 << i) != 0)
        .map(|(_, m)| m)
        .collect();
    FunnelSpec {
        name: "fuzz".into(),
        window_ms: 3_600_000,
        window: "1h".into(),
        breakdown,
        top: None,
        modes,
        steps,
        order: Order::Strict,
        count: CountUnit::Persons,
        hold_constant: Vec::new(),
        exclusions: Vec::new(),
        attribution: Attribution::Step1,
        source: "fuzz".into(),
    }
}
