//! Issue 11, "nothing lost, nothing hung": readers beside ingests, store integrity, the store
//! lock, and what a failed run leaves behind.

use std::path::Path;
use std::process::Command as StdCommand;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::util::{funnel, generate, ingest_json, manifest, repo, run};

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

/// The store's files as its manifest lists them, in `current`: (relative path, absolute path).
fn bucket_files(store: &Path) -> Vec<(String, std::path::PathBuf)> {
    manifest(store)["event_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let rel = f["path"].as_str().unwrap().to_string();
            let path = store.join("current").join(&rel);
            (rel, path)
        })
        .collect()
}

/// `funnel verify --store STORE --format json`, expecting `code`.
fn verify_json(store: &Path, code: i32) -> (Value, String) {
    let (out, err) = run(
        &[
            "verify",
            "--store",
            store.to_str().unwrap(),
            "--format",
            "json",
        ],
        code,
    );
    (serde_json::from_str(&out).unwrap(), err)
}

/// xxh3-128 of a file's bytes, as the manifest records it.
fn xxh3_128(path: &Path) -> String {
    format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(&std::fs::read(path).unwrap())
    )
}

#[test]
fn the_manifest_records_every_files_size_and_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    generate(&a, 80, 1, &[]);
    generate(&b, 80, 2, &["--format", "jsonl"]);
    let store = tmp.path().join("store");
    ingest_json(&store, &[&a], &[]);
    ingest_json(&store, &[&b], &[]);
    let m = manifest(&store);
    let mut listed: Vec<String> = ["event_files", "id_files"]
        .iter()
        .flat_map(|k| m[k].as_array().unwrap().iter())
        .map(|f| f["path"].as_str().unwrap().to_string())
        .chain(
            m["quarantine_files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q.as_str().unwrap().to_string()),
        )
        .chain(m["identity_file"].as_str().map(str::to_string))
        .collect();
    listed.sort();
    let files = m["files"].as_object().unwrap();
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), listed);
    // Carried (hard-linked, named after generation 1) and rewritten files alike.
    assert!(listed.iter().any(|f| f.ends_with("-g000001.parquet")));
    assert!(listed.iter().any(|f| f.ends_with("-g000002.parquet")));
    for (rel, sum) in files {
        let path = store.join("current").join(rel);
        assert_eq!(
            sum["bytes"],
            std::fs::metadata(&path).unwrap().len(),
            "{rel}"
        );
        assert_eq!(sum["xxh3_128"], xxh3_128(&path), "{rel}");
    }
    let (report, _) = verify_json(&store, 0);
    assert_eq!(report["sound"], true);
    assert_eq!(report["files"], listed.len());
    assert_eq!(report["files_without_checksum"], 0);
}

#[test]
fn a_store_from_before_checksums_gets_them_at_its_next_ingest() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    generate(&a, 80, 1, &[]);
    generate(&b, 80, 2, &[]);
    let store = tmp.path().join("store");
    ingest_json(&store, &[&a], &[]);
    // The manifest as this version's predecessor wrote it: no `files`, no lease file.
    let path = store.join("current/manifest.json");
    let mut m = manifest(&store);
    m.as_object_mut().unwrap().remove("files").unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    std::fs::remove_file(store.join("current/.lease")).unwrap();
    let (report, _) = verify_json(&store, 0);
    assert_eq!(report["files_without_checksum"], report["files"]);
    ingest_json(&store, &[&b], &[]);
    let m = manifest(&store);
    let files = m["files"].as_object().unwrap();
    assert!(files.len() as u64 > m["event_files"].as_array().unwrap().len() as u64);
    for (rel, sum) in files {
        assert_eq!(
            sum["xxh3_128"],
            xxh3_128(&store.join("current").join(rel)),
            "{rel}"
        );
    }
    let (report, _) = verify_json(&store, 0);
    assert_eq!(report["files_without_checksum"], 0);
}

#[test]
fn ingest_refuses_to_carry_a_damaged_file_and_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    generate(&a, 100, 1, &[]);
    generate(&b, 100, 2, &["--format", "jsonl"]);
    let store = tmp.path().join("store");
    ingest_json(&store, &[&a], &[]);
    let (rel, path) = bucket_files(&store).swap_remove(3);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let before = manifest(&store);
    let target = std::fs::read_link(store.join("current")).unwrap();
    let out = funnel()
        .args(["ingest", "--store", store.to_str().unwrap()])
        .arg(&b)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(&rel) && err.contains("damaged"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(manifest(&store), before);
    assert_eq!(std::fs::read_link(store.join("current")).unwrap(), target);
}

#[test]
fn verify_finds_truncated_changed_and_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 100, 3, &[]);
    let store = tmp.path().join("store");
    ingest_json(&store, &[&input], &[]);
    let (out, _) = run(&["verify", "--store", store.to_str().unwrap()], 0);
    assert!(out.contains("sound"), "{out}");

    let files = bucket_files(&store);
    let (rel, path) = &files[0];
    let good = std::fs::read(path).unwrap();
    let damaged = |bytes: &[u8], expect: &str| {
        std::fs::write(path, bytes).unwrap();
        let (report, err) = verify_json(&store, 4);
        assert_eq!(report["sound"], false);
        let problems = report["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0]["file"], rel.as_str());
        let problem = problems[0]["problem"].as_str().unwrap();
        assert!(problem.contains(expect), "{problem}");
        assert!(
            err.contains(rel.as_str()) && err.contains("damaged"),
            "{err}"
        );
        std::fs::write(path, &good).unwrap();
        verify_json(&store, 0);
    };
    damaged(&good[..good.len() / 2], "bytes, the manifest records");
    // Same size, one byte changed in the middle: only the checksum tells.
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x20;
    damaged(&flipped, "content changed");

    // A deleted file, and a second problem: both reported, the table names each file.
    std::fs::remove_file(path).unwrap();
    let (other_rel, other) = &files[1];
    let bytes = std::fs::read(other).unwrap();
    std::fs::write(other, &bytes[..bytes.len() - 1]).unwrap();
    let (report, _) = verify_json(&store, 4);
    let problems: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["file"].as_str().unwrap().into(),
                p["problem"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.contains(&(rel.clone(), "missing".into())),
        "{problems:?}"
    );
    assert!(problems.iter().any(|(f, _)| f == other_rel));
    let (out, err) = run(&["verify", "--store", store.to_str().unwrap()], 4);
    assert!(
        out.contains(rel.as_str()) && out.contains(other_rel.as_str()),
        "{out}"
    );
    assert!(err.contains("1 more problem"), "{err}");

    // An unreadable manifest is a damaged store too, for every command.
    std::fs::write(store.join("current/manifest.json"), "{\"format\": ").unwrap();
    for cmd in ["verify", "inspect"] {
        let (_, err) = run(&[cmd, "--store", store.to_str().unwrap()], 4);
        assert!(err.contains("manifest.json"), "{err}");
    }
}

/// Holds the store's lock as another ingest would (the store is created first).
fn hold_lock(store: &Path) -> std::fs::File {
    std::fs::create_dir_all(store).unwrap();
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(store.join(".lock"))
        .unwrap();
    lock.lock().unwrap();
    lock
}

#[test]
fn an_ingest_waits_for_the_lock_and_gives_up_after_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 30, 5, &[]);
    let store = tmp.path().join("store");
    let lock = hold_lock(&store);
    let started = std::time::Instant::now();
    let (_, err) = run(
        &[
            "ingest",
            "--store",
            store.to_str().unwrap(),
            "--lock-timeout",
            "1",
            input.to_str().unwrap(),
        ],
        5,
    );
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(950) && waited.as_secs() < 10,
        "{waited:?}"
    );
    assert!(err.contains(store.to_str().unwrap()), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line while waiting, one when giving up: {err}"
    );
    assert!(lines[0].contains("waiting"), "{err}");
    assert!(!store.join("current").exists());
    for bad in ["-1", "soon"] {
        let store = store.to_str().unwrap();
        let args = ["ingest", "--store", store, "--lock-timeout", bad, "x.csv"];
        run(&args, 2);
    }

    // Released after about a second, while an ingest with the default timeout waits.
    let child = StdCommand::new(env!("CARGO_BIN_EXE_funnel"))
        .args([
            "ingest",
            "--store",
            store.to_str().unwrap(),
            "--format",
            "json",
        ])
        .arg(&input)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    drop(lock);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("waiting"), "{err}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["committed"], true);
    assert_eq!(manifest(&store)["generation"], 1);
}

/// What a store directory holds besides its committed generation: `.scratch` and generation
/// directories other than `current`'s.
fn leftovers(store: &Path) -> Vec<String> {
    let current = std::fs::read_link(store.join("current")).unwrap();
    let mut left: Vec<String> = generations(store)
        .into_iter()
        .filter(|g| Path::new(g) != current)
        .collect();
    if store.join(".scratch").exists() {
        left.push(".scratch".into());
    }
    left
}

#[test]
fn a_failed_ingest_leaves_no_scratch_and_no_generation_behind() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    generate(&a, 60, 1, &[]);
    generate(&b, 60, 2, &["--format", "csv"]);
    let store = tmp.path().join("store");
    ingest_json(&store, &[&a], &[]);
    let before = manifest(&store);

    // The second input is a truncated .csv.gz: exit 3 while reading.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut text = "event_id,user_id,event_type,ts\n".to_string();
    for i in 0..20_000 {
        text.push_str(&format!("t{i},u{i},click,2021-09-17 10:00:00\n"));
    }
    gz.write_all(text.as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    let cut = tmp.path().join("z-cut.csv.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (_, err) = run(
        &[
            "ingest",
            "--store",
            store.to_str().unwrap(),
            b.to_str().unwrap(),
            cut.to_str().unwrap(),
        ],
        3,
    );
    assert!(err.contains("z-cut.csv.gz"), "{err}");
    assert_eq!(leftovers(&store), Vec::<String>::new());
    assert_eq!(manifest(&store), before);

    // Damage found after the new generation directory was begun (exit 4): gone as well.
    let (_, path) = bucket_files(&store).swap_remove(0);
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 10).unwrap();
    run(
        &[
            "ingest",
            "--store",
            store.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
        4,
    );
    assert_eq!(leftovers(&store), Vec::<String>::new());
    assert_eq!(manifest(&store), before);

    // A run refused by --max-reject-rate keeps only its quarantine, in failed/.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "event_id,user_id,event_type,ts\nx1,,click,2021-09-17 10:00:00\n",
    )
    .unwrap();
    run(
        &[
            "ingest",
            "--store",
            store.to_str().unwrap(),
            "--max-reject-rate",
            "0",
            bad.to_str().unwrap(),
        ],
        3,
    );
    assert_eq!(leftovers(&store), Vec::<String>::new());
    let failed: Vec<_> = std::fs::read_dir(store.join("failed"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].path().join("quarantine.parquet").is_file());

    // The same for the first run into a new store, which has no `current` yet.
    let fresh = tmp.path().join("fresh");
    let fresh_arg = fresh.to_str().unwrap();
    let args = ["ingest", "--store", fresh_arg, "--max-reject-rate", "0"];
    run(&[&args[..], &[bad.to_str().unwrap()]].concat(), 3);
    assert_eq!(generations(&fresh), Vec::<String>::new());
    assert!(!fresh.join(".scratch").exists());
}
