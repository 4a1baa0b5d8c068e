//! `funnel generate`

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use funnel_generate::{GenerateOptions, OutputFormat, generate};

use crate::UsageError;
use crate::table::thousands;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Csv,
    Jsonl,
    Parquet,
    /// Chat platform as CSV, shop as JSON lines and Parquet, gzip on alternate days.
    Mixed,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory (files go to DIR/YYYY-MM-DD/PLATFORM.EXT, plus DIR/truth.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of people to simulate.
    #[arg(long)]
    pub persons: u64,
    #[arg(long)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = FormatArg::Csv)]
    pub format: FormatArg,
    /// Gzip every CSV and JSON lines file.
    #[arg(long)]
    pub gzip: bool,
    /// First day (YYYY-MM-DD, Asia/Shanghai).
    #[arg(long, default_value = "2021-09-13")]
    pub start: String,
    #[arg(long, default_value_t = 28)]
    pub days: u32,
    /// Chance per event of an exact re-delivered copy.
    #[arg(long, default_value_t = 0.01)]
    pub duplicate_rate: f64,
    /// Chance per event of a copy with the same event_id and different content.
    #[arg(long, default_value_t = 0.002)]
    pub conflict_rate: f64,
    /// Chance per event of an extra malformed row (reason drawn uniformly).
    #[arg(long, default_value_t = 0.005)]
    pub fault_rate: f64,
    /// Chance per text file that it ends in a truncated line.
    #[arg(long, default_value_t = 0.1)]
    pub truncated_file_rate: f64,
    /// Where to write the ground truth [default: OUT/truth.json].
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// No duplicates, conflicts or malformed rows (overrides the rates).
    #[arg(long)]
    pub clean: bool,
}

pub fn options(args: &Args) -> Result<GenerateOptions> {
    let start = NaiveDate::parse_from_str(&args.start, "%Y-%m-%d")
        .map_err(|e| UsageError(format!("invalid --start {:?}: {e}", args.start)))?;
    let mut opts = GenerateOptions::new(&args.out, args.persons, args.seed);
    opts.format = match args.format {
        FormatArg::Csv => OutputFormat::Csv,
        FormatArg::Jsonl => OutputFormat::Jsonl,
        FormatArg::Parquet => OutputFormat::Parquet,
        FormatArg::Mixed => OutputFormat::Mixed,
    };
    opts.gzip = args.gzip;
    opts.start = start;
    opts.days = args.days;
    opts.duplicate_rate = args.duplicate_rate;
    opts.conflict_rate = args.conflict_rate;
    opts.fault_rate = args.fault_rate;
    opts.truncated_file_rate = args.truncated_file_rate;
    opts.truth = args.truth.clone();
    Ok(if args.clean { opts.clean() } else { opts })
}

pub fn run(args: Args) -> Result<()> {
    let opts = options(&args)?;
    let truth =
        generate(&opts).with_context(|| format!("generating into {}", args.out.display()))?;
    let e = &truth.expected;
    outln!(
        "Wrote {} files with {} rows ({} valid events, {} duplicates, {} malformed or conflicting) to {}",
        truth.files.len(),
        thousands(e.rows_read),
        thousands(e.rows_stored),
        thousands(e.rows_duplicate),
        thousands(e.rows_rejected),
        args.out.display()
    );
    outln!(
        "Ground truth (expected ingest counts, persons, id -> person): {}",
        opts.truth
            .clone()
            .unwrap_or_else(|| args.out.join("truth.json"))
            .display()
    );
    Ok(())
}
