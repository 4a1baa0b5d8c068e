//! `funnel report`: the HTML report (and its Markdown twin) for analysts and managers.

use std::path::PathBuf;

use anyhow::{Context, Result};
use funnel_analysis::{
    CompareOptions, analyze_options, compare_reports, comparison_specs, inspect,
};
use funnel_core::{Attribution, MANIFEST_FILE, StoreLayout, load_funnel};
use sha2::{Digest, Sha256};

use crate::analyze::{IntervalArg, ScopeArgs, options};
use crate::export::html::{ReportData, render};
use crate::table::thousands;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Store directory (written by `funnel ingest`). With a cluster engine, the store must be
    /// readable by the cluster under the same path.
    #[arg(long)]
    pub store: PathBuf,
    /// Where the funnels (and the comparison) are computed; the store summary is read here.
    #[command(flatten)]
    pub engine: crate::cluster::EngineArgs,
    /// Funnel definitions to show (repeatable).
    #[arg(long = "funnel", required = true)]
    pub funnels: Vec<PathBuf>,
    /// The HTML file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the same tables as Markdown here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Funnel for the journey comparison section (none if absent).
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Column the comparison groups by.
    #[arg(long, default_value = "journey")]
    pub by: String,
    /// Value the comparison measures against.
    #[arg(long, default_value = "wechat_native")]
    pub baseline: String,
    /// Adjusted and before/after comparisons in the comparison section.
    #[command(flatten)]
    pub adjust: crate::compare::AdjustArgs,
    /// Keep the N breakdown values with the most step-1 persons, the rest as "(other)"
    /// [default: the funnel's `top`, else 20].
    #[arg(long, value_name = "N")]
    pub top: Option<i64>,
    /// Where the dropped went: per funnel, what the persons who stopped at each step did next.
    #[arg(long)]
    pub dropped_next: bool,
    /// With --dropped-next (implied): also the next event's value of COLUMN.
    #[arg(long, value_name = "COLUMN")]
    pub next_by: Option<String>,
    /// Suppress every group (and compared group) with fewer step-1 persons than this.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub min_persons: u64,
    /// Period of the trend lines.
    #[arg(long, value_enum, default_value_t = IntervalArg::Week)]
    pub interval: IntervalArg,
    #[arg(long, default_value = "Conversion funnels")]
    pub title: String,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// Writes the report; returns the HTML path.
/// Writes the report; returns the comparison it computed, if any (the demo prints it).
pub fn write(args: &Args) -> Result<Option<funnel_analysis::Comparison>> {
    let mut specs = args
        .funnels
        .iter()
        .map(|p| load_funnel(p))
        .collect::<Result<Vec<_>, _>>()?;
    crate::analyze::apply_top(&mut specs, args.top, Some(crate::analyze::DEFAULT_TOP))?;
    if args.compare.is_none()
        && (!args.adjust.adjust_for.is_empty() || args.adjust.split_at.is_some())
    {
        return Err(crate::UsageError(
            "--adjust-for and --split-at shape the comparison section: give --compare FILE".into(),
        )
        .into());
    }
    // One generation, leased, for every part of the report.
    let store = StoreLayout::new(&args.store).open_existing()?;
    let mut opts = options(Some(&store), &args.scope, Some(args.interval), false)?;
    opts.dropped_next = args.dropped_next || args.next_by.is_some();
    opts.next_by = args.next_by.clone();
    // The comparison's funnels join the same pass over the store.
    let compared = match &args.compare {
        Some(path) => {
            let copts = CompareOptions {
                by: args.by.clone(),
                baseline: args.baseline.clone(),
                attribution: Attribution::Step1,
                adjust_for: args.adjust.adjust_for.clone(),
                split: args.adjust.split(&opts)?,
                min_persons: args.min_persons,
                analyze: opts.clone(),
            };
            let cspecs = comparison_specs(&load_funnel(path)?, &copts);
            specs.extend(cspecs.iter().cloned());
            // The split instant only reaches the funnels broken down by it.
            opts = analyze_options(&copts);
            Some((cspecs, copts))
        }
        None => None,
    };
    let mut analysis = match args.engine.cluster() {
        None => funnel_analysis::analyze(&store, &specs, &opts)?,
        Some(cluster) => funnel_analysis::Analysis {
            reports: crate::cluster::analyze(
                cluster,
                crate::cluster::Source::Store(&store),
                &specs,
                &opts,
                None,
            )?,
            audit: Vec::new(),
        },
    };
    let comparison = match compared {
        Some((cspecs, copts)) => {
            let first = analysis.reports.len() - cspecs.len();
            let reports = analysis.reports.split_off(first);
            Some(compare_reports(&cspecs, reports, &copts)?)
        }
        None => None,
    };
    for r in &mut analysis.reports {
        funnel_analysis::suppress(r, args.min_persons);
    }
    let summary = inspect(&store)?;
    let manifest = store.manifest();
    let manifest_bytes =
        std::fs::read(store.dir().join(MANIFEST_FILE)).context("reading the store manifest")?;
    let mut definitions = Vec::new();
    for p in args.funnels.iter().chain(args.compare.iter()) {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !definitions.iter().any(|(n, _)| *n == name) {
            definitions.push((
                name,
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            ));
        }
    }
    let file_names = |ps: &[PathBuf]| -> String {
        ps.iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut shown = vec![
        ("funnels".to_string(), file_names(&args.funnels)),
        (
            "interval".into(),
            format!("{:?}", args.interval).to_lowercase(),
        ),
        (
            "cutoff".into(),
            analysis
                .reports
                .first()
                .map(|r| r.cutoff.clone())
                .unwrap_or_default(),
        ),
    ];
    if let Some(c) = &args.compare {
        shown.push(("compare".into(), file_names(std::slice::from_ref(c))));
        shown.push(("by".into(), args.by.clone()));
        shown.push(("baseline".into(), args.baseline.clone()));
        if !args.adjust.adjust_for.is_empty() {
            shown.push(("adjust_for".into(), args.adjust.adjust_for.join(",")));
        }
        for (k, v) in [
            ("split_at", &args.adjust.split_at),
            ("control", &args.adjust.control),
        ] {
            if let Some(v) = v {
                shown.push((k.into(), v.clone()));
            }
        }
    }
    for (k, v) in [("from", &args.scope.from), ("to", &args.scope.to)] {
        if let Some(v) = v {
            shown.push((k.into(), v.clone()));
        }
    }
    if args.min_persons > 0 {
        shown.push(("min_persons".into(), args.min_persons.to_string()));
    }
    if opts.dropped_next {
        shown.push((
            "dropped_next".into(),
            args.next_by.clone().unwrap_or_else(|| "true".into()),
        ));
    }
    if args.scope.closed_windows_only {
        shown.push(("closed_windows_only".into(), "true".into()));
    }
    let data = ReportData {
        title: args.title.clone(),
        summary: &summary,
        manifest,
        manifest_sha256: hex::encode(Sha256::digest(&manifest_bytes)),
        reports: &analysis.reports,
        comparison: comparison.as_ref(),
        definitions,
        options: shown,
    };
    std::fs::write(&args.out, render(&data))
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(md) = &args.markdown {
        let mut text = format!("# {}\n\n", args.title);
        if let Some(c) = &comparison {
            text.push_str(&crate::export::compare::render(
                c,
                crate::export::CompareFormat::Markdown,
            ));
            text.push('\n');
        }
        text.push_str(&crate::export::render(
            &analysis.reports,
            crate::export::Format::Markdown,
        ));
        let t = &summary.ingested;
        text.push_str(&format!(
            "## Data quality\n\n{} rows read: {} stored, {} duplicates, {} rejected ({}).\n\nStore manifest sha-256 `{}`, funnel {}.\n",
            thousands(t.rows_read),
            thousands(t.rows_stored),
            thousands(t.rows_duplicate),
            thousands(t.rows_rejected),
            t.rejected_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", "),
            data.manifest_sha256,
            funnel_core::TOOL_VERSION
        ));
        std::fs::write(md, text).with_context(|| format!("writing {}", md.display()))?;
    }
    Ok(comparison)
}

pub fn run(args: Args) -> Result<()> {
    write(&args)?;
    outln!("Wrote {}", args.out.display());
    if let Some(md) = &args.markdown {
        outln!("Wrote {}", md.display());
    }
    Ok(())
}
