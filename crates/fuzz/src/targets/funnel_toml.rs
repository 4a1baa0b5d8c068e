//! The funnel definition parser (`funnel_core::parse_funnel`, CONTRACT §4).

use funnel_core::{
    Attribution, CountUnit, FunnelSpec, MAX_STEPS, Order, SpecError, parse_funnel, parse_window,
};
use funnel_sql::{Dialect, Plan, PlanOptions};
use toml::{Table, Value};

const SOURCE: &str = "fuzz.toml";

/// Invariants: an error is a typed [`SpecError`] (syntax or invalid value) whose text names the
/// file and is one line; an accepted spec keeps the rules the parser promises (steps, unique
/// names, event types, the window), parses back to itself from its own TOML, and the SQL planner
/// either compiles it in both dialects or refuses it with a one-line error.
pub fn funnel_toml(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let spec = match parse_funnel(&text, SOURCE) {
        Ok(spec) => spec,
        Err(e) => return check_error(&e),
    };
    check_rules(&spec)?;
    let again = to_toml(&spec)?;
    match parse_funnel(&again, SOURCE) {
        Ok(back) if back == spec => {}
        Ok(back) => {
            return Err(format!(
                "the spec's own TOML parses to another spec:\n{again}\nfirst {spec:?}\nthen {back:?}"
            ));
        }
        Err(e) => return Err(format!("the spec's own TOML is refused: {e}\n{again}")),
    }
    match Plan::new(&spec, PlanOptions::default()) {
        Ok(plan) => {
            for d in [Dialect::Spark, Dialect::ClickHouse] {
                let sql = funnel_sql::query(&plan, d, "events");
                if sql.is_empty() {
                    return Err(format!("{}: empty query", d.name()));
                }
            }
        }
        // Like the parser's errors, it quotes the file's values in full: one line, any length.
        Err(e) => super::one_line("the SQL planner's error", &e.to_string(), usize::MAX)?,
    }
    Ok(())
}

fn check_error(e: &SpecError) -> Result<(), String> {
    let text = e.to_string();
    if !matches!(e, SpecError::Syntax { .. } | SpecError::Invalid { .. }) {
        return Err(format!(
            "parsing text gave an error of another kind: {text}"
        ));
    }
    if !text.starts_with(&format!("{SOURCE}: ")) {
        return Err(format!("the error does not name the file: {text}"));
    }
    // Values are quoted in full, so the length is not bounded; the line is.
    super::one_line("the funnel file error", &text, usize::MAX)
}

fn check_rules(spec: &FunnelSpec) -> Result<(), String> {
    let fail = |m: String| Err(format!("accepted spec {spec:?}: {m}"));
    if spec.steps.is_empty() || spec.steps.len() > MAX_STEPS {
        return fail(format!("{} steps", spec.steps.len()));
    }
    if parse_window(&spec.window) != Ok(spec.window_ms) || spec.window_ms < 0 {
        return fail("the window is not what its text says".into());
    }
    let mut names = std::collections::BTreeSet::new();
    for s in &spec.steps {
        if s.name.trim().is_empty() || !names.insert(&s.name) {
            return fail(format!("step name {:?} empty or repeated", s.name));
        }
        if !funnel_core::schema::is_valid_event_type(&s.event_type) {
            return fail(format!("event type {:?}", s.event_type));
        }
        if s.filters
            .iter()
            .any(|f| f.values.is_empty() || f.column.is_empty())
        {
            return fail("an empty filter".into());
        }
    }
    if spec.steps[0].optional || spec.steps[0].within_ms.is_some() {
        return fail("step 1 is optional or has within".into());
    }
    if spec
        .exclusions
        .iter()
        .any(|x| x.after >= x.before || x.before >= spec.steps.len())
    {
        return fail("an exclusion out of order".into());
    }
    if spec.is_extended() && !spec.modes.is_empty() {
        return fail("modes with extensions".into());
    }
    Ok(())
}

/// The spec as a funnel file.
fn to_toml(spec: &FunnelSpec) -> Result<String, String> {
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let filters = |fs: &[funnel_core::Filter]| {
        let mut t = Table::new();
        for f in fs {
            t.insert(f.column.clone(), strings(&f.values));
        }
        Value::Table(t)
    };
    let mut t = Table::new();
    t.insert("name".into(), Value::String(spec.name.clone()));
    t.insert("window".into(), Value::String(spec.window.clone()));
    if !spec.breakdown.is_empty() {
        t.insert("breakdown".into(), strings(&spec.breakdown));
    }
    if !spec.modes.is_empty() {
        let modes: Vec<String> = spec.modes.iter().map(|m| m.as_str().to_string()).collect();
        t.insert("mode".into(), strings(&modes));
    }
    let order = match spec.order {
        Order::Strict => "strict",
        Order::Any => "any",
    };
    t.insert("order".into(), Value::String(order.into()));
    let count = match spec.count {
        CountUnit::Persons => "persons",
        CountUnit::Attempts => "attempts",
    };
    t.insert("count".into(), Value::String(count.into()));
    if !spec.hold_constant.is_empty() {
        t.insert("hold_constant".into(), strings(&spec.hold_constant));
    }
    if spec.attribution != Attribution::Step1 {
        t.insert(
            "attribution".into(),
            Value::String(spec.attribution.as_str().into()),
        );
    }
    let steps = spec
        .steps
        .iter()
        .map(|s| {
            let mut st = Table::new();
            st.insert("name".into(), Value::String(s.name.clone()));
            st.insert("event_type".into(), Value::String(s.event_type.clone()));
            if !s.filters.is_empty() {
                st.insert("where".into(), filters(&s.filters));
            }
            if s.optional {
                st.insert("optional".into(), Value::Boolean(true));
            }
            if let Some(ms) = s.within_ms {
                st.insert("within".into(), Value::String(format!("{}s", ms / 1000)));
            }
            Value::Table(st)
        })
        .collect();
    t.insert("steps".into(), Value::Array(steps));
    if !spec.exclusions.is_empty() {
        let xs = spec
            .exclusions
            .iter()
            .map(|x| {
                let mut xt = Table::new();
                xt.insert("event_type".into(), Value::String(x.event_type.clone()));
                if !x.filters.is_empty() {
                    xt.insert("where".into(), filters(&x.filters));
                }
                xt.insert(
                    "after".into(),
                    Value::String(spec.steps[x.after].name.clone()),
                );
                xt.insert(
                    "before".into(),
                    Value::String(spec.steps[x.before].name.clone()),
                );
                Value::Table(xt)
            })
            .collect();
        t.insert("exclusions".into(), Value::Array(xs));
    }
    toml::to_string(&t).map_err(|e| format!("the spec does not serialise as TOML: {e}"))
}
