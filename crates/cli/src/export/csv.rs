//! One CSV row per funnel, group and step.

use funnel_analysis::FunnelReport;

pub fn render(reports: &[FunnelReport]) -> String {
    let mut w = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let header = [
        "funnel",
        "section",
        "group",
        "step_index",
        "step",
        "persons",
        "conversion_from_previous",
        "conversion_from_first",
        "dropped_from_previous",
        "pending",
        "median_seconds_from_previous",
        "p90_seconds_from_previous",
        "mean_seconds_from_previous",
        "median_seconds_from_first",
        "suppressed",
    ];
    w.write_record(header).expect("in-memory write");
    let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in reports {
        let sections = r
            .groups
            .iter()
            .map(|g| ("groups", g))
            .chain(r.trend.iter().map(|g| ("trend", g)));
        for (section, g) in sections {
            // The group key as a JSON object: unambiguous for any value, and {} for all persons.
            let key = serde_json::to_string(&g.key).expect("key serialises");
            for (i, s) in g.steps.iter().enumerate() {
                if g.suppressed {
                    let mut row = vec![
                        r.funnel.clone(),
                        section.to_string(),
                        key.clone(),
                        (i + 1).to_string(),
                        s.name.clone(),
                    ];
                    row.resize(header.len() - 1, String::new());
                    row.push("true".into());
                    w.write_record(&row).expect("in-memory write");
                    continue;
                }
                let prev = s
                    .time_to_convert
                    .as_ref()
                    .and_then(|t| t.from_previous.as_ref());
                let first = s
                    .time_to_convert
                    .as_ref()
                    .and_then(|t| t.from_first.as_ref());
                w.write_record([
                    r.funnel.clone(),
                    section.to_string(),
                    key.clone(),
                    (i + 1).to_string(),
                    s.name.clone(),
                    s.persons.to_string(),
                    s.conversion_from_previous.to_string(),
                    s.conversion_from_first.to_string(),
                    s.dropped_from_previous.to_string(),
                    s.pending.to_string(),
                    num(prev.map(|d| d.median)),
                    num(prev.map(|d| d.p90)),
                    num(prev.map(|d| d.mean)),
                    num(first.map(|d| d.median)),
                    "false".into(),
                ])
                .expect("in-memory write");
            }
        }
    }
    // Where the dropped went: section `dropped_next`, the group key with the destination added
    // as "(next)" (and "(next value)"), persons in `persons`.
    for r in reports {
        for g in r.groups.iter().filter(|g| !g.suppressed) {
            for (i, s) in g.steps.iter().enumerate() {
                for d in s.dropped_next.iter().flatten() {
                    let mut key: serde_json::Map<String, serde_json::Value> = g
                        .key
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                        .collect();
                    key.insert("(next)".into(), serde_json::json!(d.event_type));
                    if let Some(v) = &d.value {
                        key.insert("(next value)".into(), serde_json::json!(v));
                    }
                    let mut row = vec![
                        r.funnel.clone(),
                        "dropped_next".to_string(),
                        serde_json::Value::Object(key).to_string(),
                        (i + 1).to_string(),
                        s.name.clone(),
                        d.persons.to_string(),
                    ];
                    row.resize(header.len() - 1, String::new());
                    row.push("false".into());
                    w.write_record(&row).expect("in-memory write");
                }
            }
        }
    }
    String::from_utf8(w.into_inner().expect("in-memory write")).expect("UTF-8 in, UTF-8 out")
}
