//! What the CLI tests share: running the binary, reading stores and reports back.

#![allow(dead_code)]

use arrow::array::{Array, AsArray};
use arrow::datatypes::{TimestampMillisecondType, UInt64Type};
use assert_cmd::Command;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub fn funnel() -> Command {
    let mut c = Command::cargo_bin("funnel").unwrap();
    c.env("RUST_BACKTRACE", "0");
    c
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `funnel` with args, expecting `code`; returns (stdout, stderr).
pub fn run(args: &[&str], code: i32) -> (String, String) {
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

pub fn ingest_json(store: &Path, inputs: &[&Path], extra: &[&str]) -> Value {
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

pub fn generate(dir: &Path, persons: u64, seed: u64, extra: &[&str]) -> Value {
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
pub struct Stored {
    pub event_id: String,
    pub user_id: String,
    pub person_id: String,
    pub event_type: String,
    pub ts: i64,
    pub hash: u64,
}

pub fn manifest(store: &Path) -> Value {
    let text = std::fs::read_to_string(store.join("current/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn read_parquet(path: &Path) -> Vec<arrow::array::RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// Every stored event; also checks each bucket file's order and bucket assignment.
pub fn read_store(store: &Path) -> Vec<Stored> {
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
pub fn xxh3(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

pub fn identity(store: &Path) -> HashMap<String, String> {
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

pub fn quarantine_reasons(store: &Path) -> BTreeMap<String, u64> {
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

pub fn counts(v: &Value) -> (u64, u64, u64, u64) {
    let g = |k: &str| v[k].as_u64().unwrap();
    (
        g("rows_read"),
        g("rows_stored"),
        g("rows_rejected"),
        g("rows_duplicate"),
    )
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

pub const HEADER: &str = "event_id,user_id,event_type,ts,journey,campaign\n";

pub fn walk(d: &Path) -> Vec<PathBuf> {
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
pub fn sample_store() -> PathBuf {
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
/// `funnel analyze --store STORE --funnel FUNNEL EXTRA...`, expecting exit `code`.
pub fn analyze_file(store: &Path, funnel: &Path, extra: &[&str], code: i32) -> (String, String) {
    let mut args = vec![
        "analyze",
        "--store",
        store.to_str().unwrap(),
        "--funnel",
        funnel.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, code)
}

pub fn analyze_json(store: &Path, funnel: &Path, extra: &[&str]) -> Value {
    let args = [&["--format", "json"], extra].concat();
    serde_json::from_str(&analyze_file(store, funnel, &args, 0).0).unwrap()
}

pub fn analyze(store: &Path, funnels: &[&str], format: &str) -> String {
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

/// `funnel compare --store STORE --funnel FUNNEL --by BY --baseline BASELINE EXTRA...`,
/// expecting exit `code`.
pub fn compare_run(
    store: &Path,
    funnel: &Path,
    (by, baseline): (&str, &str),
    extra: &[&str],
    code: i32,
) -> (String, String) {
    let mut args = vec![
        "compare",
        "--store",
        store.to_str().unwrap(),
        "--funnel",
        funnel.to_str().unwrap(),
        "--by",
        by,
        "--baseline",
        baseline,
    ];
    args.extend_from_slice(extra);
    run(&args, code)
}
