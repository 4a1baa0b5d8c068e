//! `funnel compare`

use std::path::PathBuf;

use anyhow::{Context, Result};
use funnel_analysis::{CompareOptions, compare};
use funnel_core::{Attribution, StoreLayout, load_funnel};

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
    let text = export::compare::render(&c, args.format);
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => out!("{text}"),
    }
    Ok(())
}
