//! `funnel generate`

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use funnel_generate::{ChatEffect, GenerateOptions, OutputFormat, generate};

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
    /// JOURNEY=W1:W2:W3 (repeatable): the chat surfaces a journey's sessions are clicked on,
    /// as weights of one_to_one, group, official_account [default: 0.55:0.30:0.15 for all].
    /// Per-surface rates stay as they are: plants a Simpson's-paradox mix.
    #[arg(long, value_name = "JOURNEY=W1:W2:W3")]
    pub chat_mix: Vec<String>,
    /// CHAT=DELTA[@YYYY-MM-DD] (repeatable): add DELTA to the chance that a session clicked on
    /// CHAT continues past its first step (warning page passed, page viewed, app opened), from
    /// that day on (Asia/Shanghai) or always. Plants a dated change on one surface.
    #[arg(long, value_name = "CHAT=DELTA[@DATE]", allow_hyphen_values = true)]
    pub chat_effect: Vec<String>,
}

fn chat_mix(text: &str) -> Result<(String, [f64; 3])> {
    let bad = || {
        UsageError(format!(
            "invalid --chat-mix {text:?}: expected JOURNEY=W1:W2:W3"
        ))
    };
    let (journey, weights) = text.split_once('=').ok_or_else(bad)?;
    let w: Vec<f64> = weights
        .split(':')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let w: [f64; 3] = w.try_into().map_err(|_| bad())?;
    Ok((journey.trim().to_string(), w))
}

fn chat_effect(text: &str) -> Result<ChatEffect> {
    let bad = |why: &str| UsageError(format!("invalid --chat-effect {text:?}: {why}"));
    let (chat, rest) = text
        .split_once('=')
        .ok_or_else(|| bad("expected CHAT=DELTA[@YYYY-MM-DD]"))?;
    let (delta, from) = match rest.split_once('@') {
        Some((d, day)) => (
            d,
            Some(
                NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d")
                    .map_err(|e| bad(&format!("date {day:?}: {e}")))?,
            ),
        ),
        None => (rest, None),
    };
    let delta = delta
        .trim()
        .parse::<f64>()
        .map_err(|_| bad(&format!("delta {delta:?} is not a number")))?;
    Ok(ChatEffect {
        chat: chat.trim().to_string(),
        delta,
        from,
    })
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
    opts.chat_mix = args
        .chat_mix
        .iter()
        .map(|t| chat_mix(t))
        .collect::<Result<_>>()?;
    opts.chat_effects = args
        .chat_effect
        .iter()
        .map(|t| chat_effect(t))
        .collect::<Result<_>>()?;
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
