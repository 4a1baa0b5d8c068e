//! Cluster engines: the compiled query, run against a fake old ClickHouse, or refused clearly.

use serde_json::Value;

use crate::util::*;

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

    // The cluster ingest's row rules: every reason of the table, in the named zone; Spark only.
    let (rules, _) = run(
        &[
            "sql",
            "--dialect",
            "spark",
            "--rules",
            "--source",
            "src",
            "--timezone",
            "Europe/Berlin",
        ],
        0,
    );
    for reason in ["missing_event_id", "bad_timestamp", "negative_amount"] {
        assert!(rules.contains(&format!("'{reason}'")), "{reason}");
    }
    assert!(rules.contains("'Europe/Berlin'") && rules.contains("FROM `src`"));
    let (dedup, _) = run(
        &[
            "sql",
            "--dialect",
            "spark",
            "--dedup",
            "--source",
            "v",
            "--stored",
            "s",
            "--properties",
            "person_id,campaign",
            "--stored-properties",
            "campaign",
        ],
        0,
    );
    assert!(
        dedup.contains("'duplicate_conflict'")
            && dedup.contains("FROM `s`) s ON r.event_id = s._sid")
    );
    assert!(dedup.contains("'k', 'src_person_id', 'v', NULLIF(`person_id`, '')"));
    let (_, e) = run(&["sql", "--dialect", "clickhouse", "--dedup"], 2);
    assert!(e.contains("Spark only"), "{e}");
    let (_, e) = run(&["sql", "--dialect", "clickhouse", "--rules"], 2);
    assert!(e.contains("Spark only"), "{e}");
    let (_, e) = run(
        &[
            "sql",
            "--dialect",
            "spark",
            "--rules",
            "--timezone",
            "Mars/Base",
        ],
        2,
    );
    assert!(e.contains("Mars/Base"), "{e}");

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
    let e = unreachable(
        &[
            "--store",
            s,
            "--funnel",
            plain,
            "--persons-out",
            "/tmp/never.parquet",
        ],
        2,
    );
    assert!(e.contains("--persons-out"), "{e}");
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
    // Levels (what 0), and the times from the previous step (what 1) and from step 1 (what 2).
    let (url, queries) = old_clickhouse(concat!(
        "{\"grp\":0,\"what\":0,\"step\":1,\"ms\":0,\"window_open\":0,\"persons\":\"6\",\"cutoff_ms\":\"1633881017474\"}\n",
        "{\"grp\":0,\"what\":0,\"step\":3,\"ms\":0,\"window_open\":1,\"persons\":\"4\",\"cutoff_ms\":\"1633881017474\"}\n",
        "{\"grp\":0,\"what\":0,\"step\":4,\"ms\":0,\"window_open\":0,\"persons\":\"10\",\"cutoff_ms\":\"1633881017474\"}\n",
        "{\"grp\":0,\"what\":1,\"step\":1,\"ms\":2000,\"window_open\":0,\"persons\":\"10\",\"cutoff_ms\":\"1633881017474\"}\n",
        "{\"grp\":0,\"what\":1,\"step\":1,\"ms\":9000,\"window_open\":1,\"persons\":\"4\",\"cutoff_ms\":\"1633881017474\"}\n",
        "{\"grp\":0,\"what\":2,\"step\":1,\"ms\":2000,\"window_open\":0,\"persons\":\"10\",\"cutoff_ms\":\"1633881017474\"}\n",
        "{\"grp\":0,\"what\":2,\"step\":1,\"ms\":9000,\"window_open\":1,\"persons\":\"4\",\"cutoff_ms\":\"1633881017474\"}\n",
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
    // Time to convert from the distribution: 10 persons at 2 s, 4 at 9 s.
    let ttc = &steps[1]["time_to_convert"]["from_previous"];
    assert_eq!(ttc["persons"], 14);
    assert_eq!(ttc["median"], 2.0);
    assert_eq!(ttc["p90"], 9.0);
    assert_eq!(ttc["mean"], 4.0);
    assert_eq!(ttc["histogram"][1], 10);
    assert!(steps[2]["time_to_convert"]["from_previous"].is_null());
    assert_eq!(report["cutoff"], "2021-10-10T15:50:17.474Z");
}

/// The cluster ingest's reading: `sql --read` names the worker command, and the worker answers
/// its protocol (one JSON object per row, then one per file, or the file's error with the
/// embedded ingest's message and exit code).
#[test]
fn the_read_query_and_its_worker() {
    let (q, _) = run(
        &[
            "sql",
            "--dialect",
            "spark",
            "--read",
            "inputs",
            "--worker",
            "/opt/funnel",
            "--tasks",
            "7",
        ],
        0,
    );
    assert!(
        q.contains("USING '\\'/opt/funnel\\' spark-worker read'"),
        "{q}"
    );
    assert!(q.contains("REPARTITION_BY_RANGE(7, file)") && q.contains("FROM `inputs`"));
    assert!(q.contains("'FAILFAST'"), "{q}");
    let (_, e) = run(&["sql", "--dialect", "clickhouse", "--read", "inputs"], 2);
    assert!(e.contains("Spark only"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    write(
        &csv,
        b"event_id,user_id,event_type,ts,note\n\
          e1,u1,click,2021-09-17T10:00:00Z,\"two\nlines\ttab\"\n\
          e2,u1,\"click\"x,2021-09-17T10:00:00Z,\n",
    );
    let missing = dir.path().join("gone.jsonl");
    let requests = format!(
        "{}\n\n{}\n",
        serde_json::json!({"file": 0, "path": csv, "format": "csv", "gzip": false}),
        serde_json::json!({"file": 1, "path": missing, "format": "jsonl", "gzip": false}),
    );
    let out = funnel()
        .args(["spark-worker", "read"])
        .write_stdin(requests)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\t'),
        "a raw tab breaks TRANSFORM's lines: {text}"
    );
    let items: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len(), 4, "{text}");
    assert_eq!(items[0]["kind"], "record");
    assert_eq!(
        (items[0]["line"].as_u64(), items[0]["row"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(items[0]["cells"]["note"], "two\nlines\ttab");
    assert_eq!(items[1]["kind"], "rejected");
    assert_eq!(items[1]["reason"], "malformed_record");
    assert_eq!(items[1]["line"], 4);
    assert_eq!(items[2]["kind"], "file");
    assert_eq!(items[2]["rows"], 2);
    assert_eq!(
        items[2]["bytes"].as_u64(),
        Some(std::fs::metadata(&csv).unwrap().len())
    );
    assert_eq!(items[3]["kind"], "error");
    assert_eq!(items[3]["exit"], 3);
    assert!(
        items[3]["message"].as_str().unwrap().contains("gone.jsonl"),
        "{}",
        items[3]
    );
    // A request that is not one is an error of the worker itself.
    let out = funnel()
        .args(["spark-worker", "read"])
        .write_stdin("{\"file\": 0}\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// A bucket file's rows as the cluster ingest hands events to `spark-worker write-events`.
fn handed_events(path: &std::path::Path, properties: &[String]) -> Vec<Value> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Decimal128Type, TimestampMillisecondType, UInt64Type};
    let mut out = Vec::new();
    for b in read_parquet(path) {
        let text = |n: &str, i: usize| {
            let a = b.column_by_name(n).unwrap().as_string::<i32>();
            if a.is_valid(i) {
                Value::String(a.value(i).to_string())
            } else {
                Value::Null
            }
        };
        let int = |n: &str, i: usize| {
            b.column_by_name(n)
                .unwrap()
                .as_primitive::<UInt64Type>()
                .value(i)
        };
        let ts = b
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let amount = b
            .column_by_name("amount")
            .unwrap()
            .as_primitive::<Decimal128Type>();
        for i in 0..b.num_rows() {
            let mut e = serde_json::Map::new();
            for c in [
                "event_id",
                "user_id",
                "event_type",
                "platform",
                "journey",
                "chat_type",
                "warning_action",
                "account_id",
                "order_id",
                "currency",
                "person_id",
            ] {
                e.insert(c.into(), text(c, i));
            }
            e.insert("ts_ms".into(), ts.value(i).into());
            e.insert(
                "amount_units".into(),
                if amount.is_valid(i) {
                    (amount.value(i) as i64).into()
                } else {
                    Value::Null
                },
            );
            let props: serde_json::Map<String, Value> = properties
                .iter()
                .map(|p| (p.clone(), text(p, i)))
                .filter(|(_, v)| !v.is_null())
                .collect();
            e.insert("properties".into(), Value::Object(props));
            e.insert("source_file".into(), text("_source_file", i));
            e.insert("source_line".into(), int("_source_line", i).into());
            e.insert("run".into(), int("_ingest_run", i).into());
            out.push(Value::Object(e));
        }
    }
    out
}

/// Runs `funnel spark-worker ARGS` with `lines` on standard input; its output lines.
fn worker(args: &[&str], lines: &[Value]) -> Vec<Value> {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = funnel()
        .arg("spark-worker")
        .args(args)
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "spark-worker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The cluster ingest's workers write the store's files with the embedded writers: given the
/// content of an embedded store (two batches, so with merged persons, faults, duplicates and
/// conflicts), `spark-worker write-*` writes every bucket file, id-index partition, quarantine
/// file and the identity file byte for byte as the embedded ingest did, from events in any
/// order (the content hash computed by the worker), and reports the manifest's figures.
#[test]
fn the_workers_write_the_embedded_store_files_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    generate(
        &export,
        300,
        21,
        &[
            "--fault-rate",
            "0.05",
            "--duplicate-rate",
            "0.05",
            "--conflict-rate",
            "0.02",
        ],
    );
    let mut files: Vec<_> = walk(&export)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let store = dir.path().join("store");
    let (first, second) = files.split_at(files.len() / 2);
    for batch in [first, second] {
        let inputs: Vec<&std::path::Path> = batch.iter().map(|p| p.as_path()).collect();
        ingest_json(
            &store,
            &inputs,
            &["--buckets", "5", "--row-group-rows", "40"],
        );
    }
    let m = manifest(&store);
    assert!(m["runs"][1]["persons_merged"].as_u64().unwrap() > 0, "{m}");
    let gen_dir = store.join("current");
    let properties: Vec<String> = serde_json::from_value(m["properties"].clone()).unwrap();
    let sum_of = |rel: &str| m["files"][rel].clone();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();

    // Bucket files, from their events in reverse order.
    let mut all_events = Vec::new();
    let mut lines = Vec::new();
    for f in m["event_files"].as_array().unwrap() {
        let rel = f["path"].as_str().unwrap();
        let events = handed_events(&gen_dir.join(rel), &properties);
        for e in events.iter().rev() {
            lines.push(serde_json::json!({"bucket": f["bucket"], "event": e}));
        }
        all_events.extend(events);
    }
    let written = worker(
        &[
            "write-events",
            "--dir",
            out_s,
            "--generation",
            "9",
            "--properties",
            &serde_json::to_string(&properties).unwrap(),
            "--row-group-rows",
            "40",
        ],
        &lines,
    );
    assert_eq!(written.len(), m["event_files"].as_array().unwrap().len());
    for (w, f) in written.iter().zip(m["event_files"].as_array().unwrap()) {
        let rel = f["path"].as_str().unwrap();
        assert_eq!(w["kind"], "events");
        for k in ["bucket", "rows", "persons", "min_ts_ms", "max_ts_ms"] {
            assert_eq!(w["file"][k], f[k], "{rel}: {k}");
        }
        let new = out.join(w["file"]["path"].as_str().unwrap());
        assert!(new.ends_with("part-g000009.parquet"), "{new:?}");
        assert!(
            std::fs::read(&new).unwrap() == std::fs::read(gen_dir.join(rel)).unwrap(),
            "bucket file {rel} differs"
        );
        assert_eq!(w["sum"], sum_of(rel), "{rel}");
    }

    // The event-id index, from the events (hashed by the worker), by partition.
    let buckets = m["buckets"].as_u64().unwrap();
    let mut by_partition: Vec<(u64, Value)> = all_events
        .iter()
        .map(|e| (xxh3(e["event_id"].as_str().unwrap()) % buckets, e.clone()))
        .collect();
    by_partition.sort_by_key(|(p, _)| *p);
    let lines: Vec<Value> = by_partition
        .into_iter()
        .map(|(p, e)| serde_json::json!({"partition": p, "event": e}))
        .collect();
    let written = worker(&["write-ids", "--dir", out_s, "--generation", "9"], &lines);
    let id_files = m["id_files"].as_array().unwrap();
    assert_eq!(written.len(), id_files.len());
    for (w, f) in written.iter().zip(id_files) {
        let rel = f["path"].as_str().unwrap();
        assert_eq!(
            (&w["file"]["partition"], &w["file"]["rows"]),
            (&f["partition"], &f["rows"])
        );
        let new = out.join(w["file"]["path"].as_str().unwrap());
        assert!(
            std::fs::read(&new).unwrap() == std::fs::read(gen_dir.join(rel)).unwrap(),
            "id file {rel} differs"
        );
    }

    // Each run's quarantine, row by row in order.
    for rel in m["quarantine_files"].as_array().unwrap() {
        let rel = rel.as_str().unwrap();
        let mut lines = Vec::new();
        for b in read_parquet(&gen_dir.join(rel)) {
            use arrow::array::{Array, AsArray};
            use arrow::datatypes::UInt64Type;
            for i in 0..b.num_rows() {
                let mut row = serde_json::Map::new();
                for f in b.schema().fields() {
                    let a = b.column_by_name(f.name()).unwrap();
                    let v = if a.is_null(i) {
                        Value::Null
                    } else if let Some(s) = a.as_string_opt::<i32>() {
                        s.value(i).into()
                    } else {
                        a.as_primitive::<UInt64Type>().value(i).into()
                    };
                    row.insert(f.name().clone(), v);
                }
                lines.push(Value::Object(row));
            }
        }
        assert!(!lines.is_empty());
        let path = out.join(rel);
        let written = worker(
            &["write-quarantine", "--path", path.to_str().unwrap()],
            &lines,
        );
        assert_eq!(
            written,
            [serde_json::json!({"kind": "quarantine", "sum": sum_of(rel)})]
        );
        assert!(std::fs::read(&path).unwrap() == std::fs::read(gen_dir.join(rel)).unwrap());
    }

    // The identity file, in id order.
    let links: std::collections::BTreeMap<String, String> = identity(&store).into_iter().collect();
    assert!(links.len() > 1);
    let lines: Vec<Value> = links
        .iter()
        .map(|(id, p)| serde_json::json!({"id": id, "person_id": p}))
        .collect();
    let path = out.join("identity.parquet");
    let written = worker(
        &["write-identity", "--path", path.to_str().unwrap()],
        &lines,
    );
    assert_eq!(
        written,
        [serde_json::json!({"kind": "identity", "sum": sum_of("identity.parquet")})]
    );

    // Hashes for Spark: the bucket of keys, as the store assigns them.
    let keys: Vec<Value> = ["", "wx_000001", "中文\n\t"]
        .iter()
        .map(|k| serde_json::json!({"key": k}))
        .collect();
    let hashed = worker(&["hash", "--buckets", "7"], &keys);
    for (h, k) in hashed.iter().zip(["", "wx_000001", "中文\n\t"]) {
        assert_eq!(h["key"], k);
        assert_eq!(h["bucket"], xxh3(k) % 7);
    }

    // What the writers refuse: ungrouped input, a property not in the store's columns.
    let e = all_events
        .iter()
        .find(|e| !e["properties"].as_object().unwrap().is_empty())
        .unwrap();
    let refused = |properties: &str, buckets: &[u32], says: &str| {
        let input: String = buckets
            .iter()
            .map(|b| format!("{}\n", serde_json::json!({"bucket": b, "event": e})))
            .collect();
        let out = funnel()
            .args([
                "spark-worker",
                "write-events",
                "--dir",
                out_s,
                "--generation",
                "10",
            ])
            .args(["--properties", properties, "--row-group-rows", "10"])
            .write_stdin(input)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{err}");
    };
    let all = serde_json::to_string(&properties).unwrap();
    refused(&all, &[0, 1, 0], "not grouped: 0 comes again");
    refused("[]", &[0], "is not a store column");
    refused(r#"["b", "a"]"#, &[0], "must be sorted");
}

/// `ingest --engine`: a cluster ingest's flags are checked before the store is touched, and an
/// engine that cannot ingest is refused by name (exit 2).
#[test]
fn ingest_engine_flags_are_refused_by_name_before_the_store_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let sample = repo().join("data/sample");
    let (s, sample) = (store.to_str().unwrap(), sample.to_str().unwrap());
    let cases: [(&[&str], &str); 4] = [
        (
            &["--engine", "spark"],
            "--engine spark needs --spark-remote",
        ),
        (
            &["--engine", "clickhouse"],
            "ingest --engine clickhouse is not supported",
        ),
        (
            &["--spark-remote", "sc://127.0.0.1:1"],
            "--spark-remote and --spark-worker are for --engine spark",
        ),
        (
            &["--spark-worker", "/opt/funnel"],
            "--spark-remote and --spark-worker are for --engine spark",
        ),
    ];
    for (flags, says) in cases {
        let mut args = vec!["ingest", "--store", s];
        args.extend(flags);
        args.push(sample);
        let (_, err) = run(&args, 2);
        assert!(err.contains(says), "{flags:?}: {err}");
        assert!(!store.exists(), "{flags:?} created the store");
    }
    // A build without the Spark client says so (exit 2); one with it cannot reach this port
    // (exit 1). Either way, before the store is created.
    let out = funnel()
        .args([
            "ingest",
            "--store",
            s,
            "--engine",
            "spark",
            "--spark-remote",
        ])
        .args(["sc://127.0.0.1:1", sample])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        [1, 2].contains(&out.status.code().unwrap()) && err.starts_with("error: "),
        "{err}"
    );
    assert!(!store.exists());
}
