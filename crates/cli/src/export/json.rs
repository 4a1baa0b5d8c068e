//! JSON exactly as CONTRACT §6 (one object per funnel; an array when several funnels ran).

use funnel_analysis::FunnelReport;

pub fn render(reports: &[FunnelReport]) -> String {
    let text = match reports {
        [one] => serde_json::to_string_pretty(one),
        many => serde_json::to_string_pretty(many),
    };
    text.expect("reports serialise") + "\n"
}
