//! `funnel compare`

use std::path::PathBuf;

use anyhow::{Context, Result};
use funnel_analysis::{CompareOptions, Comparison, compare};
use funnel_core::{Attribution, StoreLayout, load_funnel};

use crate::analyze::{ScopeArgs, options};
use crate::table::{render as grid, thousands};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AttributionArg {
    Step1,
    FirstTouch,
    LastTouch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompareFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Store directory (written by `funnel ingest`).
    #[arg(long)]
    pub store: PathBuf,
    /// Funnel definition (TOML).
    #[arg(long)]
    pub funnel: PathBuf,
    /// Column whose values are compared (e.g. journey).
    #[arg(long)]
    pub by: String,
    /// The value compared against (e.g. wechat_native).
    #[arg(long)]
    pub baseline: String,
    /// How persons are assigned to groups: step1 (the breakdown semantics of `analyze`: a person
    /// is in the group of each value their step-1 events have), or one group per person by
    /// first or last touch.
    #[arg(long, value_enum, default_value_t = AttributionArg::Step1)]
    pub attribution: AttributionArg,
    #[arg(long, value_enum, default_value_t = CompareFormat::Table)]
    pub format: CompareFormat,
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

pub fn run(args: Args) -> Result<()> {
    let spec = load_funnel(&args.funnel)?;
    let store = StoreLayout::new(&args.store).open_existing()?;
    let opts = CompareOptions {
        by: args.by.clone(),
        baseline: args.baseline.clone(),
        attribution: match args.attribution {
            AttributionArg::Step1 => Attribution::Step1,
            AttributionArg::FirstTouch => Attribution::FirstTouch,
            AttributionArg::LastTouch => Attribution::LastTouch,
        },
        analyze: options(Some(&store), &args.scope, None, false)?,
    };
    let c = compare(&store, &spec, &opts)?;
    let text = match args.format {
        CompareFormat::Json => serde_json::to_string_pretty(&c)? + "\n",
        CompareFormat::Table => render_text(&c, false),
        CompareFormat::Markdown => render_text(&c, true),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => out!("{text}"),
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn pp(x: f64) -> String {
    format!("{:+.1} pp", 100.0 * x)
}

fn label(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".into())
}

/// A table as Markdown (pipe table) or as aligned text.
fn table(markdown: bool, headers: &[&str], rows: &[Vec<String>]) -> String {
    if !markdown {
        return grid(headers, rows);
    }
    let names: Vec<&str> = headers.iter().map(|h| h.trim_start_matches('>')).collect();
    let align: Vec<&str> = headers
        .iter()
        .map(|h| if h.starts_with('>') { "---:" } else { "---" })
        .collect();
    let mut out = format!("| {} |\n| {} |\n", names.join(" | "), align.join(" | "));
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ").replace('\n', " ")));
    }
    out
}

/// The comparison for people: rates with intervals, differences, and extra-step costs.
pub fn render_text(c: &Comparison, markdown: bool) -> String {
    let h = |s: &str| {
        if markdown {
            format!("\n### {s}\n\n")
        } else {
            format!("\n {s}\n")
        }
    };
    let mut out = if markdown {
        format!("## {} by {} (baseline {})\n", c.funnel, c.by, c.baseline)
    } else {
        let attribution = c.attribution.as_str();
        format!(
            "{} by {} (baseline {}; persons grouped by {attribution})\n",
            c.funnel, c.by, c.baseline
        )
    };
    if c.persons_in_several_groups > 0 {
        out.push_str(&format!(
            "\n {} persons are in several groups (their step-1 events have several values); the tests treat groups as independent samples.\n",
            thousands(c.persons_in_several_groups)
        ));
    }
    out.push_str(&h("Conversion from step 1, 95% Wilson intervals"));
    let mut rows = Vec::new();
    for g in &c.groups {
        for r in &g.rates {
            rows.push(vec![
                label(&g.value),
                r.step.clone(),
                thousands(g.clicks),
                thousands(r.persons),
                pct(r.rate),
                format!("{} – {}", pct(r.ci_low), pct(r.ci_high)),
                if g.insufficient_sample {
                    "insufficient sample".into()
                } else {
                    String::new()
                },
            ]);
        }
    }
    out.push_str(&table(
        markdown,
        &[
            &c.by, "step", ">clicks", ">persons", ">rate", ">95% CI", "note",
        ],
        &rows,
    ));
    out.push_str(&h(&format!(
        "Difference to {}, Newcombe 95% intervals, Holm-adjusted p",
        c.baseline
    )));
    let rows: Vec<Vec<String>> = c
        .differences
        .iter()
        .map(|d| {
            vec![
                label(&d.group),
                d.step.clone(),
                pp(d.difference),
                format!("{} – {}", pp(d.ci_low), pp(d.ci_high)),
                d.relative_lift
                    .map_or_else(|| "-".into(), |l| format!("{:+.1}%", 100.0 * l)),
                format!("{} {:.4}", d.test, d.p_value),
                format!("{:.4}", d.p_holm),
                d.verdict().to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        markdown,
        &[
            &c.by,
            "step",
            ">difference",
            ">95% CI",
            ">lift",
            ">test p",
            ">Holm p",
            "verdict",
        ],
        &rows,
    ));
    if !c.extra_steps.is_empty() {
        out.push_str(&h(&format!(
            "Steps {} does not have: share of clicks lost there",
            c.baseline
        )));
        let rows: Vec<Vec<String>> = c
            .extra_steps
            .iter()
            .map(|s| {
                vec![
                    label(&s.group),
                    s.step.clone(),
                    thousands(s.persons_through),
                    thousands(s.lost),
                    pct(s.share_of_clicks_lost),
                ]
            })
            .collect();
        out.push_str(&table(
            markdown,
            &[&c.by, "step", ">went through", ">lost there", ">of clicks"],
            &rows,
        ));
    }
    out
}
