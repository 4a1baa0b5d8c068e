//! End-to-end tests of the `funnel` binary: generate -> ingest -> compare with the generator's
//! ground truth, re-ingest, batches, crash safety, hostile inputs, exit codes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{TimestampMillisecondType, UInt64Type};
use assert_cmd::Command;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

#[path = "cli/hostile_input.rs"]
mod hostile_input;
// A crate root looks for its modules beside itself (tests/), not in tests/cli/.
#[path = "cli/store_safety.rs"]
mod store_safety;

fn funnel() -> Command {
    let mut c = Command::cargo_bin("funnel").unwrap();
    c.env("RUST_BACKTRACE", "0");
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `funnel` with args, expecting `code`; returns (stdout, stderr).
fn run(args: &[&str], code: i32) -> (String, String) {
    let out = funnel().args(args).output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "funnel {args:?}\nstdout: {o}\nstderr: {e}"
    );
    (o, e)
}

fn ingest_json(store: &Path, inputs: &[&Path], extra: &[&str]) -> Value {
    let mut args = vec![
        "ingest",
        "--store",
        store.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    let (out, _) = run(&args, 0);
    serde_json::from_str(&out).unwrap()
}

fn generate(dir: &Path, persons: u64, seed: u64, extra: &[&str]) -> Value {
    let mut args = vec![
        "generate",
        "--out",
        dir.to_str().unwrap(),
        "--persons",
        &*Box::leak(persons.to_string().into_boxed_str()),
        "--seed",
        &*Box::leak(seed.to_string().into_boxed_str()),
    ];
    args.extend_from_slice(extra);
    run(&args, 0);
    serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap()
}

/// A stored event, as read back from the store's Parquet files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Stored {
    event_id: String,
    user_id: String,
    person_id: String,
    event_type: String,
    ts: i64,
    hash: u64,
}

fn manifest(store: &Path) -> Value {
    let text = std::fs::read_to_string(store.join("current/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn read_parquet(path: &Path) -> Vec<arrow::array::RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// Every stored event; also checks each bucket file's order and bucket assignment.
fn read_store(store: &Path) -> Vec<Stored> {
    let m = manifest(store);
    let buckets = m["buckets"].as_u64().unwrap();
    let mut out = Vec::new();
    for f in m["event_files"].as_array().unwrap() {
        let bucket = f["bucket"].as_u64().unwrap();
        let mut file_rows = Vec::new();
        for b in read_parquet(&store.join("current").join(f["path"].as_str().unwrap())) {
            let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
            let (ids, users, persons, types) =
                (s("event_id"), s("user_id"), s("person_id"), s("event_type"));
            let ts = b
                .column_by_name("ts")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>()
                .clone();
            let hash = b
                .column_by_name("_content_hash")
                .unwrap()
                .as_primitive::<UInt64Type>()
                .clone();
            for i in 0..b.num_rows() {
                file_rows.push(Stored {
                    event_id: ids.value(i).into(),
                    user_id: users.value(i).into(),
                    person_id: persons.value(i).into(),
                    event_type: types.value(i).into(),
                    ts: ts.value(i),
                    hash: hash.value(i),
                });
            }
        }
        assert_eq!(file_rows.len() as u64, f["rows"].as_u64().unwrap());
        for w in file_rows.windows(2) {
            let key = |s: &Stored| (s.person_id.clone(), s.ts, s.event_id.clone());
            assert!(
                key(&w[0]) < key(&w[1]),
                "bucket file not sorted: {:?} then {:?}",
                w[0],
                w[1]
            );
        }
        for r in &file_rows {
            let h = xxh3(&r.person_id) % buckets;
            assert_eq!(h, bucket, "{} in the wrong bucket", r.person_id);
        }
        out.extend(file_rows);
    }
    out.sort();
    out
}

/// The bucket hash as the README documents it: xxh3_64 (seed 0) of the person_id's bytes.
fn xxh3(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

fn identity(store: &Path) -> HashMap<String, String> {
    let m = manifest(store);
    let mut out = HashMap::new();
    if let Some(f) = m["identity_file"].as_str() {
        for b in read_parquet(&store.join("current").join(f)) {
            let ids = b.column_by_name("id").unwrap().as_string::<i32>().clone();
            let persons = b
                .column_by_name("person_id")
                .unwrap()
                .as_string::<i32>()
                .clone();
            for i in 0..b.num_rows() {
                out.insert(ids.value(i).to_string(), persons.value(i).to_string());
            }
        }
    }
    out
}

fn quarantine_reasons(store: &Path) -> BTreeMap<String, u64> {
    let m = manifest(store);
    let mut out = BTreeMap::new();
    for f in m["quarantine_files"].as_array().unwrap() {
        for b in read_parquet(&store.join("current").join(f.as_str().unwrap())) {
            let reasons = b
                .column_by_name("reason")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let raw = b.column_by_name("raw").unwrap().as_string::<i32>().clone();
            let file = b
                .column_by_name("source_file")
                .unwrap()
                .as_string::<i32>()
                .clone();
            for i in 0..b.num_rows() {
                assert!(!file.value(i).is_empty());
                assert!(raw.is_valid(i));
                *out.entry(reasons.value(i).to_string()).or_default() += 1;
            }
        }
    }
    out
}

fn counts(v: &Value) -> (u64, u64, u64, u64) {
    let g = |k: &str| v[k].as_u64().unwrap();
    (
        g("rows_read"),
        g("rows_stored"),
        g("rows_rejected"),
        g("rows_duplicate"),
    )
}

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

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const HEADER: &str = "event_id,user_id,event_type,ts,journey,campaign\n";

#[test]
fn hostile_inputs_never_panic_and_exit_with_the_documented_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let store = d.join("store");
    let s = store.to_str().unwrap();

    // Empty file and header only: nothing to read, not an error.
    write(&d.join("empty.csv"), b"");
    write(&d.join("header.csv"), HEADER.as_bytes());
    write(&d.join("empty.jsonl"), b"\n\n");
    let r = ingest_json(
        &store,
        &[
            &d.join("empty.csv"),
            &d.join("header.csv"),
            &d.join("empty.jsonl"),
        ],
        &[],
    );
    assert_eq!(counts(&r), (0, 0, 0, 0));

    // UTF-8 BOM and CRLF line ends.
    let bom = format!(
        "\u{feff}{}e1,u1,click,2021-09-17 10:00:00,external_link,c1\r\ne2,u1,purchase,2021-09-17 10:05:00,,\r\n",
        HEADER.replace('\n', "\r\n")
    );
    write(&d.join("bom.csv"), bom.as_bytes());
    let r = ingest_json(&store, &[&d.join("bom.csv")], &[]);
    assert_eq!(counts(&r), (2, 1, 1, 0));
    assert_eq!(r["rejected_by_reason"]["missing_order_id"], 1);
    let events = read_store(&store);
    assert_eq!(events[0].event_id, "e1");
    assert_eq!(events[0].ts, 1_631_844_000_000);

    // A 10 MB single line: one malformed record, quarantined, nothing lost.
    let mut long = HEADER.as_bytes().to_vec();
    long.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    long.push(b'\n');
    write(&d.join("long.csv"), &long);
    let r = ingest_json(&store, &[&d.join("long.csv")], &[]);
    assert_eq!(r["rejected_by_reason"]["malformed_record"], 1);

    // Binary garbage as JSON lines: every line is a malformed record.
    let garbage: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    write(&d.join("garbage.jsonl"), &garbage);
    let r = ingest_json(&store, &[&d.join("garbage.jsonl")], &[]);
    let (read, _, rejected, _) = counts(&r);
    assert_eq!(read, rejected);
    assert_eq!(
        r["rejected_by_reason"]["malformed_record"].as_u64(),
        Some(rejected)
    );

    let generation = manifest(&store)["generation"].clone();
    let fails = |args: &[&str], code: i32, needle: &str| {
        let (_, err) = run(args, code);
        assert!(err.contains(needle), "stderr {err:?} lacks {needle:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        assert!(!err.contains("panicked"));
    };
    // Binary garbage as CSV or Parquet: the file cannot be read at all.
    write(&d.join("garbage.csv"), &garbage);
    write(&d.join("garbage.parquet"), &garbage);
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    fails(
        &["ingest", "--store", s, &p("garbage.csv")],
        3,
        "garbage.csv",
    );
    fails(
        &["ingest", "--store", s, &p("garbage.parquet")],
        3,
        "garbage.parquet",
    );

    // Truncated gzip: names the file and the line reached.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut text = HEADER.to_string();
    for i in 0..20_000 {
        text.push_str(&format!(
            "t{i},u{i},click,2021-09-17 10:00:00,external_link,c\n"
        ));
    }
    gz.write_all(text.as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    write(&d.join("cut.csv.gz"), &bytes[..bytes.len() / 2]);
    fails(
        &["ingest", "--store", s, &p("cut.csv.gz")],
        3,
        "cut.csv.gz: line",
    );

    // Unknown extension, missing file, bad options.
    write(&d.join("notes.txt"), b"hello");
    fails(
        &["ingest", "--store", s, &p("notes.txt")],
        3,
        "unsupported file type",
    );
    fails(&["ingest", "--store", s, &p("nope.csv")], 3, "nope.csv");
    fails(
        &[
            "ingest",
            "--store",
            s,
            "--timezone",
            "Mars/Olympus",
            &p("bom.csv"),
        ],
        2,
        "Mars/Olympus",
    );
    fails(
        &[
            "ingest",
            "--store",
            s,
            "--max-reject-rate",
            "7",
            &p("bom.csv"),
        ],
        2,
        "--max-reject-rate",
    );
    let (_, err) = run(
        &["ingest", "--store", s, "--no-such-flag", &p("bom.csv")],
        2,
    );
    assert!(err.contains("--no-such-flag"));
    // None of the failed runs changed the store.
    assert_eq!(manifest(&store)["generation"], generation);
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
fn demo_runs_on_the_shipped_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let data = repo().join("data/sample");
    let (out, _) = run(
        &[
            "demo",
            "--data",
            data.to_str().unwrap(),
            "--out",
            tmp.path().to_str().unwrap(),
        ],
        0,
    );
    assert!(out.contains("Ingested"), "{out}");
    assert!(out.contains("Clicks by journey"), "{out}");
    // The shipped sample reconciles with its shipped truth.
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("data/sample-truth.json")).unwrap(),
    )
    .unwrap();
    let m = manifest(&tmp.path().join("store"));
    assert_eq!(m["totals"]["rows_read"], truth["expected"]["rows_read"]);
    assert_eq!(m["totals"]["rows_stored"], truth["expected"]["rows_stored"]);
    assert_eq!(m["persons"], truth["persons"]);
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

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A store of the shipped sample, built once per test binary run.
fn sample_store() -> PathBuf {
    static STORE: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("store");
            ingest_json(&store, &[&repo().join("data/sample")], &[]);
            (dir, store)
        })
        .1
        .clone()
}

/// `funnel analyze --store STORE --funnel FUNNEL --format json EXTRA...`, parsed.
fn analyze_json(store: &Path, funnel: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "analyze",
        "--store",
        store.to_str().unwrap(),
        "--funnel",
        funnel.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&run(&args, 0).0).unwrap()
}

fn analyze(store: &Path, funnels: &[&str], format: &str) -> String {
    let mut args = vec![
        "analyze",
        "--store",
        store.to_str().unwrap(),
        "--format",
        format,
    ];
    let paths: Vec<String> = funnels
        .iter()
        .map(|f| repo().join("data/funnels").join(f).display().to_string())
        .collect();
    for p in &paths {
        args.push("--funnel");
        args.push(p);
    }
    run(&args, 0).0
}

#[test]
fn analyze_json_follows_the_contract() {
    let store = sample_store();
    let out = analyze(&store, &["all_journeys_by_journey.toml"], "json");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["funnel"], "click to purchase by journey");
    assert_eq!(v["window_seconds"], 86_400);
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups[0]["key"], serde_json::json!({}));
    let journeys: Vec<&str> = groups[1..]
        .iter()
        .map(|g| g["key"]["journey"].as_str().unwrap())
        .collect();
    assert_eq!(
        journeys,
        ["external_link", "mini_program", "tao_code", "wechat_native"]
    );
    for g in groups {
        let steps = g["steps"].as_array().unwrap();
        let first = steps[0]["persons"].as_u64().unwrap();
        assert_eq!(steps[0]["conversion_from_previous"], 1.0);
        assert_eq!(steps[0]["dropped_from_previous"], 0);
        for w in steps.windows(2) {
            let (a, b) = (
                w[0]["persons"].as_u64().unwrap(),
                w[1]["persons"].as_u64().unwrap(),
            );
            assert!(b <= a);
            assert_eq!(w[1]["dropped_from_previous"].as_u64().unwrap(), a - b);
            // serde_json's default float parsing may be one ulp off the printed shortest form.
            let close = |x: &Value, y: f64| (x.as_f64().unwrap() - y).abs() < 1e-12;
            assert!(close(
                &w[1]["conversion_from_previous"],
                b as f64 / a as f64
            ));
            assert!(close(
                &w[1]["conversion_from_first"],
                b as f64 / first as f64
            ));
        }
    }
    // Every person who clicked falls under the journey of some click: groups cover the total.
    let total = groups[0]["steps"][0]["persons"].as_u64().unwrap();
    let by_journey: u64 = groups[1..]
        .iter()
        .map(|g| g["steps"][0]["persons"].as_u64().unwrap())
        .sum();
    assert!(by_journey >= total);
    // Several funnels in one run: an array, each element the same as when run alone.
    let both: Value = serde_json::from_str(&analyze(
        &store,
        &[
            "external_link_to_purchase.toml",
            "all_journeys_by_journey.toml",
        ],
        "json",
    ))
    .unwrap();
    assert_eq!(both[1], v);
}

#[test]
fn analyze_is_deterministic_and_snapshots_hold() {
    let store = sample_store();
    let funnels = [
        "external_link_to_purchase.toml",
        "external_link_first_login.toml",
        "wechat_native_to_purchase.toml",
        "all_journeys_by_journey.toml",
    ];
    for format in ["table", "markdown", "csv", "json"] {
        let a = analyze(&store, &funnels, format);
        assert_eq!(
            a,
            analyze(&store, &funnels, format),
            "{format} output differs between runs"
        );
        if format == "table" || format == "markdown" {
            insta::assert_snapshot!(format!("sample_{format}"), a);
        }
    }
}

#[test]
fn row_groups_hold_whole_persons_and_do_not_change_results() {
    // The sample in tiny row groups and few buckets: many units per bucket file.
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ingest_json(
        &store,
        &[&repo().join("data/sample")],
        &["--buckets", "4", "--row-group-rows", "1000"],
    );
    let m = manifest(&store);
    let mut groups_seen = 0;
    for f in m["event_files"].as_array().unwrap() {
        let path = store.join("current").join(f["path"].as_str().unwrap());
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap();
        let sizes: Vec<usize> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows() as usize)
            .collect();
        groups_seen += sizes.len();
        let persons: Vec<String> = read_parquet(&path)
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name("person_id").unwrap().as_string::<i32>();
                (0..b.num_rows())
                    .map(|i| a.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut end = 0;
        for size in &sizes {
            end += size;
            if end < persons.len() {
                assert_ne!(
                    persons[end - 1],
                    persons[end],
                    "{}: a row group ends inside a person",
                    path.display()
                );
            }
        }
    }
    assert!(groups_seen >= 24, "only {groups_seen} row groups");
    for f in [
        "all_journeys_by_journey.toml",
        "external_link_extended.toml",
        "journeys_compared.toml",
        "warning_page_by_campaign.toml",
    ] {
        let funnel = repo().join("data/funnels").join(f);
        for extra in [&[][..], &["--interval", "day"][..]] {
            assert_eq!(
                analyze_json(&store, &funnel, extra),
                analyze_json(&sample_store(), &funnel, extra),
                "{f} {extra:?}"
            );
        }
    }
}

#[test]
fn bad_funnel_files_exit_2_naming_the_problem() {
    let store = sample_store();
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "window = \"1d\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n",
            "missing field `name`",
        ),
        (
            "name = \"n\"\nwindow = \"1 day\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n",
            "window = \"1 day\"",
        ),
        ("name = \"n\"\nwindow = \"1d\"\n", "at least one [[steps]]"),
        (
            "name = \"n\"\nwindow = \"1d\"\nmode = \"allow_reentry\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n",
            "allow_reentry requires strict_order",
        ),
        (
            "name = \"n\"\nwindow = \"1d\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\nwhere = { colour = \"red\" }\n",
            "steps[0].where = \"colour\": no such column",
        ),
        (
            "name = \"n\"\nwindow = \"1d\"\nbreakdown = \"colour\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n",
            "breakdown = \"colour\"",
        ),
        (
            "name = \"n\"\nwindow = \"1d\"\ncolour = \"red\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n",
            "unknown field `colour`",
        ),
        (
            "name = \"n\"\nwindow = \"1d\"\nmode = \"strict_order\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n[[steps]]\nname = \"b\"\nevent_type = \"view\"\noptional = true\n",
            "modes cannot be combined",
        ),
        (
            "name = \"n\"\nwindow = \"1d\"\nhold_constant = \"shoe_size\"\n[[steps]]\nname = \"a\"\nevent_type = \"click\"\n",
            "hold_constant = \"shoe_size\": no such column",
        ),
        ("name = \"n\nwindow", "not a valid funnel file"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (_, err) = run(
            &[
                "analyze",
                "--store",
                store.to_str().unwrap(),
                "--funnel",
                path.to_str().unwrap(),
            ],
            2,
        );
        assert!(
            err.contains(needle) && err.contains(&format!("bad{i}.toml")),
            "case {i}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let (_, err) = run(
        &[
            "analyze",
            "--store",
            store.to_str().unwrap(),
            "--funnel",
            "/no/such.toml",
        ],
        2,
    );
    assert!(err.contains("/no/such.toml"), "{err}");
    let missing = tmp.path().join("nostore");
    let f = repo().join("data/funnels/external_link_to_purchase.toml");
    run(
        &[
            "analyze",
            "--store",
            missing.to_str().unwrap(),
            "--funnel",
            f.to_str().unwrap(),
        ],
        3,
    );
}

/// One row of an audit table (`--persons-out`).
#[derive(Debug)]
struct AuditRow {
    group: String,
    person: String,
    level: usize,
    open: bool,
    /// (ts, event_id) per step up to the level; `None` for a skipped optional step.
    chain: Vec<Option<(i64, String)>>,
}

/// Reads an audit table of one funnel, checking the funnel name and that nothing is recorded
/// beyond each row's level.
fn read_audit(path: &Path, spec: &funnel_core::FunnelSpec) -> Vec<AuditRow> {
    let mut rows = Vec::new();
    for b in read_parquet(path) {
        // polars writes large strings; read them as plain strings.
        let s = |c: &str| {
            arrow::compute::cast(
                b.column_by_name(c).unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap()
            .as_string::<i32>()
            .clone()
        };
        let (group, funnel, person) = (s("group"), s("funnel"), s("person_id"));
        let level = b
            .column_by_name("level")
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt32Type>()
            .clone();
        let open = b
            .column_by_name("window_open")
            .unwrap()
            .as_boolean()
            .clone();
        let steps: Vec<_> = (1..=spec.steps.len())
            .map(|k| {
                (
                    b.column_by_name(&format!("step_{k}_ts"))
                        .unwrap()
                        .as_primitive::<TimestampMillisecondType>()
                        .clone(),
                    s(&format!("step_{k}_event_id")),
                )
            })
            .collect();
        for i in 0..b.num_rows() {
            assert_eq!(funnel.value(i), spec.name);
            let level = level.value(i) as usize;
            assert!(
                steps[level..]
                    .iter()
                    .all(|(t, e)| t.is_null(i) && e.is_null(i))
            );
            rows.push(AuditRow {
                group: group.value(i).to_string(),
                person: person.value(i).to_string(),
                level,
                open: open.value(i),
                chain: steps[..level]
                    .iter()
                    .map(|(t, e)| {
                        assert_eq!(t.is_valid(i), e.is_valid(i));
                        t.is_valid(i).then(|| (t.value(i), e.value(i).to_string()))
                    })
                    .collect(),
            });
        }
    }
    rows
}

/// Runs `analyze --format json --persons-out` on one funnel: (spec, report, the temporary
/// directory holding the audit table, the audit table's path).
fn analyze_with_audit(
    store: &Path,
    funnel_file: &Path,
    extra: &[&str],
) -> (funnel_core::FunnelSpec, Value, tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let audit_path = tmp.path().join("persons.parquet");
    let spec = funnel_core::load_funnel(funnel_file).unwrap();
    let report = analyze_json(
        store,
        funnel_file,
        &[&["--persons-out", audit_path.to_str().unwrap()], extra].concat(),
    );
    (spec, report, tmp, audit_path)
}

/// Every number of a report re-derived from the audit table (`--persons-out`), and every chain in
/// the audit table checked against the stored events it names.
#[test]
fn reports_trace_to_the_audit_table_and_the_events() {
    let store = sample_store();
    let funnel_file = repo().join("data/funnels/external_link_first_login.toml");
    let (spec, report, _tmp, audit_path) = analyze_with_audit(
        &store,
        &funnel_file,
        &["--interval", "week", "--cutoff", "2021-10-08"],
    );
    assert_eq!(
        report["cutoff"], "2021-10-07T16:00:00.000Z",
        "a date is local midnight in the store's zone"
    );

    // The stored events, by event_id.
    let m = manifest(&store);
    let mut events: HashMap<String, BTreeMap<String, Option<String>>> = HashMap::new();
    let mut event_ts: HashMap<String, i64> = HashMap::new();
    for f in m["event_files"].as_array().unwrap() {
        for b in read_parquet(&store.join("current").join(f["path"].as_str().unwrap())) {
            let ts = b
                .column_by_name("ts")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>()
                .clone();
            let cols: Vec<(String, arrow::array::StringArray)> = [
                "event_id",
                "event_type",
                "journey",
                "chat_type",
                "warning_action",
            ]
            .iter()
            .map(|c| {
                (
                    c.to_string(),
                    b.column_by_name(c).unwrap().as_string::<i32>().clone(),
                )
            })
            .collect();
            for i in 0..b.num_rows() {
                let row: BTreeMap<String, Option<String>> = cols
                    .iter()
                    .map(|(c, a)| (c.clone(), a.is_valid(i).then(|| a.value(i).to_string())))
                    .collect();
                let id = row["event_id"].clone().unwrap();
                event_ts.insert(id.clone(), ts.value(i));
                events.insert(id, row);
            }
        }
    }

    // The audit table; this funnel has no optional step, so every chain is complete.
    struct Row {
        group: String,
        level: usize,
        open: bool,
        chain: Vec<(i64, String)>,
    }
    let rows: Vec<Row> = read_audit(&audit_path, &spec)
        .into_iter()
        .map(|r| Row {
            group: r.group,
            level: r.level,
            open: r.open,
            chain: r
                .chain
                .into_iter()
                .map(|c| c.expect("no step is optional"))
                .collect(),
        })
        .collect();
    let cutoff_ms = 1_633_622_400_000i64; // 2021-10-07T16:00:00Z
    for r in &rows {
        // Each step of the chain is a stored event that satisfies that step, in time order,
        // within the window, and not after the cutoff.
        for (k, (ts, id)) in r.chain.iter().enumerate() {
            let e = &events[id];
            assert_eq!(event_ts[id], *ts);
            assert!(*ts <= cutoff_ms);
            let step = &spec.steps[k];
            assert_eq!(e["event_type"].as_deref(), Some(step.event_type.as_str()));
            for f in &step.filters {
                assert!(
                    e[&f.column].as_ref().is_some_and(|v| f.values.contains(v)),
                    "{id} fails {f:?}"
                );
            }
        }
        for w in r.chain.windows(2) {
            assert!(w[0].0 <= w[1].0);
        }
        if let (Some(first), Some(last)) = (r.chain.first(), r.chain.last()) {
            assert!(last.0 <= first.0 + spec.window_ms);
            assert_eq!(r.open, first.0 + spec.window_ms > cutoff_ms);
        }
        let key: Value = serde_json::from_str(&r.group).unwrap();
        if let Some(ct) = key.get("chat_type") {
            assert_eq!(events[&r.chain[0].1]["chat_type"].as_deref(), ct.as_str());
        }
    }

    // Every group's numbers from the audit rows.
    let groups = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["trend"].as_array().unwrap());
    let mut checked = 0;
    for g in groups {
        let key = serde_json::to_string(&g["key"]).unwrap();
        let mine: Vec<&Row> = rows.iter().filter(|r| r.group == key).collect();
        for (k, step) in g["steps"].as_array().unwrap().iter().enumerate() {
            let reached = mine.iter().filter(|r| r.level > k).count() as u64;
            assert_eq!(step["persons"].as_u64().unwrap(), reached, "{key} step {k}");
            if k == 0 {
                continue;
            }
            let pending = mine.iter().filter(|r| r.level == k && r.open).count() as u64;
            assert_eq!(
                step["pending"].as_u64().unwrap(),
                pending,
                "{key} step {k} pending"
            );
            let mut gaps: Vec<i64> = mine
                .iter()
                .filter(|r| r.level > k)
                .map(|r| r.chain[k].0 - r.chain[k - 1].0)
                .collect();
            let ttc = &step["time_to_convert"]["from_previous"];
            if gaps.is_empty() {
                assert!(ttc.is_null());
                continue;
            }
            gaps.sort();
            let len = gaps.len();
            let median = if len % 2 == 1 {
                gaps[len / 2] as f64
            } else {
                (gaps[len / 2 - 1] + gaps[len / 2]) as f64 / 2.0
            };
            let p90 = gaps[(len * 9).div_ceil(10) - 1] as f64;
            let mean = gaps.iter().sum::<i64>() as f64 / len as f64;
            assert_eq!(ttc["persons"].as_u64().unwrap(), len as u64);
            assert!(
                (ttc["median"].as_f64().unwrap() - median / 1000.0).abs() < 1e-9,
                "{key} step {k} median"
            );
            assert!(
                (ttc["p90"].as_f64().unwrap() - p90 / 1000.0).abs() < 1e-9,
                "{key} step {k} p90"
            );
            assert!(
                (ttc["mean"].as_f64().unwrap() - mean / 1000.0).abs() < 1e-6,
                "{key} step {k} mean"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "only {checked} time-to-convert figures checked"
    );

    // --closed-windows-only leaves out exactly the persons whose window was open.
    let closed = analyze_json(
        &store,
        &funnel_file,
        &["--cutoff", "2021-10-08", "--closed-windows-only"],
    );
    let all = &report["groups"][0];
    let kept = &closed["groups"][0];
    let open_rows = rows.iter().filter(|r| r.group == "{}" && r.open).count() as u64;
    assert_eq!(kept["excluded_open_windows"].as_u64().unwrap(), open_rows);
    assert_eq!(
        kept["steps"][0]["persons"].as_u64().unwrap() + open_rows,
        all["steps"][0]["persons"].as_u64().unwrap()
    );
    assert!(
        kept["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["pending"] == 0)
    );
}

/// The extended funnel's chains obey every rule they claim: optional login, `within`, same item,
/// no reported link between click and purchase.
#[test]
fn extended_chains_obey_their_rules() {
    let store = sample_store();
    let funnel_file = repo().join("data/funnels/external_link_extended.toml");
    let (spec, report, _tmp, audit_path) = analyze_with_audit(&store, &funnel_file, &[]);

    // Stored events: by id, and each person's report-warnings.
    let m = manifest(&store);
    // event_id -> (ts, event_type, warning_action, item_id)
    type Ev = (i64, String, Option<String>, Option<String>);
    let mut by_id: HashMap<String, Ev> = HashMap::new();
    let mut reports_of: HashMap<String, Vec<i64>> = HashMap::new();
    for f in m["event_files"].as_array().unwrap() {
        for b in read_parquet(&store.join("current").join(f["path"].as_str().unwrap())) {
            let ts = b
                .column_by_name("ts")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>()
                .clone();
            let s = |c: &str| b.column_by_name(c).unwrap().as_string::<i32>().clone();
            let (id, person, et, wa, item) = (
                s("event_id"),
                s("person_id"),
                s("event_type"),
                s("warning_action"),
                s("item_id"),
            );
            for i in 0..b.num_rows() {
                let opt =
                    |a: &arrow::array::StringArray| a.is_valid(i).then(|| a.value(i).to_string());
                by_id.insert(
                    id.value(i).to_string(),
                    (ts.value(i), et.value(i).to_string(), opt(&wa), opt(&item)),
                );
                if et.value(i) == "warning" && opt(&wa).as_deref() == Some("report") {
                    reports_of
                        .entry(person.value(i).to_string())
                        .or_default()
                        .push(ts.value(i));
                }
            }
        }
    }
    let mut logins_skipped = 0;
    let mut rows_total = 0;
    let mut through_login = 0u64;
    for r in read_audit(&audit_path, &spec) {
        if r.group != "{}" || r.level == 0 {
            continue;
        }
        rows_total += 1;
        let chain: Vec<Option<&Ev>> = r
            .chain
            .iter()
            .map(|c| c.as_ref().map(|(_, id)| &by_id[id]))
            .collect();
        let first = chain[0].expect("step 1 is always matched");
        for (k, e) in chain.iter().enumerate() {
            let Some(e) = e else {
                assert!(
                    spec.steps[k].optional,
                    "only an optional step may be skipped"
                );
                logins_skipped += 1;
                continue;
            };
            assert_eq!(e.1, spec.steps[k].event_type);
            assert!(e.0 <= first.0 + spec.window_ms);
            assert_eq!(e.3, first.3, "hold_constant item_id");
            if k == 2 {
                through_login += 1;
                let prev = chain[1].unwrap();
                assert!(e.0 - prev.0 <= 600_000, "login within 10m of continue");
            }
        }
        if r.level == 4 {
            let purchase = chain[3].unwrap().0;
            let reported = reports_of
                .get(&r.person)
                .map(|v| v.iter().any(|t| *t > first.0 && *t < purchase));
            assert_ne!(
                reported,
                Some(true),
                "a report between click and purchase voids the chain"
            );
        }
    }
    assert!(rows_total > 1000 && logins_skipped > 0);
    let login = &report["groups"][0]["steps"][2];
    assert_eq!(
        login["persons"].as_u64().unwrap(),
        through_login,
        "an optional step counts who went through it"
    );
    assert!(report["extensions"].as_array().unwrap().len() >= 4);
}

/// Attempts, first/last-touch attribution and any-order on the sample, against what they must
/// equal or bound.
#[test]
fn attempts_attribution_and_any_order() {
    let store = sample_store();
    let tmp = tempfile::tempdir().unwrap();
    let analyze_text = |name: &str, body: &str| -> Value {
        let path = tmp.path().join(name);
        std::fs::write(&path, body).unwrap();
        analyze_json(&store, &path, &[])
    };
    let steps = "[[steps]]\nname = \"click\"\nevent_type = \"click\"\nwhere = { journey = \"external_link\" }\n[[steps]]\nname = \"continue\"\nevent_type = \"warning\"\nwhere = { warning_action = \"continue\" }\n[[steps]]\nname = \"purchase\"\nevent_type = \"purchase\"\n";
    let persons = |v: &Value, g: usize| -> Vec<u64> {
        v["groups"][g]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["persons"].as_u64().unwrap())
            .collect()
    };
    // Attempts: every external-link click is one attempt.
    let clicks: u64 = read_store(&store).len() as u64; // all events, for a bound
    let attempts = analyze_text(
        "a.toml",
        &format!(
            "name = \"a\"\nwindow = \"1d\"\ncount = \"attempts\"\nbreakdown = \"chat_type\"\n{steps}"
        ),
    );
    let base = analyze_text(
        "p.toml",
        &format!("name = \"p\"\nwindow = \"1d\"\nbreakdown = \"chat_type\"\n{steps}"),
    );
    let summary: Value = serde_json::from_str(
        &run(
            &[
                "inspect",
                "--store",
                store.to_str().unwrap(),
                "--format",
                "json",
            ],
            0,
        )
        .0,
    )
    .unwrap();
    let ext_clicks = summary["clicks_by_journey"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["value"] == "external_link")
        .unwrap()["events"]
        .as_u64()
        .unwrap();
    assert_eq!(persons(&attempts, 0)[0], ext_clicks);
    assert!(ext_clicks < clicks);
    // Each attempt is attributed to its own click: the groups partition the attempts.
    let groups = attempts["groups"].as_array().unwrap();
    let by_value: u64 = groups[1..]
        .iter()
        .map(|g| g["steps"][0]["persons"].as_u64().unwrap())
        .sum();
    assert_eq!(by_value, ext_clicks);
    // More attempts than persons convert at least as often as persons do.
    assert!(persons(&attempts, 0)[2] >= persons(&base, 0)[2]);

    // First and last touch: one group per person, so the groups add up to the total.
    for attribution in ["first_touch", "last_touch"] {
        let v = analyze_text(
            "t.toml",
            &format!(
                "name = \"t\"\nwindow = \"1d\"\nbreakdown = \"chat_type\"\nattribution = \"{attribution}\"\n{steps}"
            ),
        );
        let total = persons(&v, 0);
        let gs = v["groups"].as_array().unwrap();
        for k in 0..3 {
            let sum: u64 = gs[1..]
                .iter()
                .map(|g| g["steps"][k]["persons"].as_u64().unwrap())
                .sum();
            assert_eq!(sum, total[k], "{attribution} step {k}");
        }
        assert_eq!(
            total,
            persons(&base, 0),
            "attribution does not change the total"
        );
    }

    // Any order can only reach further than step order.
    let any = analyze_text(
        "any.toml",
        &format!("name = \"any\"\nwindow = \"1d\"\norder = \"any\"\n{steps}"),
    );
    let strict = persons(&base, 0);
    for (a, s) in persons(&any, 0).iter().zip(&strict) {
        assert!(a >= s, "any order {a} < step order {s}");
    }
}

#[test]
fn compare_reports_differences_and_extra_step_costs() {
    let store = sample_store();
    let f = repo().join("data/funnels/journeys_compared.toml");
    let args = |baseline: &str, format: &str| {
        vec![
            "compare".to_string(),
            "--store".into(),
            store.display().to_string(),
            "--funnel".into(),
            f.display().to_string(),
            "--by".into(),
            "journey".into(),
            "--baseline".into(),
            baseline.into(),
            "--format".into(),
            format.into(),
        ]
    };
    let a = args("wechat_native", "json");
    let (out, _) = run(&a.iter().map(String::as_str).collect::<Vec<_>>(), 0);
    let c: Value = serde_json::from_str(&out).unwrap();
    let groups: Vec<&str> = c["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        ["external_link", "mini_program", "tao_code", "wechat_native"]
    );
    // The baseline has no warning page and no login: those are costs of the other journeys,
    // and only purchase is a shared milestone.
    let steps: BTreeSet<&str> = c["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, BTreeSet::from(["purchase"]));
    let costs: Vec<(&str, &str)> = c["extra_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["group"].as_str().unwrap(), s["step"].as_str().unwrap()))
        .collect();
    assert!(
        costs.contains(&("external_link", "warning page passed"))
            && costs.contains(&("external_link", "login"))
    );
    for d in c["differences"].as_array().unwrap() {
        let (lo, hi, diff) = (
            d["ci_low"].as_f64().unwrap(),
            d["ci_high"].as_f64().unwrap(),
            d["difference"].as_f64().unwrap(),
        );
        assert!(lo <= diff && diff <= hi);
        assert!(d["p_holm"].as_f64().unwrap() >= d["p_value"].as_f64().unwrap());
    }
    // The same numbers as `analyze` with a breakdown by journey.
    let ext = &c["groups"][0];
    assert_eq!(
        ext["clicks"],
        c["report"]["groups"][1]["steps"][0]["persons"]
    );
    // Markdown and table render; an unknown baseline is a usage error naming the values.
    run(
        &args("wechat_native", "markdown")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        0,
    );
    let (_, err) = run(
        &args("carrier_pigeon", "table")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        2,
    );
    assert!(
        err.contains("carrier_pigeon") && err.contains("wechat_native"),
        "{err}"
    );
}

#[test]
fn report_is_self_contained_and_reproducible() {
    let store = sample_store();
    let tmp = tempfile::tempdir().unwrap();
    let funnels = repo().join("data/funnels");
    let write = |name: &str| -> (String, String) {
        let html = tmp.path().join(format!("{name}.html"));
        let md = tmp.path().join(format!("{name}.md"));
        run(
            &[
                "report",
                "--store",
                store.to_str().unwrap(),
                "--funnel",
                funnels
                    .join("external_link_first_login.toml")
                    .to_str()
                    .unwrap(),
                "--funnel",
                funnels
                    .join("all_journeys_by_journey.toml")
                    .to_str()
                    .unwrap(),
                "--compare",
                funnels.join("journeys_compared.toml").to_str().unwrap(),
                "--out",
                html.to_str().unwrap(),
                "--markdown",
                md.to_str().unwrap(),
            ],
            0,
        );
        (
            std::fs::read_to_string(html).unwrap(),
            std::fs::read_to_string(md).unwrap(),
        )
    };
    let (a, a_md) = write("a");
    let (b, b_md) = write("b");
    assert_eq!(a, b, "same store and options, same bytes");
    assert_eq!(a_md, b_md);
    for needle in [
        "Journeys compared",
        "Data quality",
        "Time to convert",
        "by week of the click",
        "store manifest sha-256",
        "<svg",
    ] {
        assert!(a.contains(needle), "report lacks {needle:?}");
    }
    // Self-contained: the only URLs are the SVG namespace, never something to fetch.
    let namespace = "xmlns=\"http://www.w3.org/2000/svg\"";
    assert_eq!(
        a.matches("http").count(),
        a.matches(namespace).count(),
        "an external reference"
    );
    assert!(a.matches(namespace).count() > 5);
    assert!(!a.contains("<script"), "no scripts");
    // The manifest records the input paths, so its hash depends on where the repository is.
    let redacted: String = a_md
        .lines()
        .map(|l| match l.find("sha-256 `") {
            Some(i) => format!("{}sha-256 `[hash]`{}", &l[..i], &l[i + 9 + 64 + 1..]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("sample_report_markdown", redacted);
}

/// A ClickHouse server from before Arrow output (Debian's 18.x): it refuses `FORMAT ArrowStream`
/// and answers `FORMAT JSONEachRow` with `rows`. Returns its URL and the queries it received.
fn old_clickhouse(rows: &'static str) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            let (status, answer) = if body.trim_end().ends_with("FORMAT ArrowStream") {
                (
                    "500 Internal Server Error",
                    "Code: 73, e.displayText() = DB::Exception: Unknown format ArrowStream",
                )
            } else {
                ("200 OK", rows)
            };
            tx.send(body).unwrap();
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            )
            .unwrap();
        }
    });
    (url, rx)
}

#[test]
fn cluster_engines_run_the_compiled_query_or_refuse_clearly() {
    let store = sample_store();
    let s = store.to_str().unwrap();
    let plain = repo().join("data/funnels/external_link_to_purchase.toml");
    let plain = plain.to_str().unwrap();
    let extended = repo().join("data/funnels/external_link_extended.toml");
    let extended = extended.to_str().unwrap();

    let (spark_sql, _) = run(&["sql", "--dialect", "spark", "--funnel", plain], 0);
    assert!(spark_sql.contains("aggregate(") && spark_sql.contains("unix_millis"));
    let (ch_sql, _) = run(&["sql", "--dialect", "clickhouse", "--funnel", plain], 0);
    assert!(ch_sql.contains("windowFunnel(86400000)") && ch_sql.contains("arrayFold"));
    let (_, e) = run(&["sql", "--dialect", "spark", "--funnel", extended], 2);
    assert!(
        e.contains("external_link_extended.toml") && e.contains("exactly"),
        "{e}"
    );

    // `analyze` on ClickHouse at an address where nothing listens, with `args` after it.
    let unreachable = |args: &[&str], code: i32| -> String {
        let base = [
            "analyze",
            "--engine",
            "clickhouse",
            "--clickhouse-url",
            "http://127.0.0.1:9",
        ];
        run(&[&base[..], args].concat(), code).1
    };
    let (_, e) = run(
        &[
            "analyze",
            "--engine",
            "clickhouse",
            "--store",
            s,
            "--funnel",
            plain,
        ],
        2,
    );
    assert!(e.contains("--clickhouse-url"), "{e}");
    let e = unreachable(&["--table", "events", "--funnel", extended], 2);
    assert!(
        e.contains("hold_constant cannot be computed exactly in SQL"),
        "{e}"
    );
    let e = unreachable(&["--store", s, "--funnel", plain, "--interval", "week"], 2);
    assert!(e.contains("--interval"), "{e}");
    let e = unreachable(&["--store", s, "--funnel", plain], 1);
    assert!(e.contains("cannot reach clickhouse"), "{e}");
    let spark_code = if cfg!(feature = "spark") { 1 } else { 2 };
    let (_, e) = run(
        &[
            "analyze",
            "--engine",
            "spark",
            "--spark-remote",
            "sc://127.0.0.1:9",
            "--path",
            "/data/events",
            "--funnel",
            plain,
        ],
        spark_code,
    );
    assert!(e.contains("spark"), "{e}");

    // An old server: the JSON fallback, and the rows become the embedded engine's report shape.
    let (url, queries) = old_clickhouse(concat!(
        "{\"grp\":0,\"level\":1,\"window_open\":0,\"persons\":\"6\",\"cutoff_ms\":\"1633881017474\"}\n",
        "{\"grp\":0,\"level\":3,\"window_open\":1,\"persons\":\"4\",\"cutoff_ms\":\"1633881017474\"}\n",
        "{\"grp\":0,\"level\":4,\"window_open\":0,\"persons\":\"10\",\"cutoff_ms\":\"1633881017474\"}\n",
    ));
    let (out, _) = run(
        &[
            "analyze",
            "--engine",
            "clickhouse",
            "--clickhouse-url",
            &url,
            "--table",
            "lake.events",
            "--funnel",
            plain,
            "--format",
            "json",
        ],
        0,
    );
    let sent: Vec<String> = queries.try_iter().collect();
    assert_eq!(sent.len(), 2);
    assert!(sent[0].contains("FROM `lake`.`events`") && sent[1].ends_with("FORMAT JSONEachRow\n"));
    let report: Value = serde_json::from_str(&out).unwrap();
    let steps = &report["groups"][0]["steps"];
    let persons: Vec<u64> = (0..4)
        .map(|k| steps[k]["persons"].as_u64().unwrap())
        .collect();
    assert_eq!(persons, vec![20, 14, 14, 10]);
    assert_eq!(steps[3]["pending"], 4);
    assert_eq!(steps[1]["dropped_from_previous"], 6);
    assert!(steps[2]["time_to_convert"].is_null());
    assert_eq!(report["cutoff"], "2021-10-10T15:50:17.474Z");
}
