//! `funnel demo`: the whole job on the sample data in data/.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::ingest;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sample exports (default: data/sample of this repository).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory; its `store` is rebuilt from scratch on every run.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
}

/// A command's arguments parsed from `argv` as its command line would be, so the demo takes
/// every default from the command itself (one home for each).
fn command_args<A: clap::Args>(argv: impl IntoIterator<Item = OsString>) -> Result<A> {
    #[derive(clap::Parser)]
    struct Command<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    let argv = std::iter::once(OsString::from("funnel")).chain(argv);
    Ok(<Command<A> as clap::Parser>::try_parse_from(argv)?.args)
}

/// data/sample beside the working directory, else in the source tree this binary was built from.
fn default_data() -> PathBuf {
    let local = PathBuf::from("data/sample");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/sample")
}

pub fn run(args: Args) -> Result<()> {
    let data = args.data.unwrap_or_else(default_data);
    let data = data.canonicalize().unwrap_or(data);
    anyhow::ensure!(
        data.is_dir(),
        crate::UsageError(format!("sample data not found at {}", data.display()))
    );
    let store = args.out.join("store");
    if store.exists() {
        std::fs::remove_dir_all(&store)
            .with_context(|| format!("removing the previous demo store {}", store.display()))?;
    }
    outln!("== 1. Ingest the sample exports in {}\n", data.display());
    let ingest_args: ingest::Args = command_args([
        "--store".into(),
        store.clone().into(),
        "--buckets".into(),
        "16".into(),
        data.clone().into(),
    ])?;
    let report = ingest::run_quiet(&ingest_args)?;
    out!("{}", ingest::report_table(&report));
    outln!("\n== 2. What the store holds\n");
    let generation = funnel_core::StoreLayout::new(&store).open_existing()?;
    let summary = funnel_analysis::inspect(&generation)?;
    out!("{}", crate::inspect::summary_table(&summary));
    let funnels_dir = data.parent().map(|p| p.join("funnels")).unwrap_or_default();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&funnels_dir)
        .with_context(|| format!("reading the example funnels in {}", funnels_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let specs = paths
        .iter()
        .map(|p| funnel_core::load_funnel(p))
        .collect::<Result<Vec<_>, _>>()?;
    outln!(
        "\n== 3. Funnels ({} definitions in {}, one pass over the store)\n",
        specs.len(),
        funnels_dir.display()
    );
    let analysis = funnel_analysis::analyze(
        &generation,
        &specs,
        &funnel_analysis::AnalyzeOptions::default(),
    )?;
    drop(generation);
    out!(
        "{}",
        crate::export::render(&analysis.reports, crate::export::Format::Table)
    );

    // The comparison is computed once, in the report's pass over the store, and printed here.
    let compare_funnel = funnels_dir.join("journeys_compared.toml");
    let mut argv: Vec<OsString> = vec!["--store".into(), store.clone().into()];
    for p in paths.iter().filter(|p| **p != compare_funnel) {
        argv.extend(["--funnel".into(), p.clone().into()]);
    }
    argv.extend([
        "--out".into(),
        args.out.join("report.html").into(),
        "--markdown".into(),
        args.out.join("report.md").into(),
        "--compare".into(),
        compare_funnel.into(),
        // Within the same chat surface, and before/after WeChat's change of 2021-09-17
        // against the WeChat-native pages it did not touch.
        "--adjust-for".into(),
        "chat_type".into(),
        "--split-at".into(),
        "2021-09-17".into(),
        "--control".into(),
        "wechat_native".into(),
        // Of those shown the warning who did not continue: returned to the chat, or reported.
        "--next-by".into(),
        "warning_action".into(),
        "--title".into(),
        "WeChat external links: from click to purchase (sample data)".into(),
    ]);
    let report_args: crate::report::Args = command_args(argv)?;
    let comparison = crate::report::write(&report_args)?.expect("the demo report has a comparison");
    outln!("\n== 4. Journeys compared against WeChat-native pages\n");
    out!(
        "{}",
        crate::export::compare::render(&comparison, crate::export::CompareFormat::Table)
    );
    let html = &report_args.out;
    outln!(
        "\nStore: {} (Parquet; DuckDB: SELECT * FROM read_parquet('{}/events/**/*.parquet', union_by_name=true))",
        store.display(),
        store.display()
    );
    outln!(
        "\n== 5. Report\n\nHTML report (opens in any browser, no network needed): {}\nMarkdown twin: {}",
        html.display(),
        args.out.join("report.md").display()
    );
    Ok(())
}
