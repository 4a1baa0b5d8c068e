//! Every seed input of every target's corpus passes its target: the corpus (samples of data/,
//! hand-written hostile cases, and the inputs of fixed findings) as regression tests.

use std::path::{Path, PathBuf};

use funnel_fuzz::{Mutator, TARGETS, Target, check};

fn seeds(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
}

fn replay(name: &str) {
    let target = funnel_fuzz::target(name).unwrap();
    let mut n = 0;
    let mut failures = Vec::new();
    for dir in target.corpus {
        for path in seeds(dir) {
            let input = std::fs::read(&path).unwrap();
            assert!(input.len() <= target.max_len, "{} too long", path.display());
            n += 1;
            if let Err(e) = check(target, &input) {
                failures.push(format!("{}: {e}", path.display()));
            }
        }
    }
    assert!(n >= 3, "{name}: only {n} seed inputs");
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
}

#[test]
fn csv_corpus() {
    replay("csv");
}

#[test]
fn csv_gz_corpus() {
    replay("csv_gz");
}

#[test]
fn jsonl_corpus() {
    replay("jsonl");
}

#[test]
fn jsonl_gz_corpus() {
    replay("jsonl_gz");
}

#[test]
fn parquet_corpus() {
    replay("parquet");
}

#[test]
fn timestamp_corpus() {
    replay("timestamp");
}

#[test]
fn amount_corpus() {
    replay("amount");
}

#[test]
fn funnel_toml_corpus() {
    replay("funnel_toml");
}

#[test]
fn sql_quote_corpus() {
    replay("sql_quote");
}

#[test]
fn every_target_has_a_test() {
    let here = include_str!("corpus.rs");
    for t in TARGETS {
        assert!(
            here.contains(&format!("replay(\"{}\")", t.name)),
            "{}",
            t.name
        );
    }
}

/// A short deterministic burst of mutations on the fast targets, so that a regression a seed
/// input does not reach directly still shows in `cargo test`.
#[test]
fn a_burst_of_mutations_finds_nothing() {
    for name in ["timestamp", "amount", "funnel_toml", "sql_quote"] {
        let target: &Target = funnel_fuzz::target(name).unwrap();
        let inputs: Vec<Vec<u8>> = target
            .corpus
            .iter()
            .flat_map(|d| seeds(d))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let mut m = Mutator::new(20_211_001, target.dictionary, target.max_len);
        for _ in 0..2000 {
            let mut x = inputs[m.below(inputs.len())].clone();
            let other = m.below(inputs.len());
            m.mutate(&mut x, &inputs[other]);
            if let Err(e) = check(target, &x) {
                panic!("{name}: {e}\ninput: {:?}", String::from_utf8_lossy(&x));
            }
        }
    }
}
