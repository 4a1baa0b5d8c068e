//! `funnel analyze`

use std::path::PathBuf;

use anyhow::{Context, Result};
use funnel_core::load_funnel;

use crate::export::{Format, render};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    pub store: PathBuf,
    /// Funnel definition (TOML); repeat to compute several funnels in one pass over the store.
    #[arg(long = "funnel", required = true)]
    pub funnels: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let specs = args
        .funnels
        .iter()
        .map(|p| load_funnel(p))
        .collect::<Result<Vec<_>, _>>()?;
    let reports = funnel_analysis::analyze(&args.store, &specs)?;
    let text = render(&reports, args.format);
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => out!("{text}"),
    }
    Ok(())
}
