//! Regression tests for hostile inputs (issue 11): each reproduces a defect found by feeding
//! the tool malformed files and paths, and checks that nothing is lost or hung.

use arrow::array::{Array, AsArray};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use arrow::datatypes::UInt64Type;
use serde_json::Value;

use crate::util::{
    HEADER, counts, funnel, ingest_json, manifest, read_parquet, read_store, run, write,
};

/// One quarantined row: (line, reason, field, value, raw).
type QRow = (Option<u64>, String, Option<String>, Option<String>, String);

fn quarantine(store: &Path) -> Vec<QRow> {
    let m = manifest(store);
    let mut out = Vec::new();
    for f in m["quarantine_files"].as_array().unwrap() {
        for b in read_parquet(&store.join("current").join(f.as_str().unwrap())) {
            let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
            let (reason, field, value, raw) = (s("reason"), s("field"), s("value"), s("raw"));
            let line = b
                .column_by_name("line")
                .unwrap()
                .as_primitive::<UInt64Type>()
                .clone();
            let opt =
                |a: &arrow::array::StringArray, i| a.is_valid(i).then(|| a.value(i).to_string());
            for i in 0..b.num_rows() {
                out.push((
                    line.is_valid(i).then(|| line.value(i)),
                    reason.value(i).to_string(),
                    opt(&field, i),
                    opt(&value, i),
                    raw.value(i).to_string(),
                ));
            }
        }
    }
    out
}

/// The JSON summary of an ingest of `input` that must succeed within a minute (the defects
/// hung forever).
fn ingest_within_a_minute(store: &Path, input: &Path) -> Value {
    let (s, i) = (store.to_str().unwrap(), input.to_str().unwrap());
    let out = funnel()
        .args(["ingest", "--store", s, "--format", "json", i])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `n` click rows with event ids `{prefix}1..`, a stray quote opening the journey of the rows
/// in `stray`.
fn rows(prefix: &str, n: usize, stray: &[usize]) -> String {
    let mut t = HEADER.to_string();
    for i in 1..=n {
        let journey = if stray.contains(&i) {
            "\"stray"
        } else {
            "external_link"
        };
        t.push_str(&format!(
            "{prefix}{i},u{i},click,2021-09-17T10:00:00Z,{journey},c{i}\n"
        ));
    }
    t
}

#[test]
fn a_symlink_loop_is_walked_once_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    write(
        &d.join("sub/a.csv"),
        b"event_id,user_id,event_type,ts\nL1,u1,click,2021-09-17T10:00:00Z\n",
    );
    std::os::unix::fs::symlink(".", d.join("self")).unwrap();
    std::os::unix::fs::symlink("..", d.join("sub/up")).unwrap();
    let store = tmp.path().join("s");
    let r = ingest_within_a_minute(&store, &d);
    assert_eq!(counts(&r), (1, 1, 0, 0));
    let loops: Vec<&str> = r["skipped_why"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["why"].as_str().unwrap().contains("already walked"))
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(loops.len(), 2, "{loops:?}");
}

#[test]
fn an_unterminated_quote_costs_its_own_row_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    // One stray quote in row 2 of 1,000 (line 3): it swallowed the other 998 rows.
    let one = tmp.path().join("one.csv");
    write(&one, rows("e", 1000, &[2]).as_bytes());
    let r = ingest_json(&store, &[&one], &[]);
    assert_eq!(counts(&r), (1000, 999, 1, 0));
    assert_eq!(r["rejected_by_reason"]["malformed_record"], 1);
    let q = quarantine(&store);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0, Some(3));
    assert_eq!(q[0].4, "e2,u2,click,2021-09-17T10:00:00Z,\"stray,c2");
    let stored = read_store(&store);
    assert!(stored.iter().any(|e| e.event_id == "e1000"));

    // A second stray quote at row 500: 502 of 1,000 were read.
    let two = tmp.path().join("two.csv");
    write(&two, rows("f", 1000, &[2, 500]).as_bytes());
    let r = ingest_json(&store, &[&two], &[]);
    assert_eq!(counts(&r), (1000, 998, 2, 0));

    // A file cut inside a quoted field: the cut-off row is quarantined, not stored.
    let cut = tmp.path().join("cut.csv");
    write(
        &cut,
        format!("{HEADER}g1,u1,click,2021-09-17T10:00:00Z,\"external_li").as_bytes(),
    );
    let r = ingest_json(&store, &[&cut], &[]);
    assert_eq!(counts(&r), (1, 0, 1, 0));

    // Quoted fields with commas, quotes and line ends are still fields.
    let quoted = tmp.path().join("quoted.csv");
    let text =
        format!("{HEADER}h1,u1,click,2021-09-17T10:00:00Z,\"a,b\",\"say \"\"hi\"\"\nthere\"\n");
    write(&quoted, text.as_bytes());
    let r = ingest_json(&store, &[&quoted], &[]);
    assert_eq!(counts(&r), (1, 1, 0, 0));
}

#[test]
fn a_store_inside_its_input_folder_is_never_input() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = tmp.path().join("ex");
    write(&ex.join("a.csv"), rows("e", 50, &[]).as_bytes());
    let store = ex.join("store");
    let first = ingest_json(&store, &[&ex], &[]);
    assert_eq!(counts(&first), (50, 50, 0, 0));
    // Twice: the store (its current link and generation) is skipped, the export is all duplicates.
    let second = ingest_json(&store, &[&ex], &[]);
    assert_eq!(counts(&second), (50, 0, 0, 50));
    assert!(
        second["skipped_why"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["why"].as_str().unwrap().contains("funnel store")),
        "{second}"
    );
    // Another store in the folder is skipped too; a file inside a store named directly is refused.
    let other = ex.join("other");
    ingest_json(&other, &[&ex.join("a.csv")], &[]);
    let third = ingest_json(&store, &[&ex], &[]);
    assert_eq!(counts(&third), (50, 0, 0, 50));
    let bucket = manifest(&store)["event_files"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let inside = store.join("current").join(bucket);
    let (_, err) = run(
        &[
            "ingest",
            "--store",
            other.to_str().unwrap(),
            inside.to_str().unwrap(),
        ],
        3,
    );
    assert!(err.contains("is inside the funnel store"), "{err}");
}

#[test]
fn lines_fields_and_headers_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let s = store.to_str().unwrap();
    // A header of NUL bytes (1 GB in the report; 40 MiB here): unreadable, with a short error.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..40 {
        std::io::Write::write_all(&mut gz, &zeros).unwrap();
    }
    let bomb = tmp.path().join("bomb.csv.gz");
    write(&bomb, &gz.finish().unwrap());
    let (_, err) = run(&["ingest", "--store", s, bomb.to_str().unwrap()], 3);
    assert!(
        err.contains("bomb.csv.gz: line 1") && err.contains("longer than the limit"),
        "{err}"
    );
    assert!(
        err.len() < 1000 && err.trim_end().lines().count() == 1,
        "{err:?}"
    );

    // A record over 16 MiB, a field over 1 MiB (CSV and JSON lines): quarantined, texts cut.
    let mut big = HEADER.as_bytes().to_vec();
    big.extend(b"b1,u1,click,2021-09-17T10:00:00Z,");
    big.extend(std::iter::repeat_n(b'j', 17 << 20));
    big.extend(b",c\nb2,u2,click,2021-09-17T10:00:00Z,");
    big.extend(std::iter::repeat_n(b'j', 2 << 20));
    big.extend(b",c\nb3,u3,click,2021-09-17T10:00:00Z,x,c\n");
    let csv = tmp.path().join("big.csv");
    write(&csv, &big);
    let mut json = Vec::new();
    json.extend(b"{\"event_id\":\"j1\",\"user_id\":\"u1\",\"event_type\":\"click\",\"ts\":\"2021-09-17T10:00:00Z\",\"campaign\":\"");
    json.extend(std::iter::repeat_n(b'k', 17 << 20));
    json.extend(b"\"}\n{\"event_id\":\"j2\",\"user_id\":\"u2\",\"event_type\":\"click\",\"ts\":\"2021-09-17T10:00:00Z\",\"campaign\":\"");
    json.extend(std::iter::repeat_n(b'k', 2 << 20));
    json.extend(b"\"}\n{\"event_id\":\"j3\",\"user_id\":\"u3\",\"event_type\":\"click\",\"ts\":\"2021-09-17T10:00:00Z\"}\n");
    let jsonl = tmp.path().join("big.jsonl");
    write(&jsonl, &json);
    let r = ingest_json(&store, &[&csv, &jsonl], &[]);
    assert_eq!(counts(&r), (6, 2, 4, 0));
    assert_eq!(r["rejected_by_reason"]["record_too_large"], 2);
    assert_eq!(r["rejected_by_reason"]["value_too_large"], 2);
    let q = quarantine(&store);
    for row in &q {
        assert!(
            row.4.len() <= funnel_ingest::QUARANTINE_TEXT_BYTES + 64,
            "raw of {} bytes",
            row.4.len()
        );
        assert!(row.4.contains("more bytes cut"), "{:?}", &row.4[..50]);
    }
    let too_large: Vec<_> = q.iter().filter(|r| r.1 == "value_too_large").collect();
    assert!(too_large.iter().all(|r| {
        r.2.as_deref()
            .is_some_and(|f| f == "journey" || f == "campaign")
    }));
    assert_eq!(
        q.iter()
            .filter(|r| r.1 == "record_too_large")
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        [Some(2), Some(1)]
    );
}

#[test]
fn json_values_keep_their_literal_text() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let f = tmp.path().join("ids.jsonl");
    let mut t = String::new();
    for last in ["901", "902", "903"] {
        t.push_str(&format!(
            "{{\"event_id\":123456789012345678{last},\"user_id\":1,\"event_type\":\"click\",\"ts\":1631844000000}}\n"
        ));
    }
    // Objects and lists are not ids; in a property they are kept as JSON text.
    t.push_str("{\"event_id\":\"o1\",\"user_id\":{\"a\":1},\"event_type\":\"click\",\"ts\":1631844000000}\n");
    t.push_str(
        "{\"event_id\":[1],\"user_id\":\"u\",\"event_type\":\"click\",\"ts\":1631844000000}\n",
    );
    t.push_str("{\"event_id\":\"o3\",\"user_id\":\"u\",\"event_type\":\"click\",\"ts\":1631844000000,\"tags\":[\"a\",1]}\n");
    // An amount as a number and as a string is one value.
    for (id, amount) in [
        ("p1", "99999999999999.9999"),
        ("p2", "\"99999999999999.9999\""),
        ("p3", "1e2"),
        ("p4", "\"1e2\""),
    ] {
        t.push_str(&format!(
            "{{\"event_id\":\"{id}\",\"user_id\":\"u\",\"event_type\":\"purchase\",\"ts\":1631844000000,\"order_id\":\"{id}\",\"amount\":{amount}}}\n"
        ));
    }
    write(&f, t.as_bytes());
    let r = ingest_json(&store, &[&f], &[]);
    assert_eq!(r["rejected_by_reason"]["nested_value"], 2, "{r}");
    assert_eq!(r["rejected_by_reason"]["bad_amount"], 2, "{r}");
    assert_eq!(counts(&r), (10, 6, 4, 0));
    let ids: Vec<String> = read_store(&store).into_iter().map(|e| e.event_id).collect();
    for last in ["901", "902", "903"] {
        assert!(
            ids.contains(&format!("123456789012345678{last}")),
            "{ids:?}"
        );
    }
    let q = quarantine(&store);
    let nested: Vec<_> = q
        .iter()
        .filter(|r| r.1 == "nested_value")
        .map(|r| r.2.clone().unwrap())
        .collect();
    assert_eq!(nested, ["user_id", "event_id"]);
    // Both spellings of 1e2 are rejected alike; both of 99999999999999.9999 stored alike.
    let amounts: Vec<_> = q
        .iter()
        .filter(|r| r.1 == "bad_amount")
        .map(|r| r.3.clone())
        .collect();
    assert_eq!(amounts, [Some("1e2".into()), Some("1e2".into())]);
}

#[test]
fn odd_headers_paths_and_files_are_named_not_guessed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let store = d.join("s");
    let s = store.to_str().unwrap();
    // Duplicate header names: the whole file is refused, naming the column.
    let dup = d.join("dup.csv");
    write(
        &dup,
        b"event_id,user_id,event_type,ts,user_id\ne1,u1,click,2021-09-17T10:00:00Z,u2\n",
    );
    let (_, err) = run(&["ingest", "--store", s, dup.to_str().unwrap()], 3);
    assert!(err.contains("\"user_id\" twice"), "{err}");

    // The same file named three ways is read once.
    let x = d.join("in/x.csv");
    write(&x, rows("e", 3, &[]).as_bytes());
    let dotted = d.join("in/./x.csv");
    let r = ingest_json(&store, &[&x, &dotted, &d.join("in")], &[]);
    assert_eq!(counts(&r), (3, 3, 0, 0));
    assert_eq!(r["inputs"].as_array().unwrap().len(), 1);

    // A FIFO named *.csv in a folder is skipped, not waited on.
    let fifo = d.join("in/pipe.csv");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let r = ingest_within_a_minute(&store, &d.join("in"));
    assert!(
        r["skipped_why"].to_string().contains("not a regular file"),
        "{r}"
    );

    // A newline in a file name does not break the one-line error.
    let odd = d.join("two\nlines.csv");
    write(&odd, b"no,export,columns\n1,2,3\n");
    let (_, err) = run(&["ingest", "--store", s, odd.to_str().unwrap()], 3);
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(err.contains("two\\nlines.csv"), "{err}");
}

#[test]
fn a_parquet_binary_id_that_is_not_utf8_is_named() {
    use arrow::array::{BinaryArray, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let f = tmp.path().join("bin.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Binary, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("ts", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["e1", "e2"])),
            Arc::new(BinaryArray::from(vec![&b"u1"[..], &b"\xff\xfe"[..]])),
            Arc::new(StringArray::from(vec!["click", "click"])),
            Arc::new(StringArray::from(vec!["2021-09-17T10:00:00Z"; 2])),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&f).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let r = ingest_json(&store, &[&f], &[]);
    assert_eq!(counts(&r), (2, 1, 1, 0));
    assert_eq!(r["rejected_by_reason"]["malformed_record"], 1, "{r}");
    let q = quarantine(&store);
    assert_eq!(q[0].2.as_deref(), Some("user_id"));
}

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
