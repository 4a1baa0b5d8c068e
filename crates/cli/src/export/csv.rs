//! One CSV row per funnel, group and step.

use funnel_analysis::FunnelReport;

pub fn render(reports: &[FunnelReport]) -> String {
    let mut w = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let header = [
        "funnel",
        "group",
        "step_index",
        "step",
        "persons",
        "conversion_from_previous",
        "conversion_from_first",
        "dropped_from_previous",
    ];
    w.write_record(header).expect("in-memory write");
    for r in reports {
        for g in &r.groups {
            // The group key as a JSON object: unambiguous for any value, and {} for all persons.
            let key = serde_json::to_string(&g.key).expect("key serialises");
            for (i, s) in g.steps.iter().enumerate() {
                w.write_record([
                    r.funnel.clone(),
                    key.clone(),
                    (i + 1).to_string(),
                    s.name.clone(),
                    s.persons.to_string(),
                    s.conversion_from_previous.to_string(),
                    s.conversion_from_first.to_string(),
                    s.dropped_from_previous.to_string(),
                ])
                .expect("in-memory write");
            }
        }
    }
    String::from_utf8(w.into_inner().expect("in-memory write")).expect("UTF-8 in, UTF-8 out")
}
