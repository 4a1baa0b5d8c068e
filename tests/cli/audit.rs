//! Every reported number re-derived from the `--persons-out` audit table and the stored events;
//! extended chains, attempts, attribution and any-order against what they must equal or bound.

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMillisecondType;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::util::*;

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
