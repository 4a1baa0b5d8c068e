//! Ingest against the generator's ground truth: reconciliation, re-ingest, batches, crash
//! safety, the reject-rate limit, and the generator itself.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use crate::util::*;

#[test]
fn ingest_reconciles_with_the_generators_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store) = (tmp.path().join("data"), tmp.path().join("store"));
    // A high fault rate so that every rejection reason occurs.
    let truth = generate(
        &data,
        600,
        11,
        &[
            "--format",
            "mixed",
            "--fault-rate",
            "0.1",
            "--duplicate-rate",
            "0.05",
        ],
    );
    let report = ingest_json(&store, &[&data], &[]);
    let exp = &truth["expected"];
    assert_eq!(counts(&report), counts(exp));
    assert_eq!(report["rejected_by_reason"], exp["rejected_by_reason"]);
    let (read, stored, rejected, dup) = counts(&report);
    assert_eq!(read, stored + rejected + dup);
    for reason in [
        "missing_event_id",
        "missing_user_id",
        "missing_event_type",
        "missing_ts",
        "bad_timestamp",
        "bad_event_type",
        "bad_warning_action",
        "missing_account_id",
        "missing_order_id",
        "bad_amount",
        "negative_amount",
        "malformed_record",
        "duplicate_conflict",
    ] {
        assert!(
            report["rejected_by_reason"][reason].as_u64().unwrap_or(0) > 0,
            "no {reason} in {report}"
        );
    }
    // The quarantine holds every rejected row with its reason.
    let q = quarantine_reasons(&store);
    assert_eq!(serde_json::to_value(&q).unwrap(), exp["rejected_by_reason"]);

    // The store holds exactly the valid distinct events, grouped into the true persons.
    let events = read_store(&store);
    assert_eq!(events.len() as u64, exp["rows_stored"].as_u64().unwrap());
    let ids: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        *by_type.entry(e.event_type.clone()).or_default() += 1;
    }
    assert_eq!(
        serde_json::to_value(&by_type).unwrap(),
        truth["events_by_type"]
    );

    let ident = identity(&store);
    let mut store_person: HashMap<String, String> = HashMap::new();
    for e in &events {
        store_person.insert(e.user_id.clone(), e.person_id.clone());
        if let Some(p) = ident.get(&e.user_id) {
            assert_eq!(
                p, &e.person_id,
                "identity table and events disagree on {}",
                e.user_id
            );
        }
    }
    let true_person = truth["id_person"].as_object().unwrap();
    let mut truth_to_store: HashMap<&str, BTreeSet<String>> = HashMap::new();
    let mut store_to_truth: HashMap<String, BTreeSet<&str>> = HashMap::new();
    for (id, label) in true_person {
        let p = store_person
            .get(id)
            .or_else(|| ident.get(id))
            .unwrap_or_else(|| {
                panic!("id {id} is in no stored event and not in the identity table")
            });
        truth_to_store
            .entry(label.as_str().unwrap())
            .or_default()
            .insert(p.clone());
        store_to_truth
            .entry(p.clone())
            .or_default()
            .insert(label.as_str().unwrap());
    }
    assert!(
        truth_to_store.values().all(|s| s.len() == 1),
        "a true person was split"
    );
    assert!(
        store_to_truth.values().all(|s| s.len() == 1),
        "true persons were merged"
    );
    assert_eq!(
        store_to_truth.len() as u64,
        truth["persons"].as_u64().unwrap()
    );
    assert_eq!(report["persons_in_store"], truth["persons"]);
}

#[test]
fn reingest_adds_nothing_and_two_batches_equal_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 400, 5, &["--format", "mixed"]);
    let one = tmp.path().join("one");
    let first = ingest_json(&one, &[&data], &[]);
    let before = read_store(&one);

    let again = ingest_json(&one, &[&data], &[]);
    assert_eq!(again["rows_stored"], 0);
    assert_eq!(again["rows_read"], first["rows_read"]);
    assert_eq!(
        again["rows_duplicate"].as_u64().unwrap(),
        first["rows_stored"].as_u64().unwrap() + first["rows_duplicate"].as_u64().unwrap()
    );
    assert_eq!(read_store(&one), before);
    assert_eq!(manifest(&one)["runs"].as_array().unwrap().len(), 2);

    // Days 1-14 first, the rest second: the second batch links ids seen in the first.
    let mut days: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    days.sort();
    let (early, late) = days.split_at(days.len() / 2);
    let two = tmp.path().join("two");
    let a = ingest_json(
        &two,
        &early.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &[],
    );
    let b = ingest_json(
        &two,
        &late.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &[],
    );
    assert!(
        b["persons_merged"].as_u64().unwrap() > 0,
        "the second batch merges persons of the first"
    );
    assert_eq!(
        a["rows_stored"].as_u64().unwrap() + b["rows_stored"].as_u64().unwrap(),
        first["rows_stored"].as_u64().unwrap()
    );
    assert_eq!(read_store(&two), before);
    assert_eq!(identity(&two), identity(&one));
    // The tools' entry point: STORE/events, through `current`, to the live generation's
    // events only, after each commit.
    for store in [&one, &two] {
        let link = store.join("events");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("current/events")
        );
        let mut via_link: Vec<PathBuf> = walk(&link)
            .into_iter()
            .map(|p| p.strip_prefix(&link).unwrap().to_path_buf())
            .collect();
        let current = store.join("current/events");
        let mut direct: Vec<PathBuf> = walk(&current)
            .into_iter()
            .map(|p| p.strip_prefix(&current).unwrap().to_path_buf())
            .collect();
        via_link.sort();
        direct.sort();
        assert!(!direct.is_empty());
        assert_eq!(via_link, direct);
    }
}

#[test]
fn killed_ingest_leaves_the_store_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let (small, big) = (tmp.path().join("small"), tmp.path().join("big"));
    generate(&small, 50, 1, &[]);
    generate(&big, 3000, 2, &["--format", "jsonl"]);
    let store = tmp.path().join("store");
    ingest_json(&store, &[&small], &[]);
    let base_manifest = manifest(&store);
    let base_events = read_store(&store);

    // A reference for the state after a completed second run.
    let reference = tmp.path().join("reference");
    ingest_json(&reference, &[&small], &[]);
    ingest_json(&reference, &[&big], &[]);
    let done_events = read_store(&reference);

    let mut completed = false;
    for delay_ms in [5u64, 40, 90, 150, 230, 330, 450, 600] {
        let mut child = StdCommand::new(env!("CARGO_BIN_EXE_funnel"))
            .args([
                "ingest",
                "--store",
                store.to_str().unwrap(),
                "--format",
                "json",
                big.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().ok(); // SIGKILL
        let status = child.wait().unwrap();
        let m = manifest(&store);
        let events = read_store(&store);
        if m == base_manifest {
            assert_eq!(events, base_events);
        } else {
            // The run got to its commit before the kill: then it is wholly there.
            assert!(
                status.success() || m["generation"].as_u64() > base_manifest["generation"].as_u64()
            );
            assert_eq!(events, done_events);
            completed = true;
            break;
        }
    }
    // A clean run completes (or, if one already did, adds nothing).
    let last = ingest_json(&store, &[&big], &[]);
    assert_eq!(read_store(&store), done_events);
    if completed {
        assert_eq!(last["rows_stored"], 0);
    }
    // No generation directories other than the current one are left behind.
    let gens: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('g'))
        .collect();
    assert_eq!(gens.len(), 1, "{gens:?}");
}

#[test]
fn reject_rate_above_the_limit_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let store = d.join("store");
    write(
        &d.join("ok.csv"),
        format!("{HEADER}a1,u1,click,2021-09-17 10:00:00,external_link,c\n").as_bytes(),
    );
    ingest_json(&store, &[&d.join("ok.csv")], &[]);
    let before = manifest(&store);
    write(
        &d.join("bad.csv"),
        format!("{HEADER}b1,u1,click,2021-09-17 10:00:00,,\nb2,u1,click,yesterday,,\nb3,,click,2021-09-17 10:00:00,,\n").as_bytes(),
    );
    let out = funnel()
        .args([
            "ingest",
            "--store",
            store.to_str().unwrap(),
            "--format",
            "json",
            "--max-reject-rate",
            "0.5",
        ])
        .arg(d.join("bad.csv"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["committed"], false);
    assert_eq!(counts(&report), (3, 1, 2, 0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing was committed"), "{err}");
    let q = report["quarantine"].as_str().unwrap();
    assert!(
        Path::new(q).is_file(),
        "the refused run's quarantine is kept at {q}"
    );
    assert_eq!(manifest(&store), before);
    // Under the limit, the same file commits its valid row.
    let r = ingest_json(&store, &[&d.join("bad.csv")], &["--max-reject-rate", "0.7"]);
    assert_eq!(r["committed"], true);
    assert_eq!(r["rows_stored"], 1);
}

#[test]
fn generate_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    generate(&a, 100, 9, &["--format", "parquet"]);
    generate(&b, 100, 9, &["--format", "parquet"]);
    let list = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = walk(d)
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(d).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(list(&a), list(&b));
    run(
        &[
            "generate",
            "--out",
            a.to_str().unwrap(),
            "--persons",
            "1",
            "--seed",
            "1",
            "--fault-rate",
            "2",
        ],
        2,
    );
}

#[test]
fn generate_stays_in_the_years_ingest_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("late");
    let (_, e) = run(
        &[
            "generate",
            "--out",
            out.to_str().unwrap(),
            "--persons",
            "5",
            "--seed",
            "1",
            "--start",
            "9999-12-31",
        ],
        2,
    );
    assert!(
        e.contains("--start") && e.contains("9999-12-31") && e.contains("up to +10000-01-28T"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(!out.exists());
    // At the edges of the range, every generated row is what the truth says.
    for start in ["0001-01-01", "9999-12-30"] {
        let (data, store) = (
            tmp.path().join(start),
            tmp.path().join(format!("{start}-store")),
        );
        let truth = generate(
            &data,
            300,
            3,
            &[
                "--format",
                "mixed",
                "--start",
                start,
                "--days",
                "1",
                "--fault-rate",
                "0.1",
            ],
        );
        let report = ingest_json(&store, &[&data], &[]);
        assert_eq!(counts(&report), counts(&truth["expected"]), "{start}");
    }
}
