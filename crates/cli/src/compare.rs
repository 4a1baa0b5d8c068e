//! `funnel compare`

use std::path::PathBuf;

use anyhow::{Context, Result};
use funnel_analysis::{
    AnalyzeOptions, CompareOptions, Split, analyze_options, compare, compare_reports,
    comparison_specs,
};
use funnel_core::{Attribution, StoreLayout, load_funnel, time};

use crate::UsageError;
use crate::analyze::{ScopeArgs, options};
use crate::export::{self, CompareFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AttributionArg {
    Step1,
    FirstTouch,
    LastTouch,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Store directory (written by `funnel ingest`).
    #[arg(long)]
    pub store: PathBuf,
    /// Where the compared funnels are computed (the statistics are computed here).
    #[command(flatten)]
    pub engine: crate::cluster::EngineArgs,
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
    #[command(flatten)]
    pub adjust: AdjustArgs,
    /// Suppress every group with fewer step-1 persons than this: no rate of it is shown and no
    /// comparison with it is computed.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub min_persons: u64,
    #[arg(long, value_enum, default_value_t = CompareFormat::Table)]
    pub format: CompareFormat,
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// Adjusted and before/after comparisons (CONTRACT §8); shared with `funnel report`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdjustArgs {
    /// Also give every difference within strata of these columns (comma-separated; their
    /// value on the step-1 event that puts a person in the group), pooled by Mantel-Haenszel.
    #[arg(long, value_delimiter = ',', value_name = "COLUMN")]
    pub adjust_for: Vec<String>,
    /// Also compare, per group, persons whose step-1 event is before this time with those at
    /// or after it (RFC 3339, or a date in --timezone).
    #[arg(long, value_name = "TIME")]
    pub split_at: Option<String>,
    /// With --split-at: the group whose change every other group's change is measured
    /// against (difference-in-differences).
    #[arg(long, value_name = "VALUE", requires = "split_at")]
    pub control: Option<String>,
}

impl AdjustArgs {
    /// The split, its instant read in the options' time zone.
    pub fn split(&self, analyze: &AnalyzeOptions) -> Result<Option<Split>> {
        let Some(text) = &self.split_at else {
            return Ok(None);
        };
        let tz_name = analyze.timezone.as_deref().unwrap_or("UTC");
        let tz = time::parse_timezone(tz_name)
            .map_err(|e| UsageError(format!("invalid --timezone {tz_name:?}: {e}")))?;
        let at_ms = time::parse_instant(text, &tz)
            .map_err(|e| UsageError(format!("invalid --split-at {text:?}: {e}")))?;
        // RFC 3339 in the zone the instant was read in (UTC where it has no local time).
        let label = chrono::TimeZone::timestamp_millis_opt(&tz, at_ms)
            .single()
            .map_or_else(
                || time::format_ms(at_ms),
                |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        Ok(Some(Split {
            at_ms,
            label,
            control: self.control.clone(),
        }))
    }
}

pub fn run(args: Args) -> Result<()> {
    let spec = load_funnel(&args.funnel)?;
    let store = StoreLayout::new(&args.store).open_existing()?;
    let analyze = options(Some(&store), &args.scope, None, false)?;
    let opts = CompareOptions {
        by: args.by.clone(),
        baseline: args.baseline.clone(),
        attribution: match args.attribution {
            AttributionArg::Step1 => Attribution::Step1,
            AttributionArg::FirstTouch => Attribution::FirstTouch,
            AttributionArg::LastTouch => Attribution::LastTouch,
        },
        adjust_for: args.adjust.adjust_for.clone(),
        split: args.adjust.split(&analyze)?,
        min_persons: args.min_persons,
        analyze,
    };
    let c = match args.engine.cluster() {
        None => compare(&store, &spec, &opts)?,
        // The same funnels on the cluster, and the same statistics on their reports.
        Some(cluster) => {
            let specs = comparison_specs(&spec, &opts);
            let reports = crate::cluster::analyze(
                cluster,
                crate::cluster::Source::Store(&store),
                &specs,
                &analyze_options(&opts),
                None,
            )?;
            compare_reports(&specs, reports, &opts)?
        }
    };
    let text = export::compare::render(&c, args.format);
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => out!("{text}"),
    }
    Ok(())
}
