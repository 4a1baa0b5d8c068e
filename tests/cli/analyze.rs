//! `funnel analyze`: the JSON contract, determinism and snapshots, row groups, bad funnel files.

use arrow::array::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::util::*;

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

#[test]
fn top_keeps_the_biggest_values_and_groups_the_rest() {
    let store = sample_store();
    let tmp = tempfile::tempdir().unwrap();
    let by_item = tmp.path().join("by_item.toml");
    let funnel = "name = \"by item\"\nwindow = \"1h\"\nbreakdown = \"item_id\"\n\
        [[steps]]\nname = \"click\"\nevent_type = \"click\"\n\
        [[steps]]\nname = \"view\"\nevent_type = \"view\"\n";
    std::fs::write(&by_item, funnel).unwrap();
    let groups = |v: &Value| -> Vec<(String, u64)> {
        v["groups"].as_array().unwrap()[1..]
            .iter()
            .map(|g| {
                (
                    g["key"]["item_id"].as_str().unwrap().to_string(),
                    g["steps"][0]["persons"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // JSON keeps every value; with --top 5, the five biggest (ties by value) and "(other)" last.
    let all = groups(&analyze_json(&store, &by_item, &[]));
    assert!(all.len() > 100, "{}", all.len());
    let mut ranked = all.clone();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = analyze_json(&store, &by_item, &["--top", "5"]);
    let got = groups(&top);
    let mut want: Vec<(String, u64)> = ranked[..5].to_vec();
    want.sort();
    assert_eq!(&got[..5], &want[..]);
    let (other, other_persons) = &got[5];
    assert_eq!(other, "(other)");
    // Persons clicking several items count in each group, so "(other)" is at most the rest and
    // at least the biggest value outside the five; the total is unchanged.
    let rest: u64 = ranked[5..].iter().map(|x| x.1).sum();
    assert!(*other_persons <= rest && *other_persons >= ranked[5].1);
    assert_eq!(
        top["groups"][0],
        analyze_json(&store, &by_item, &[])["groups"][0]
    );
    // The table shows 20 values and "(other)" by default; `top` in the file says otherwise.
    let table = analyze_file(&store, &by_item, &[], 0).0;
    assert_eq!(table.matches("item_id = ").count(), 21, "{table}");
    assert!(table.contains("item_id = (other)"), "{table}");
    let with_top = tmp.path().join("top3.toml");
    std::fs::write(&with_top, funnel.replace("breakdown", "top = 3\nbreakdown")).unwrap();
    assert_eq!(groups(&analyze_json(&store, &with_top, &[])).len(), 4);
    // Refused: top = 0, --top on two breakdown columns, top on a cluster engine.
    let zero = tmp.path().join("zero.toml");
    std::fs::write(&zero, funnel.replace("breakdown", "top = 0\nbreakdown")).unwrap();
    let (_, err) = analyze_file(&store, &zero, &[], 2);
    assert!(err.contains("top"), "{err}");
    let two = tmp.path().join("two.toml");
    std::fs::write(
        &two,
        funnel.replace(
            "breakdown = \"item_id\"",
            "breakdown = [\"item_id\", \"journey\"]",
        ),
    )
    .unwrap();
    let (_, err) = analyze_file(&store, &two, &["--top", "3"], 2);
    assert!(err.contains("--top"), "{err}");
    let (_, err) = run(
        &[
            "analyze",
            "--engine",
            "clickhouse",
            "--clickhouse-url",
            "http://127.0.0.1:1",
            "--table",
            "t",
            "--funnel",
            with_top.to_str().unwrap(),
        ],
        1,
    );
    // The cluster engines compute `top` too (two queries, tests/cluster_check.py): the funnel
    // is accepted, and only the server is missing.
    assert!(err.contains("cannot reach clickhouse"), "{err}");
}

#[test]
fn min_persons_suppresses_small_groups_and_keeps_totals() {
    let store = sample_store();
    let f = repo().join("data/funnels/warning_page_by_campaign.toml");
    let plain = analyze_json(&store, &f, &["--interval", "week", "--top", "2"]);
    let k = "840";
    let hidden = analyze_json(
        &store,
        &f,
        &["--interval", "week", "--top", "2", "--min-persons", k],
    );
    let k: u64 = k.parse().unwrap();
    for section in ["groups", "trend"] {
        let (a, b) = (
            plain[section].as_array().unwrap(),
            hidden[section].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        let mut seen = 0;
        for (p, h) in a.iter().zip(b) {
            assert_eq!(p["key"], h["key"]);
            if p["steps"][0]["persons"].as_u64().unwrap() < k {
                seen += 1;
                assert_eq!(h["suppressed"], true);
                assert!(h["excluded_open_windows"].is_null());
                for s in h["steps"].as_array().unwrap() {
                    assert!(s["persons"].is_null() && s["conversion_from_first"].is_null());
                    assert!(s["time_to_convert"].is_null() && s["name"].is_string());
                }
            } else {
                // Shown groups, the total and "(other)" are exactly as without suppression.
                assert_eq!(p, h);
            }
        }
        assert!(seen > 0, "{section}: nothing under {k}");
    }
    // Every format says so; CSV marks the rows.
    let table = analyze_file(
        &store,
        &f,
        &["--interval", "week", "--min-persons", "300"],
        0,
    )
    .0;
    assert!(table.contains("suppressed"), "{table}");
    let csv = analyze_file(
        &store,
        &f,
        &[
            "--interval",
            "week",
            "--min-persons",
            "300",
            "--format",
            "csv",
        ],
        0,
    )
    .0;
    assert!(csv.lines().next().unwrap().ends_with(",suppressed"));
    assert!(
        csv.lines().any(|l| l.ends_with(",true")) && csv.lines().any(|l| l.ends_with(",false"))
    );
    // A comparison with a suppressed side is not computed; nothing of the group is shown.
    let compared = repo().join("data/funnels/journeys_compared.toml");
    let (out, _) = compare_run(
        &store,
        &compared,
        ("journey", "wechat_native"),
        &["--min-persons", "1300", "--format", "json"],
        0,
    );
    let c: Value = serde_json::from_str(&out).unwrap();
    let small: Vec<&str> = c["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["suppressed"] == true)
        .map(|g| g["value"].as_str().unwrap())
        .collect();
    assert_eq!(small, ["tao_code"]);
    let tao = c["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["value"] == "tao_code")
        .unwrap();
    assert!(tao["clicks"].is_null() && tao["rates"][0]["rate"].is_null());
    assert!(
        c["differences"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["group"] != "tao_code")
    );
    assert!(
        c["extra_steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["group"] != "tao_code")
    );
    let in_report = c["report"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"]["journey"] == "tao_code")
        .unwrap();
    assert_eq!(in_report["suppressed"], true);
}

#[test]
fn dropped_next_says_where_those_who_stopped_went() {
    let store = sample_store();
    let f = repo().join("data/funnels/external_link_to_purchase.toml");
    let plain = analyze_json(&store, &f, &[]);
    // Without the option the JSON is as it always was.
    assert!(
        plain["groups"][0]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.get("dropped_next").is_none())
    );
    let v = analyze_json(&store, &f, &["--next-by", "warning_action"]);
    for g in v["groups"].as_array().unwrap() {
        let steps = g["steps"].as_array().unwrap();
        assert!(steps[0].get("dropped_next").is_none());
        for s in &steps[1..] {
            // Everyone who stopped before the step is somewhere: the counts add up.
            let next = s["dropped_next"].as_array().unwrap();
            let sum: u64 = next.iter().map(|d| d["persons"].as_u64().unwrap()).sum();
            assert_eq!(sum, s["stopped_before"].as_u64().unwrap());
            let counts: Vec<u64> = next
                .iter()
                .map(|d| d["persons"].as_u64().unwrap())
                .collect();
            assert!(
                counts.windows(2).all(|w| w[0] >= w[1]),
                "most persons first"
            );
        }
    }
    // Of those shown the warning who did not continue: they returned or reported.
    let continue_step = &v["groups"][0]["steps"][2];
    let kinds: Vec<(String, String)> = continue_step["dropped_next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["event_type"].as_str().unwrap().to_string(),
                d["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("warning".into(), "return".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("warning".into(), "report".into())),
        "{kinds:?}"
    );
    let table = analyze_file(&store, &f, &["--next-by", "warning_action"], 0).0;
    assert!(table.contains("where the dropped went") && table.contains("warning: report"));
    let (_, err) = analyze_file(&store, &f, &["--next-by", "no_such_column"], 2);
    assert!(
        err.contains("--next-by") && err.contains("no_such_column"),
        "{err}"
    );
}
