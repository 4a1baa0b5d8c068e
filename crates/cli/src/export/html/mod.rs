//! The self-contained HTML report: inline CSS and SVG, no scripts, no network.

use std::fmt::Write;

use funnel_analysis::{Comparison, FunnelReport, GroupReport, StoreSummary};

mod compare;

use super::svg::{self, Bar, esc};
use super::{key_label, modes_label, pct, window_label};
use crate::table::thousands;

/// Everything the report shows.
pub struct ReportData<'a> {
    pub title: String,
    pub summary: &'a StoreSummary,
    pub manifest: &'a funnel_core::Manifest,
    pub manifest_sha256: String,
    pub reports: &'a [FunnelReport],
    pub comparison: Option<&'a Comparison>,
    /// (file name, TOML text) of each funnel definition.
    pub definitions: Vec<(String, String)>,
    /// The options as given, for the reproducibility footer.
    pub options: Vec<(String, String)>,
}

const CSS: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2330;max-width:1000px;margin:2em auto;padding:0 1em}\
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:2px solid #e3e7ef;padding-bottom:.2em}h3{margin-bottom:.3em}\
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{padding:.25em .7em;border-bottom:1px solid #e3e7ef;text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.muted{color:#687083}.headline{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}.card{border:1px solid #dfe4ee;border-radius:8px;padding:.8em 1em;min-width:190px}\
.card .big{font-size:1.8em;font-weight:600}.chart{max-width:100%;height:auto;display:block;margin:.4em 0 1em}\
.bar{fill:#3b6fd8}.pending{fill:#f0a23b}.lbl{font-size:12px;fill:#1d2330}.val{font-size:12px;fill:#414a5c}.axis{font-size:11px;fill:#687083}\
.grid{stroke:#e3e7ef}.zero{stroke:#9aa3b5;stroke-dasharray:4 3}.est{stroke:#8a93a6;fill:#8a93a6;stroke-width:2}.est.strong{stroke:#c2412d;fill:#c2412d}\
.line{fill:none;stroke-width:2}.dashed{stroke-dasharray:6 4}.s0{stroke:#3b6fd8}.s1{stroke:#c2412d}.s2{stroke:#2f9e6e}.s3{stroke:#8e5bd8}.s4{stroke:#d8a23b}.s5{stroke:#555}\
.s0t{fill:#3b6fd8}.s1t{fill:#c2412d}.s2t{fill:#2f9e6e}.s3t{fill:#8e5bd8}.s4t{fill:#b8861b}.s5t{fill:#555}\
pre{background:#f5f7fb;padding:.7em;border-radius:6px;overflow:auto;font-size:12px}footer{margin-top:3em;font-size:12px;color:#687083}.flag{color:#c2412d;font-weight:600}";

pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><tr>");
    for h in headers {
        let (class, name) = if let Some(n) = h.strip_prefix('>') {
            (" class=\"n\"", n)
        } else {
            ("", *h)
        };
        let _ = write!(s, "<th{class}>{}</th>", esc(name));
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for (h, c) in headers.iter().zip(r) {
            let class = if h.starts_with('>') {
                " class=\"n\""
            } else {
                ""
            };
            let _ = write!(s, "<td{class}>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn funnel_chart(g: &GroupReport) -> String {
    let bars: Vec<Bar> = g
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| Bar {
            label: s.name.clone(),
            value: s.persons,
            pending: s.pending,
            note: if i == 0 {
                thousands(s.persons)
            } else {
                format!(
                    "{} · {} of previous · {} of first · −{}",
                    thousands(s.persons),
                    pct(s.conversion_from_previous),
                    pct(s.conversion_from_first),
                    thousands(s.dropped_from_previous)
                )
            },
        })
        .collect();
    svg::funnel(&bars)
}

fn headline(d: &ReportData<'_>) -> String {
    let Some(c) = d.comparison else {
        return String::new();
    };
    let mut s = String::from("<div class=\"headline\">");
    for g in &c.groups {
        if g.suppressed {
            let _ = write!(
                s,
                "<div class=\"card\"><div class=\"muted\">{}</div><div class=\"muted\">suppressed (under --min-persons)</div></div>",
                esc(g.value.as_deref().unwrap_or("(none)"))
            );
            continue;
        }
        let Some(last) = g.rates.last() else { continue };
        let _ = write!(
            s,
            "<div class=\"card\"><div class=\"muted\">{} · {} clicks</div><div class=\"big\">{}</div><div>{} → {}</div><div class=\"muted\">95% CI {} – {}</div>{}</div>",
            esc(g.value.as_deref().unwrap_or("(none)")),
            thousands(g.clicks),
            pct(last.rate),
            esc(&c.report.groups[0].steps[0].name),
            esc(&last.step),
            pct(last.ci_low),
            pct(last.ci_high),
            if g.insufficient_sample {
                "<div class=\"flag\">insufficient sample</div>"
            } else {
                ""
            }
        );
    }
    s.push_str("</div>");
    s
}

/// Every breakdown value's funnel side by side on the same denominator (its clicks): per step,
/// one bar per value, the share of its step-1 persons that reached the step.
fn side_by_side(r: &FunnelReport) -> String {
    let shown: Vec<&GroupReport> = r.groups[1..].iter().filter(|g| !g.suppressed).collect();
    if shown.len() < 2 || r.groups[0].steps.len() < 2 {
        return String::new();
    }
    let mut s = format!(
        "<h3>Side by side: the share of each {}'s clicks that reached each step</h3>",
        esc(&r.breakdown.join(", "))
    );
    for (k, step) in r.groups[0].steps.iter().enumerate().skip(1) {
        let bars: Vec<Bar> = shown
            .iter()
            .map(|g| {
                let st = &g.steps[k];
                Bar {
                    label: key_label(g)
                        .split(" = ")
                        .last()
                        .unwrap_or_default()
                        .to_string(),
                    // A full bar is 100% of the value's clicks (10,000).
                    value: (st.conversion_from_first * 10_000.0).round() as u64,
                    pending: 0,
                    note: format!(
                        "{} of {} clicks",
                        pct(st.conversion_from_first),
                        thousands(g.steps[0].persons)
                    ),
                }
            })
            .collect();
        let _ = write!(
            s,
            "<h4>{}</h4>{}",
            esc(&step.name),
            svg::funnel_scaled(&bars, 10_000)
        );
    }
    s
}

/// The time-to-convert distribution of each step (all persons, from the previous step): the
/// persons per bucket of [`funnel_analysis::HISTOGRAM_BOUNDS_SECS`].
fn histograms(r: &FunnelReport) -> String {
    let g = &r.groups[0];
    if g.suppressed {
        return String::new();
    }
    let bound = |secs: i64| super::duration(secs as f64).replace(".0", "");
    let mut s = String::new();
    for step in g.steps.iter().skip(1) {
        let Some(d) = step
            .time_to_convert
            .as_ref()
            .and_then(|t| t.from_previous.as_ref())
        else {
            continue;
        };
        let b = funnel_analysis::HISTOGRAM_BOUNDS_SECS;
        let bars: Vec<Bar> = d
            .histogram
            .iter()
            .enumerate()
            .map(|(i, n)| Bar {
                label: match i {
                    0 => format!("≤ {}", bound(b[0])),
                    i if i == b.len() => format!("> {}", bound(b[b.len() - 1])),
                    i => format!("{} – {}", bound(b[i - 1]), bound(b[i])),
                },
                value: *n,
                pending: 0,
                note: format!("{} · {}", thousands(*n), pct(*n as f64 / d.persons as f64)),
            })
            // From the first to the last bucket that holds anyone.
            .collect();
        let first = d.histogram.iter().position(|n| *n > 0).unwrap_or(0);
        let last = d.histogram.iter().rposition(|n| *n > 0).unwrap_or(0);
        let _ = write!(
            s,
            "<h4>Time from the previous step to {} ({} persons)</h4>{}",
            esc(&step.name),
            thousands(d.persons),
            svg::funnel(&bars[first..=last])
        );
    }
    s
}

/// Where the dropped went, for all persons: per step not reached, the next event of those who
/// stopped before it, as bars scaled to the persons who stopped.
fn dropped_next(r: &FunnelReport) -> String {
    let g = &r.groups[0];
    if g.suppressed || g.steps.iter().all(|s| s.dropped_next.is_none()) {
        return String::new();
    }
    let mut s = String::from(
        "<h3>Where the dropped went (all persons)</h3><p class=\"muted\">Of the persons whose chain stopped at a step, their next event within the window from their click, or nothing more.</p>",
    );
    for (i, step) in g.steps.iter().enumerate().skip(1) {
        let Some(next) = &step.dropped_next else {
            continue;
        };
        let stopped: u64 = next.iter().map(|d| d.persons).sum();
        if stopped == 0 {
            continue;
        }
        let bars: Vec<Bar> = next
            .iter()
            .map(|d| Bar {
                label: match &d.value {
                    Some(Some(v)) => format!("{}: {v}", d.event_type),
                    _ => d.event_type.clone(),
                },
                value: d.persons,
                pending: 0,
                note: format!(
                    "{} · {}",
                    thousands(d.persons),
                    pct(d.persons as f64 / stopped as f64)
                ),
            })
            .collect();
        let _ = write!(
            s,
            "<h4>Stopped at {} ({} persons), instead of {}</h4>{}",
            esc(&g.steps[i - 1].name),
            thousands(stopped),
            esc(&step.name),
            svg::funnel(&bars)
        );
    }
    s
}

fn durations(r: &FunnelReport) -> String {
    let g = &r.groups[0];
    if g.suppressed {
        return format!("<p class=\"muted\">{}</p>", esc(super::SUPPRESSED));
    }
    let rows: Vec<Vec<String>> = g.steps[1..]
        .iter()
        .map(|s| {
            let d = s
                .time_to_convert
                .as_ref()
                .and_then(|t| t.from_previous.as_ref());
            let f = s
                .time_to_convert
                .as_ref()
                .and_then(|t| t.from_first.as_ref());
            let secs = |v: Option<f64>| v.map_or_else(|| "–".into(), super::duration);
            vec![
                esc(&s.name),
                thousands(d.map_or(0, |d| d.persons)),
                secs(d.map(|d| d.median)),
                secs(d.map(|d| d.p90)),
                secs(d.map(|d| d.p99)),
                secs(d.map(|d| d.mean)),
                secs(f.map(|d| d.median)),
            ]
        })
        .collect();
    table(
        &[
            "step",
            ">persons",
            ">median",
            ">p90",
            ">p99",
            ">mean",
            ">median from step 1",
        ],
        &rows,
    )
}

fn trend(r: &FunnelReport) -> String {
    if r.trend.is_empty() {
        return String::new();
    }
    let mut periods: Vec<String> = r
        .trend
        .iter()
        .filter_map(|g| g.key.get("period").cloned().flatten())
        .collect();
    periods.sort();
    periods.dedup();
    let mut series: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    for g in &r.trend {
        let name: Vec<String> = g
            .key
            .iter()
            .filter(|(k, _)| k.as_str() != "period")
            .map(|(_, v)| v.clone().unwrap_or_else(|| "(none)".into()))
            .collect();
        let name = if name.is_empty() {
            "all persons".to_string()
        } else {
            name.join(", ")
        };
        let p = g.key.get("period").cloned().flatten().unwrap_or_default();
        let i = periods
            .iter()
            .position(|x| *x == p)
            .expect("collected above");
        // A suppressed period is a gap in its line.
        let rate = g
            .steps
            .last()
            .filter(|_| !g.suppressed)
            .map(|s| s.conversion_from_first);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v[i] = rate,
            None => {
                let mut v = vec![None; periods.len()];
                v[i] = rate;
                series.push((name, v));
            }
        }
    }
    series.sort_by_key(|(n, _)| n != "all persons");
    format!(
        "<h3>Conversion to {} by {} of the click</h3>{}",
        esc(r.groups[0].steps.last().map_or("", |s| s.name.as_str())),
        esc(r.interval.as_deref().unwrap_or("period")),
        svg::lines(&periods, &series)
    )
}

fn ledger(d: &ReportData<'_>) -> String {
    let t = &d.summary.ingested;
    let mut s = String::from("<h2>Data quality</h2>");
    let mut rows = vec![
        vec!["rows read".into(), thousands(t.rows_read), String::new()],
        vec![
            "stored".into(),
            thousands(t.rows_stored),
            pct(ratio(t.rows_stored, t.rows_read)),
        ],
        vec![
            "duplicates (same event again)".into(),
            thousands(t.rows_duplicate),
            pct(ratio(t.rows_duplicate, t.rows_read)),
        ],
        vec![
            "rejected".into(),
            thousands(t.rows_rejected),
            pct(ratio(t.rows_rejected, t.rows_read)),
        ],
    ];
    for (reason, n) in &t.rejected_by_reason {
        rows.push(vec![
            format!("&nbsp;&nbsp;{}", esc(reason)),
            thousands(*n),
            String::new(),
        ]);
    }
    s.push_str(&table(&["rows", ">count", ">share"], &rows));
    let _ = write!(
        s,
        "<p>{} events of {} persons, {} to {}, in {} ingest run(s).</p>",
        thousands(d.summary.events),
        thousands(d.summary.persons),
        esc(d.summary.min_ts.as_deref().unwrap_or("–")),
        esc(d.summary.max_ts.as_deref().unwrap_or("–")),
        d.summary.runs
    );
    let rows: Vec<Vec<String>> = d
        .manifest
        .runs
        .iter()
        .flat_map(|run| {
            run.inputs.iter().map(move |f| {
                vec![
                    run.run.to_string(),
                    esc(&f.path),
                    thousands(f.bytes),
                    thousands(f.counts.rows_read),
                    thousands(f.counts.rows_rejected),
                    format!("<code>{}</code>", &f.sha256[..16]),
                ]
            })
        })
        .collect();
    s.push_str("<details><summary>Input files</summary>");
    s.push_str(&table(
        &[
            "run",
            "file",
            ">bytes",
            ">rows",
            ">rejected",
            "sha-256 (first 16)",
        ],
        &rows,
    ));
    s.push_str("</details>");
    s
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

pub fn render(d: &ReportData<'_>) -> String {
    let mut s = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{t}</title><style>{CSS}</style></head><body><h1>{t}</h1><p class=\"muted\">Store generation {g}, {e} events of {p} persons, {from} to {to}. Analysed as of {cut}.</p>",
        t = esc(&d.title),
        g = d.summary.generation,
        e = thousands(d.summary.events),
        p = thousands(d.summary.persons),
        from = esc(d.summary.min_ts.as_deref().unwrap_or("–")),
        to = esc(d.summary.max_ts.as_deref().unwrap_or("–")),
        cut = esc(d.reports.first().map_or("–", |r| r.cutoff.as_str())),
    );
    s.push_str(&headline(d));
    if let Some(c) = d.comparison {
        s.push_str(&compare::section(c));
    }
    for r in d.reports {
        let _ = write!(
            s,
            "<h2>{}</h2><p class=\"muted\">Window {} from the step-1 event; {}. Bars: persons per step; orange: persons whose window was still open at the cutoff (pending).</p>",
            esc(&r.funnel),
            window_label(r.window_seconds),
            esc(&modes_label(r))
        );
        s.push_str(&side_by_side(r));
        for g in &r.groups {
            let chart = if g.suppressed {
                format!("<p class=\"muted\">{}</p>", esc(super::SUPPRESSED))
            } else {
                funnel_chart(g)
            };
            let _ = write!(s, "<h3>{}</h3>{}", esc(&key_label(g)), chart);
        }
        s.push_str(&dropped_next(r));
        s.push_str("<h3>Time to convert (all persons, from the previous step)</h3>");
        s.push_str(&durations(r));
        s.push_str(&histograms(r));
        s.push_str(&trend(r));
    }
    s.push_str(&ledger(d));
    s.push_str("<h2>Definitions and semantics</h2><p>A person's level is what ClickHouse <code>windowFunnel(window)(ts, cond1, …)</code> returns over all of the person's events: a step-1 event starts a chain, each next step must follow within the window of it, and the person counts at every step up to the longest chain reached. A breakdown computes the funnel as if step 1 also required each value. Funnels with extensions (optional steps, exclusions, same-item chains, …) follow the rules in the README.</p>");
    for (name, text) in &d.definitions {
        let _ = write!(s, "<h3>{}</h3><pre>{}</pre>", esc(name), esc(text));
    }
    let options: Vec<String> = d
        .options
        .iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect();
    let _ = writeln!(
        s,
        "<footer>Made by funnel {} from store manifest sha-256 <code>{}</code> (generation {}), options: {}. The same command on the same store writes the same file.</footer></body></html>",
        funnel_core::TOOL_VERSION,
        d.manifest_sha256,
        d.manifest.generation,
        options.join(" ")
    );
    s
}
