//! `funnel`: conversion-funnel analytics over WeChat and shop event exports.
//!
//! Thin glue: one file per subcommand; the work happens in the library crates. Errors are
//! printed on one line to stderr and mapped to the documented exit codes (see `exit_code`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: ingest and analysis allocate many small strings,
/// and glibc's malloc/free was a third of ingest's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `println!` that stops quietly when stdout is closed (`funnel ... | head`).
macro_rules! outln {
    ($($t:tt)*) => { $crate::write_out(&format!("{}\n", format_args!($($t)*))) };
}

/// `print!` with the same behaviour as [`outln!`].
macro_rules! out {
    ($($t:tt)*) => { $crate::write_out(&format!($($t)*)) };
}

mod analyze;
mod cluster;
mod compare;
mod demo;
mod export;
mod generate;
mod ingest;
mod inspect;
mod report;
mod sql;
mod stitch;
mod table;
mod verify;
mod worker;

/// `funnel --version`: the package version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("FUNNEL_GIT_REVISION"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "funnel",
    version = VERSION,
    about = "Cross-platform conversion-funnel analytics for WeChat and shop event exports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load export files (CSV, JSON lines, Parquet, gzip; files or directories) into a store.
    Ingest(ingest::Args),
    /// Write deterministic synthetic exports of the scenario, with a ground-truth file.
    Generate(generate::Args),
    /// Compute funnels over a store (ClickHouse windowFunnel semantics, with breakdowns).
    Analyze(analyze::Args),
    /// Compare a funnel's groups (e.g. journeys) against a baseline, with intervals and tests.
    Compare(compare::Args),
    /// Write the HTML report (and a Markdown twin): funnels, comparison, trends, data quality.
    Report(report::Args),
    /// Print the SQL a cluster engine runs for a funnel (ClickHouse dialect so far).
    Sql(sql::Args),
    /// Summarise what a store holds.
    Inspect(inspect::Args),
    /// Check every file of a store against its manifest (size, checksum, Parquet footer).
    Verify(verify::Args),
    /// Run the whole job on the sample data shipped in data/.
    Demo(demo::Args),
    /// What a cluster ingest runs on its workers (read input files with the ingest's readers).
    #[command(hide = true)]
    SparkWorker(worker::Args),
}

/// A usage or configuration error found by the CLI itself (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Exit codes (README, CONTRACT §3): 0 success; 2 usage or configuration error; 3 input data
/// error (a file cannot be read at all, or the rejected share exceeds --max-reject-rate, or there
/// is no store); 4 the store is damaged (a file missing or not as its manifest records it, or
/// an unreadable manifest); 5 another ingest held the store's lock beyond --lock-timeout; 1
/// anything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<ingest::UnreadFile>() {
            return e.exit;
        }
        if let Some(e) = cause.downcast_ref::<funnel_ingest::IngestError>() {
            return if e.is_usage_error() {
                2
            } else if e.is_input_error() {
                3
            } else if e.is_damage() {
                4
            } else if e.is_lock_timeout() {
                5
            } else if let funnel_ingest::IngestError::Core(e) = e {
                core_exit_code(e)
            } else {
                1
            };
        }
        if let Some(e) = cause.downcast_ref::<funnel_generate::GenerateError>() {
            return match e {
                funnel_generate::GenerateError::InvalidOption { .. } => 2,
                _ => 1,
            };
        }
        if let Some(e) = cause.downcast_ref::<funnel_core::CoreError>() {
            return core_exit_code(e);
        }
        if cause.downcast_ref::<funnel_core::SpecError>().is_some() {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<funnel_analysis::AnalysisError>() {
            return match e {
                funnel_analysis::AnalysisError::Spec(_)
                | funnel_analysis::AnalysisError::Option { .. } => 2,
                funnel_analysis::AnalysisError::Store(e) => core_exit_code(e),
                _ => 1,
            };
        }
    }
    1
}

/// Longest error line printed, in characters.
const ERROR_LINE_CHARS: usize = 2000;

/// An error message as one line of bounded length: control characters (a newline in a file
/// name, say) are escaped, and a message over [`ERROR_LINE_CHARS`] is cut with a note.
fn one_line(message: &str) -> String {
    let mut out = String::new();
    for (chars, c) in message.chars().enumerate() {
        if chars >= ERROR_LINE_CHARS {
            let rest = message.chars().count() - chars;
            out.push_str(&format!("… [{rest} more characters cut]"));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// No store is an input error (3), an unreadable manifest a damaged store (4).
fn core_exit_code(e: &funnel_core::CoreError) -> u8 {
    match e {
        funnel_core::CoreError::NoStore { .. } => 3,
        funnel_core::CoreError::BadManifest { .. } => 4,
        _ => 1,
    }
}

/// Writes to stdout; a closed pipe ends the process quietly, as it does for other Unix tools.
pub fn write_out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ingest(args) => ingest::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Report(args) => report::run(args),
        Command::Sql(args) => sql::run(args),
        Command::Demo(args) => demo::run(args),
        Command::SparkWorker(args) => worker::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&format!("{err:#}")));
            ExitCode::from(exit_code(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_are_one_bounded_line() {
        assert_eq!(super::one_line("a\nb\tc"), "a\\nb\\tc");
        let long = "é".repeat(super::ERROR_LINE_CHARS + 5);
        let line = super::one_line(&long);
        assert!(line.ends_with("… [5 more characters cut]"), "{line}");
        assert_eq!(
            line.chars().filter(|&c| c == 'é').count(),
            super::ERROR_LINE_CHARS
        );
    }
}
