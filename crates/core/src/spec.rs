//! Funnel definitions (CONTRACT §4): the TOML file format, parsed and validated once, and shared
//! by every executor (the embedded kernel now, generated SQL for cluster engines later).

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::mode::{Mode, ModeSet};
use crate::schema;

/// Most steps a funnel may have (step masks are 64-bit).
pub const MAX_STEPS: usize = 64;

/// `column IN (values)`; false on events where the column is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filter {
    pub column: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub name: String,
    pub event_type: String,
    /// All must hold (AND); each is a set of accepted values (OR).
    pub filters: Vec<Filter>,
    /// The chain may skip this step (extension).
    pub optional: bool,
    /// Largest gap in milliseconds from the previous matched step (extension).
    pub within_ms: Option<i64>,
}

/// An event filter that invalidates a chain between two steps (extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exclusion {
    pub event_type: String,
    pub filters: Vec<Filter>,
    /// 0-based index of the step after which the exclusion applies.
    pub after: usize,
    /// 0-based index of the step before which it applies.
    pub before: usize,
}

/// In which order the steps must happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Step by step (windowFunnel).
    Strict,
    /// In any order within the window from the earliest matched step (extension).
    Any,
}

/// What a funnel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountUnit {
    Persons,
    /// Every step-1 event starts an attempt, counted on its own (extension).
    Attempts,
}

/// Which step-1 event gives a person's breakdown value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// Per value of the step-1 events, as if step 1 also required it (CONTRACT §5).
    Step1,
    /// The person's earliest step-1 event, one value per person.
    FirstTouch,
    /// The step-1 event of the chain that gave the person's level, one value per person.
    LastTouch,
}

impl Attribution {
    /// The name used in funnel files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Step1 => "step1",
            Attribution::FirstTouch => "first_touch",
            Attribution::LastTouch => "last_touch",
        }
    }
}

/// `top = n` (or `--top n`) for a funnel broken down by `breakdown`: a count of at least 1, and
/// one breakdown column.
pub fn check_top(n: i64, breakdown: &[String]) -> Result<usize, &'static str> {
    if n < 1 {
        return Err("keep at least one value");
    }
    match breakdown.len() {
        0 => Err("top needs a breakdown"),
        1 => usize::try_from(n).map_err(|_| "too large"),
        _ => Err("top works on a breakdown of one column"),
    }
}

/// A validated funnel definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunnelSpec {
    pub name: String,
    /// Conversion window in milliseconds, measured from the step-1 event, inclusive.
    pub window_ms: i64,
    /// The window as written in the file (`1d`).
    pub window: String,
    /// Breakdown columns (of the step-1 event); empty for none.
    pub breakdown: Vec<String>,
    /// Keep the `top` breakdown values with the most step-1 persons; the others form one group
    /// valued [`schema::OTHER`] (CONTRACT §9). One breakdown column only.
    pub top: Option<usize>,
    pub modes: BTreeSet<Mode>,
    pub steps: Vec<Step>,
    pub order: Order,
    pub count: CountUnit,
    pub hold_constant: Vec<String>,
    pub exclusions: Vec<Exclusion>,
    pub attribution: Attribution,
    /// Where the definition came from (a path, for messages).
    pub source: String,
}

impl FunnelSpec {
    pub fn has(&self, mode: Mode) -> bool {
        self.modes.contains(&mode)
    }

    /// The funnel's modes as the kernels and the SQL compiler read them.
    pub fn mode_set(&self) -> ModeSet {
        ModeSet::from(&self.modes)
    }

    /// The first chain extension beyond windowFunnel the funnel uses, named as its option is
    /// written (`order = "any"`, `count = "attempts"`, `hold_constant`, `exclusions`,
    /// `optional (step "x")`, `within (step "x")`); `None` for a plain windowFunnel funnel.
    /// The one rule for "needs the extended kernel" ([`FunnelSpec::is_extended`]), and what a
    /// cluster engine names when it refuses a funnel.
    pub fn extension(&self) -> Option<String> {
        if self.order == Order::Any {
            return Some("order = \"any\"".to_string());
        }
        if self.count == CountUnit::Attempts {
            return Some("count = \"attempts\"".to_string());
        }
        if !self.hold_constant.is_empty() {
            return Some("hold_constant".to_string());
        }
        if !self.exclusions.is_empty() {
            return Some("exclusions".to_string());
        }
        if let Some(s) = self.steps.iter().find(|s| s.optional) {
            return Some(format!("optional (step {:?})", s.name));
        }
        if let Some(s) = self.steps.iter().find(|s| s.within_ms.is_some()) {
            return Some(format!("within (step {:?})", s.name));
        }
        None
    }

    /// True when the funnel uses a chain extension beyond windowFunnel
    /// ([`FunnelSpec::extension`]); such funnels run on the extended kernel.
    pub fn is_extended(&self) -> bool {
        self.extension().is_some()
    }

    /// Every column the funnel reads besides `person_id`, `ts` and `event_type`, sorted.
    pub fn columns(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.breakdown.iter().cloned().collect();
        out.extend(self.hold_constant.iter().cloned());
        for s in &self.steps {
            out.extend(s.filters.iter().map(|f| f.column.clone()));
        }
        for x in &self.exclusions {
            out.extend(x.filters.iter().map(|f| f.column.clone()));
        }
        out.remove(schema::EVENT_TYPE);
        out
    }

    /// Checks that every column the funnel names exists in a store with these property columns.
    pub fn check_columns(&self, properties: &[String]) -> Result<(), SpecError> {
        let known = |c: &str| is_store_column(c, properties);
        let mut named: Vec<(String, &str)> = Vec::new();
        named.extend(
            self.breakdown
                .iter()
                .map(|c| ("breakdown".to_string(), c.as_str())),
        );
        named.extend(
            self.hold_constant
                .iter()
                .map(|c| ("hold_constant".to_string(), c.as_str())),
        );
        for (i, s) in self.steps.iter().enumerate() {
            named.extend(
                s.filters
                    .iter()
                    .map(|f| (format!("steps[{i}].where"), f.column.as_str())),
            );
        }
        for (i, x) in self.exclusions.iter().enumerate() {
            named.extend(
                x.filters
                    .iter()
                    .map(|f| (format!("exclusions[{i}].where"), f.column.as_str())),
            );
        }
        match named
            .into_iter()
            .find(|(key, c)| !(known(c) || (key == "breakdown" && *c == schema::SPLIT)))
        {
            Some((key, c)) => Err(self.invalid(
                &key,
                c,
                format!("no such column in the store ({})", column_list(properties)),
            )),
            None => Ok(()),
        }
    }

    fn invalid(&self, key: &str, value: &str, message: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            source_name: self.source.clone(),
            key: key.to_string(),
            value: value.to_string(),
            message: message.into(),
        }
    }
}

fn column_list(properties: &[String]) -> String {
    let mut all: Vec<&str> = schema::CONTRACT_COLUMNS.to_vec();
    all.push(schema::PERSON_ID);
    all.extend(properties.iter().map(String::as_str));
    format!("columns: {}", all.join(", "))
}

/// A funnel file that cannot be used (exit code 2 in the CLI).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: cannot read funnel file: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: not a valid funnel file: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {key} = {value:?}: {message}")]
    Invalid {
        source_name: String,
        key: String,
        value: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunnel {
    name: String,
    window: String,
    #[serde(default)]
    breakdown: Option<OneOrMany>,
    #[serde(default)]
    top: Option<i64>,
    #[serde(default)]
    mode: Option<OneOrMany>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    count: Option<String>,
    #[serde(default)]
    hold_constant: Option<OneOrMany>,
    #[serde(default)]
    attribution: Option<String>,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    exclusions: Vec<RawExclusion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    event_type: String,
    #[serde(default, rename = "where")]
    filter: toml::Table,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    within: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExclusion {
    event_type: String,
    #[serde(default, rename = "where")]
    filter: toml::Table,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The largest window (and `within`) in milliseconds, so that a timestamp plus a window never
/// overflows.
pub const MAX_WINDOW_MS: i64 = i64::MAX / 4;

/// Parses a window such as `90s`, `30m`, `2h`, `1d`, `1w` into milliseconds.
pub fn parse_window(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let unit_at = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("a unit is required: s, m, h, d or w")?;
    let (num, unit) = t.split_at(unit_at);
    if num.is_empty() {
        return Err("expected a whole number followed by a unit (s, m, h, d, w), e.g. 1d".into());
    }
    let n: i64 = num.parse().map_err(|_| "number too large".to_string())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        other => return Err(format!("unknown unit {other:?} (use s, m, h, d or w)")),
    };
    n.checked_mul(secs * 1000)
        .filter(|ms| *ms <= MAX_WINDOW_MS)
        .ok_or_else(|| "window too large".to_string())
}

/// Columns whose values are not text and cannot be matched by value or broken down by.
const NOT_FILTERABLE: [&str; 2] = [schema::TS, schema::AMOUNT];

/// Whether a store with these `properties` has `column` (a contract column, `person_id`, or a
/// property).
pub fn is_store_column(column: &str, properties: &[String]) -> bool {
    schema::CONTRACT_COLUMNS.contains(&column)
        || column == schema::PERSON_ID
        || properties.iter().any(|p| p == column)
}

/// Whether `column` is a text column of such a store: one a funnel can match by value, break
/// down by, or split destinations by.
pub fn is_text_column(column: &str, properties: &[String]) -> bool {
    is_store_column(column, properties) && !NOT_FILTERABLE.contains(&column)
}

fn check_column(source: &str, key: &str, column: &str) -> Result<(), SpecError> {
    let invalid = |m: &str| SpecError::Invalid {
        source_name: source.to_string(),
        key: key.to_string(),
        value: column.to_string(),
        message: m.to_string(),
    };
    if column.is_empty() {
        return Err(invalid("empty column name"));
    }
    if NOT_FILTERABLE.contains(&column) {
        return Err(invalid(
            "this column is not text; it cannot be matched by value or used as a breakdown",
        ));
    }
    Ok(())
}

/// Reads and validates a funnel file.
pub fn load_funnel(path: &Path) -> Result<FunnelSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_funnel(&text, &path.display().to_string())
}

/// Parses and validates funnel TOML; `source` names it in messages.
pub fn parse_funnel(text: &str, source: &str) -> Result<FunnelSpec, SpecError> {
    let raw: RawFunnel = toml::from_str(text).map_err(|e| SpecError::Syntax {
        source_name: source.to_string(),
        message: one_line(e.to_string().trim_end()),
    })?;
    let invalid = |key: &str, value: &str, message: &str| SpecError::Invalid {
        source_name: source.to_string(),
        key: key.to_string(),
        value: value.to_string(),
        message: message.to_string(),
    };
    if raw.name.trim().is_empty() {
        return Err(invalid("name", &raw.name, "the funnel needs a name"));
    }
    let window_ms = parse_window(&raw.window).map_err(|m| invalid("window", &raw.window, &m))?;
    let mut modes = BTreeSet::new();
    for m in raw.mode.map(OneOrMany::into_vec).unwrap_or_default() {
        let mode = Mode::parse(&m).ok_or_else(|| {
            invalid(
                "mode",
                &m,
                "unknown mode (use strict_order, strict_increase, strict_deduplication, strict_once, allow_reentry)",
            )
        })?;
        modes.insert(mode);
    }
    if modes.contains(&Mode::AllowReentry) && !modes.contains(&Mode::StrictOrder) {
        return Err(invalid(
            "mode",
            "allow_reentry",
            "allow_reentry requires strict_order",
        ));
    }
    let breakdown = raw.breakdown.map(OneOrMany::into_vec).unwrap_or_default();
    for c in &breakdown {
        check_column(source, "breakdown", c)?;
    }
    let mut unique = BTreeSet::new();
    for c in &breakdown {
        if !unique.insert(c) {
            return Err(invalid("breakdown", c, "column named twice"));
        }
    }
    if raw.steps.is_empty() {
        return Err(invalid(
            "steps",
            "[]",
            "a funnel needs at least one [[steps]]",
        ));
    }
    if raw.steps.len() > MAX_STEPS {
        return Err(invalid(
            "steps",
            &raw.steps.len().to_string(),
            &format!("at most {MAX_STEPS} steps"),
        ));
    }
    let mut names = BTreeSet::new();
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (i, s) in raw.steps.into_iter().enumerate() {
        let key = |k: &str| format!("steps[{i}].{k}");
        if s.name.trim().is_empty() {
            return Err(invalid(&key("name"), &s.name, "a step needs a name"));
        }
        if !names.insert(s.name.clone()) {
            return Err(invalid(&key("name"), &s.name, "step names must be unique"));
        }
        if !schema::is_valid_event_type(&s.event_type) {
            return Err(invalid(
                &key("event_type"),
                &s.event_type,
                "not an event type ([a-z][a-z0-9_]*)",
            ));
        }
        let filters = parse_filters(source, &format!("steps[{i}]"), s.filter)?;
        if s.optional && i == 0 {
            return Err(invalid(
                &key("optional"),
                "true",
                "step 1 cannot be optional",
            ));
        }
        let within_ms = match &s.within {
            None => None,
            Some(w) if i == 0 => {
                return Err(invalid(&key("within"), w, "step 1 has no previous step"));
            }
            Some(w) => Some(parse_window(w).map_err(|m| invalid(&key("within"), w, &m))?),
        };
        steps.push(Step {
            name: s.name,
            event_type: s.event_type,
            filters,
            optional: s.optional,
            within_ms,
        });
    }
    let step_index = |key: &str, name: &str| -> Result<usize, SpecError> {
        steps
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| invalid(key, name, "no step of that name"))
    };
    let mut exclusions = Vec::new();
    for (i, x) in raw.exclusions.into_iter().enumerate() {
        let key = |k: &str| format!("exclusions[{i}].{k}");
        if !schema::is_valid_event_type(&x.event_type) {
            return Err(invalid(
                &key("event_type"),
                &x.event_type,
                "not an event type ([a-z][a-z0-9_]*)",
            ));
        }
        let after = match &x.after {
            Some(n) => step_index(&key("after"), n)?,
            None => 0,
        };
        let before = match &x.before {
            Some(n) => step_index(&key("before"), n)?,
            None => steps.len() - 1,
        };
        if after >= before {
            return Err(invalid(
                &key("before"),
                &steps[before].name,
                "must name a step after `after`",
            ));
        }
        for (k, idx) in [("after", after), ("before", before)] {
            if steps[idx].optional {
                return Err(invalid(
                    &key(k),
                    &steps[idx].name,
                    "an exclusion cannot be bounded by an optional step",
                ));
            }
        }
        exclusions.push(Exclusion {
            filters: parse_filters(source, &format!("exclusions[{i}]"), x.filter)?,
            event_type: x.event_type,
            after,
            before,
        });
    }
    let order = match raw.order.as_deref() {
        None | Some("strict") => Order::Strict,
        Some("any") => Order::Any,
        Some(other) => return Err(invalid("order", other, "use \"strict\" or \"any\"")),
    };
    let count = match raw.count.as_deref() {
        None | Some("persons") => CountUnit::Persons,
        Some("attempts") => CountUnit::Attempts,
        Some(other) => return Err(invalid("count", other, "use \"persons\" or \"attempts\"")),
    };
    let attribution = match raw.attribution.as_deref() {
        None | Some("step1") => Attribution::Step1,
        Some("first_touch") => Attribution::FirstTouch,
        Some("last_touch") => Attribution::LastTouch,
        Some(other) => {
            return Err(invalid(
                "attribution",
                other,
                "use \"step1\", \"first_touch\" or \"last_touch\"",
            ));
        }
    };
    if attribution != Attribution::Step1 && breakdown.is_empty() {
        return Err(invalid(
            "attribution",
            raw.attribution.as_deref().unwrap_or_default(),
            "attribution needs a breakdown",
        ));
    }
    let hold_constant = raw
        .hold_constant
        .map(OneOrMany::into_vec)
        .unwrap_or_default();
    for c in &hold_constant {
        check_column(source, "hold_constant", c)?;
    }
    let top = match raw.top {
        None => None,
        Some(n) => Some(check_top(n, &breakdown).map_err(|m| invalid("top", &n.to_string(), m))?),
    };
    let spec = FunnelSpec {
        name: raw.name,
        window_ms,
        window: raw.window,
        breakdown,
        top,
        modes,
        steps,
        order,
        count,
        hold_constant,
        exclusions,
        attribution,
        source: source.to_string(),
    };
    // Extensions run on the extended kernel, which has windowFunnel's default semantics only.
    if spec.is_extended()
        && let Some(m) = spec.modes.iter().next()
    {
        return Err(invalid(
            "mode",
            m.as_str(),
            "modes cannot be combined with order, exclusions, optional, within, hold_constant or count = \"attempts\"",
        ));
    }
    if spec.order == Order::Any {
        let bad = if !spec.exclusions.is_empty() {
            Some("exclusions")
        } else if spec.steps.iter().any(|s| s.within_ms.is_some()) {
            Some("within")
        } else if spec.count == CountUnit::Attempts {
            Some("count = \"attempts\"")
        } else {
            None
        };
        if let Some(b) = bad {
            return Err(invalid(
                "order",
                "any",
                &format!("{b} needs step order (order = \"strict\")"),
            ));
        }
    }
    Ok(spec)
}

/// The parser's message (which quotes the offending line under it) on one line: line breaks
/// become spaces, and other control and line-separator characters of the quoted input escapes.
fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '\n' => out.push(' '),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.extend(c.escape_default())
            }
            c => out.push(c),
        }
    }
    out
}

/// A column name as a TOML key in a message: bare when it can be, else quoted and escaped, so
/// that the message stays one line whatever the name.
fn toml_key(column: &str) -> String {
    let bare = !column.is_empty()
        && column
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        column.to_string()
    } else {
        format!("{column:?}")
    }
}

/// A `where` table: column -> value or list of values.
fn parse_filters(source: &str, key: &str, table: toml::Table) -> Result<Vec<Filter>, SpecError> {
    let invalid = |k: String, value: &str, message: &str| SpecError::Invalid {
        source_name: source.to_string(),
        key: k,
        value: value.to_string(),
        message: message.to_string(),
    };
    let mut filters = Vec::new();
    for (column, value) in table {
        check_column(source, &format!("{key}.where"), &column)?;
        let scalar = |v: &toml::Value| -> Result<String, SpecError> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(n) => Ok(n.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                other => Err(invalid(
                    format!("{key}.where.{}", toml_key(&column)),
                    &other.to_string(),
                    "expected a string or a list of strings",
                )),
            }
        };
        let values = match &value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?,
            v => vec![scalar(v)?],
        };
        if values.is_empty() {
            return Err(invalid(
                format!("{key}.where.{}", toml_key(&column)),
                "[]",
                "an empty list matches nothing",
            ));
        }
        filters.push(Filter { column, values });
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT_EXAMPLE: &str = r#"
name = "external link to purchase"
window = "1d"            # conversion window
breakdown = "journey"

[[steps]]
name = "click"
event_type = "click"
where = { journey = ["external_link", "tao_code"] }

[[steps]]
name = "continue"
event_type = "warning"
where = { warning_action = "continue" }

[[steps]]
name = "purchase"
event_type = "purchase"
"#;

    #[test]
    fn contract_example_parses() {
        let f = parse_funnel(CONTRACT_EXAMPLE, "x.toml").unwrap();
        assert_eq!(f.window_ms, 86_400_000);
        assert_eq!(f.breakdown, vec!["journey"]);
        assert_eq!(f.steps.len(), 3);
        assert_eq!(
            f.steps[0].filters,
            vec![Filter {
                column: "journey".into(),
                values: vec!["external_link".into(), "tao_code".into()]
            }]
        );
        assert!(f.modes.is_empty());
        assert_eq!(
            f.columns().into_iter().collect::<Vec<_>>(),
            vec!["journey".to_string(), "warning_action".to_string()]
        );
        f.check_columns(&[]).unwrap();
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("90s"), Ok(90_000));
        assert_eq!(parse_window("30m"), Ok(1_800_000));
        assert_eq!(parse_window("2h"), Ok(7_200_000));
        assert_eq!(parse_window("1w"), Ok(604_800_000));
        assert_eq!(parse_window("0s"), Ok(0));
        for bad in [
            "",
            "1",
            "d",
            "1x",
            "1.5d",
            "-1d",
            "1 d",
            "99999999999999999999d",
            "9999999999999w",
        ] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
    }

    fn err(text: &str) -> String {
        parse_funnel(text, "f.toml").unwrap_err().to_string()
    }

    const STEP: &str = "[[steps]]\nname = \"click\"\nevent_type = \"click\"\n";

    #[test]
    fn configuration_errors_name_the_key_and_value() {
        let head = "name = \"n\"\nwindow = \"1d\"\n";
        let cases = [
            (
                format!("{head}colour = \"red\"\n{STEP}"),
                "unknown field `colour`",
            ),
            (
                format!("name = \"n\"\nwindow = \"1y\"\n{STEP}"),
                "window = \"1y\"",
            ),
            (head.to_string(), "at least one [[steps]]"),
            (
                format!("{head}mode = [\"fast\"]\n{STEP}"),
                "mode = \"fast\"",
            ),
            (
                format!("{head}mode = [\"allow_reentry\"]\n{STEP}"),
                "allow_reentry requires strict_order",
            ),
            (
                format!("{head}breakdown = \"ts\"\n{STEP}"),
                "breakdown = \"ts\"",
            ),
            (
                format!("{head}{STEP}{STEP}"),
                "steps[1].name = \"click\": step names must be unique",
            ),
            (
                format!("{head}[[steps]]\nname = \"a\"\nevent_type = \"Click\"\n"),
                "steps[0].event_type = \"Click\"",
            ),
            (
                format!(
                    "{head}[[steps]]\nname = \"a\"\nevent_type = \"click\"\nwhere = {{ journey = [] }}\n"
                ),
                "empty list",
            ),
            (
                format!(
                    "{head}[[steps]]\nname = \"a\"\nevent_type = \"click\"\nwhere = {{ amount = \"1\" }}\n"
                ),
                "amount",
            ),
            (
                format!(
                    "{head}[[steps]]\nname = \"a\"\nevent_type = \"click\"\nwhere = {{ journey = 1.5 }}\n"
                ),
                "steps[0].where.journey",
            ),
            (
                // A column name with a line break is quoted: the message stays one line.
                format!(
                    "{head}[[steps]]\nname = \"a\"\nevent_type = \"click\"\nwhere = {{ \"x\\ny z\" = 1.5 }}\n"
                ),
                "steps[0].where.\"x\\ny z\" = \"1.5\"",
            ),
            (
                format!("{head}[[steps]]\nname = \"a\"\nevent_type = \"click\"\nnote = \"x\"\n"),
                "unknown field `note`",
            ),
            (
                "name = \"n\"\nwindow = \n".to_string(),
                "not a valid funnel file",
            ),
            (
                // The parser quotes the line; a carriage return in it is escaped.
                format!("{head}[[steps]]e\r\nname = \"a\"\n"),
                "[[steps]]e\\r",
            ),
        ];
        for (text, needle) in cases {
            let e = err(&text);
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
            assert!(e.starts_with("f.toml") && !e.contains(['\n', '\r']), "{e}");
        }
        let many: String = (0..65)
            .map(|i| format!("[[steps]]\nname = \"s{i}\"\nevent_type = \"click\"\n"))
            .collect();
        assert!(err(&format!("{head}{many}")).contains("at most 64 steps"));
    }

    #[test]
    fn unknown_store_columns_are_reported() {
        let f = parse_funnel(
            "name = \"n\"\nwindow = \"1h\"\nbreakdown = \"campaign\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\nwhere = { item_id = \"i1\" }\n",
            "f.toml",
        )
        .unwrap();
        let e = f.check_columns(&[]).unwrap_err().to_string();
        assert!(e.contains("breakdown = \"campaign\""), "{e}");
        let e = f
            .check_columns(&["campaign".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("steps[0].where = \"item_id\""), "{e}");
        f.check_columns(&["campaign".into(), "item_id".into()])
            .unwrap();
    }

    #[test]
    fn extensions_parse_and_validate() {
        let text = r#"
name = "n"
window = "1d"
hold_constant = "item_id"
breakdown = "journey"
attribution = "last_touch"
count = "attempts"

[[steps]]
name = "click"
event_type = "click"

[[steps]]
name = "continue"
event_type = "warning"
where = { warning_action = "continue" }
optional = true

[[steps]]
name = "login"
event_type = "login"
within = "10m"

[[steps]]
name = "purchase"
event_type = "purchase"

[[exclusions]]
event_type = "warning"
where = { warning_action = "report" }
after = "click"
before = "login"
"#;
        let f = parse_funnel(text, "f.toml").unwrap();
        assert!(f.is_extended());
        assert!(f.steps[1].optional && !f.steps[2].optional);
        assert_eq!(f.steps[2].within_ms, Some(600_000));
        assert_eq!(f.exclusions[0].after, 0);
        assert_eq!(f.exclusions[0].before, 2);
        assert_eq!(f.count, CountUnit::Attempts);
        assert_eq!(f.attribution, Attribution::LastTouch);
        assert!(f.columns().contains("item_id"));
        assert!(
            !parse_funnel(CONTRACT_EXAMPLE, "x.toml")
                .unwrap()
                .is_extended()
        );

        let head = "name = \"n\"\nwindow = \"1d\"\n";
        let two = "[[steps]]\nname = \"a\"\nevent_type = \"click\"\n[[steps]]\nname = \"b\"\nevent_type = \"view\"\n";
        let cases = [
            (
                format!("{head}[[steps]]\nname = \"a\"\nevent_type = \"click\"\noptional = true\n"),
                "step 1 cannot be optional",
            ),
            (
                format!("{head}[[steps]]\nname = \"a\"\nevent_type = \"click\"\nwithin = \"1m\"\n"),
                "no previous step",
            ),
            (
                format!("{head}order = \"sideways\"\n{two}"),
                "order = \"sideways\"",
            ),
            (
                format!("{head}count = \"events\"\n{two}"),
                "count = \"events\"",
            ),
            (
                format!("{head}attribution = \"first_touch\"\n{two}"),
                "attribution needs a breakdown",
            ),
            (
                format!("{head}mode = \"strict_once\"\ncount = \"attempts\"\n{two}"),
                "modes cannot be combined",
            ),
            (
                format!("{head}order = \"any\"\ncount = \"attempts\"\n{two}"),
                "needs step order",
            ),
            (
                format!(
                    "{head}{two}[[exclusions]]\nevent_type = \"x\"\nafter = \"b\"\nbefore = \"a\"\n"
                ),
                "must name a step after",
            ),
            (
                format!("{head}{two}[[exclusions]]\nevent_type = \"x\"\nafter = \"nope\"\n"),
                "exclusions[0].after = \"nope\"",
            ),
        ];
        for (text, needle) in cases {
            let e = err(&text);
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn modes_parse_in_any_order() {
        let f = parse_funnel(
            &format!("name = \"n\"\nwindow = \"1h\"\nmode = [\"allow_reentry\", \"strict_order\", \"strict_once\"]\n{STEP}"),
            "f.toml",
        )
        .unwrap();
        assert!(f.has(Mode::StrictOrder) && f.has(Mode::AllowReentry) && f.has(Mode::StrictOnce));
        assert!(!f.has(Mode::StrictIncrease));
    }
}
