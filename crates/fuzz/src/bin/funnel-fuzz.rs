//! `funnel-fuzz --target NAME --seconds S --seed N [--corpus DIR] [--findings DIR]`
//!
//! Runs every seed input of the target once, then mutated seeds until the time (or `--runs`) is
//! up, and writes each failing input, with its message, to the findings directory (a few per
//! distinct failure). The same seed, corpus and number of runs give the same inputs. While it
//! runs, `FINDINGS/in-flight` holds the input being tried, so an input that kills the process
//! (abort, out of memory, stack overflow) is not lost; a run that takes longer than
//! `--timeout` seconds is written as a hang and ends the fuzzer.
//!
//! Exit code: 0 without findings, 1 with findings, 2 on a usage error.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use funnel_fuzz::{Mutator, TARGETS, Target, check, record_panics};

#[derive(Debug, Parser)]
#[command(
    name = "funnel-fuzz",
    about = "Seeded mutation fuzzing of funnel's parsers"
)]
struct Args {
    /// The target: csv, csv_gz, jsonl, jsonl_gz, parquet, timestamp, amount, funnel_toml,
    /// sql_quote.
    #[arg(long)]
    target: String,
    /// How long to run.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Seed of the mutations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this many runs (for reproducing a sequence exactly).
    #[arg(long)]
    runs: Option<u64>,
    /// Directory of seed inputs [default: the target's directories in crates/fuzz/corpus].
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where failing inputs go [default: target/fuzz-findings/TARGET].
    #[arg(long)]
    findings: Option<PathBuf>,
    /// Longest mutated input in bytes [default: the target's].
    #[arg(long)]
    max_len: Option<usize>,
    /// A run taking longer than this many seconds is a hang.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// Inputs kept per distinct failure.
const PER_FAILURE: usize = 3;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match fuzz(&args) {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("funnel-fuzz: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn fuzz(args: &Args) -> Result<usize, String> {
    let target = funnel_fuzz::target(&args.target).ok_or_else(|| {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        format!(
            "no target {:?} (targets: {})",
            args.target,
            names.join(", ")
        )
    })?;
    let seeds = load_seeds(target, args.corpus.as_deref())?;
    let findings = args.findings.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/fuzz-findings")
            .join(target.name)
    });
    std::fs::create_dir_all(&findings).map_err(|e| format!("{}: {e}", findings.display()))?;
    let in_flight_path = findings.join("in-flight");
    let mut in_flight = std::fs::File::create(&in_flight_path)
        .map_err(|e| format!("{}: {e}", in_flight_path.display()))?;
    record_panics();
    eprintln!(
        "funnel-fuzz: target {}, seed {}, {} seed inputs, findings in {} (in-flight input: {})",
        target.name,
        args.seed,
        seeds.len(),
        findings.display(),
        in_flight_path.display()
    );

    let current = Arc::new(Mutex::new(Vec::new()));
    let started_run = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    spawn_watchdog(
        target.name,
        findings.clone(),
        current.clone(),
        started_run.clone(),
        epoch,
        Duration::from_secs(args.timeout),
    );

    let max_len = args.max_len.unwrap_or(target.max_len);
    let mut m = Mutator::new(args.seed, target.dictionary, max_len);
    let deadline = epoch + Duration::from_secs_f64(args.seconds.max(0.0));
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let (mut runs, mut found) = (0u64, 0usize);
    let mut last: Vec<u8> = Vec::new();
    let mut next_report = epoch + Duration::from_secs(10);
    while args.runs.is_none_or(|n| runs < n)
        && (runs < seeds.len() as u64 || Instant::now() < deadline)
    {
        let input = if (runs as usize) < seeds.len() {
            seeds[runs as usize].clone()
        } else {
            let mut x = if !last.is_empty() && m.one_in(4) {
                last.clone()
            } else {
                seeds[m.below(seeds.len())].clone()
            };
            let other = &seeds[m.below(seeds.len())];
            m.mutate(&mut x, other);
            x
        };
        in_flight
            .seek(SeekFrom::Start(0))
            .and_then(|_| in_flight.set_len(0))
            .and_then(|_| in_flight.write_all(&input))
            .map_err(|e| format!("{}: {e}", in_flight_path.display()))?;
        current.lock().expect("current input").clone_from(&input);
        started_run.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let verdict = check(target, &input);
        started_run.store(0, Ordering::SeqCst);
        runs += 1;
        if let Err(message) = verdict {
            found += 1;
            let key = signature(&message);
            let n = failures.entry(key.clone()).or_default();
            *n += 1;
            if *n <= PER_FAILURE {
                write_finding(&findings, target, &input, &message, args.seed, runs)?;
                eprintln!("finding: {}", first_line(&message, 300));
            }
        }
        last = input;
        if Instant::now() >= next_report {
            let secs = epoch.elapsed().as_secs_f64();
            eprintln!(
                "[{secs:6.0} s] {runs} runs ({:.0}/s), {found} findings ({} distinct)",
                runs as f64 / secs,
                failures.len()
            );
            next_report += Duration::from_secs(10);
        }
    }
    let secs = epoch.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&in_flight_path);
    println!(
        "{}: {runs} executions in {secs:.1} s ({:.0}/s), {found} findings ({} distinct), seed {}",
        target.name,
        runs as f64 / secs.max(1e-9),
        failures.len(),
        args.seed
    );
    for (key, n) in &failures {
        println!("  {n:>7}  {key}");
    }
    Ok(found)
}

fn load_seeds(target: &Target, corpus: Option<&Path>) -> Result<Vec<Vec<u8>>, String> {
    let dirs: Vec<PathBuf> = match corpus {
        Some(d) => vec![d.to_path_buf()],
        None => target
            .corpus
            .iter()
            .map(|c| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(c))
            .collect(),
    };
    let mut seeds = Vec::new();
    for dir in dirs {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for p in paths {
            seeds.push(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?);
        }
    }
    if seeds.is_empty() {
        return Err("no seed inputs".into());
    }
    Ok(seeds)
}

/// The failure a message describes: its first line with quoted text (Rust `{:?}` quoting) and
/// numbers folded, so that many inputs of one bug count once.
fn signature(message: &str) -> String {
    let mut out = String::new();
    let mut chars = message.lines().next().unwrap_or("").chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push_str("\"…\"");
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            c if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            c => out.push(c),
        }
        if out.chars().count() >= 160 {
            break;
        }
    }
    out
}

fn first_line(message: &str, max: usize) -> String {
    message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(max)
        .collect()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn write_finding(
    dir: &Path,
    target: &Target,
    input: &[u8],
    message: &str,
    seed: u64,
    run: u64,
) -> Result<(), String> {
    let name = format!("{}-{:016x}", target.name, fnv(input));
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(dir.join(format!("{name}.input")), input)?;
    let note = format!(
        "target {}\nseed {seed}, run {run}\n\n{message}\n",
        target.name
    );
    write(dir.join(format!("{name}.txt")), note.as_bytes())
}

/// Ends the process when one run takes longer than `timeout`, writing its input as a hang.
fn spawn_watchdog(
    target: &'static str,
    findings: PathBuf,
    current: Arc<Mutex<Vec<u8>>>,
    started_run: Arc<AtomicU64>,
    epoch: Instant,
    timeout: Duration,
) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let started = started_run.load(Ordering::SeqCst);
            if started == 0 {
                continue;
            }
            let running = epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(started - 1));
            if running > timeout {
                let input = current.lock().map(|c| c.clone()).unwrap_or_default();
                let name = format!("{target}-hang-{:016x}", fnv(&input));
                let _ = std::fs::write(findings.join(format!("{name}.input")), &input);
                let _ = std::fs::write(
                    findings.join(format!("{name}.txt")),
                    format!("target {target}\nhang: one run took over {timeout:?}\n"),
                );
                println!(
                    "{target}: hang: one run took over {timeout:?}; input in {}",
                    findings.join(format!("{name}.input")).display()
                );
                std::process::exit(1);
            }
        }
    });
}
