//! Issue 11, "nothing lost, nothing hung": readers beside ingests, store integrity, the store
//! lock, and what a failed run leaves behind.

use std::path::Path;
use std::process::Command as StdCommand;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{generate, ingest_json, repo};

/// `funnel analyze` in a loop beside back-to-back ingests into the same store: every analysis
/// reads one whole generation, though each ingest's commit retires the generation before it.
#[test]
fn analyze_beside_back_to_back_ingests_always_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let inputs: Vec<_> = (0..6u64)
        .map(|seed| {
            let dir = tmp.path().join(format!("in{seed}"));
            generate(&dir, 150, 100 + seed, &["--format", "csv"]);
            dir
        })
        .collect();
    // Many buckets: an analysis spends long enough reading files for a commit to fall inside.
    ingest_json(&store, &[&inputs[0]], &["--buckets", "128"]);
    let funnel = repo().join("data/funnels/all_journeys_by_journey.toml");
    let stop = AtomicBool::new(false);
    let (runs, failures) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let (mut runs, mut failures) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) || runs < 3 {
                let out = StdCommand::new(env!("CARGO_BIN_EXE_funnel"))
                    .args(["analyze", "--store", store.to_str().unwrap(), "--funnel"])
                    .arg(&funnel)
                    .args(["--format", "json"])
                    .env("RUST_BACKTRACE", "0")
                    .output()
                    .unwrap();
                runs += 1;
                if !out.status.success() {
                    failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
            }
            (runs, failures)
        });
        for input in &inputs[1..] {
            ingest_json(&store, &[input], &[]);
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert!(
        failures.is_empty(),
        "{} of {runs} analyses failed: {failures:?}",
        failures.len()
    );
    // Once no reader holds it, the next commit removes every superseded generation.
    ingest_json(&store, &[&inputs[0]], &[]);
    assert_eq!(generations(&store).len(), 1, "{:?}", generations(&store));
}

/// The generation directories (`gNNNNNN`) of a store.
fn generations(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 7 && n.starts_with('g'))
        .collect();
    names.sort();
    names
}
