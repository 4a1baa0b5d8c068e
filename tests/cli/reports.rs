//! The demo, `funnel compare` and `funnel report` on the shipped sample.

use serde_json::Value;
use std::collections::BTreeSet;

use crate::util::*;

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
fn version_names_the_git_revision() {
    let (out, _) = run(&["--version"], 0);
    assert!(is_version_line(&out), "{out}");
}

/// `funnel X.Y.Z (git REV)` where REV is hex (12 digits, maybe `-dirty`) or `unknown`.
fn is_version_line(out: &str) -> bool {
    let Some(rest) = out.trim().strip_prefix("funnel ") else {
        return false;
    };
    let Some((version, rev)) = rest.split_once(" (git ") else {
        return false;
    };
    let rev = rev.trim_end_matches(')');
    let rev = rev.strip_suffix("-dirty").unwrap_or(rev);
    version.split('.').count() == 3
        && (rev == "unknown" || (rev.len() == 12 && rev.bytes().all(|b| b.is_ascii_hexdigit())))
}

#[test]
fn compare_reports_differences_and_extra_step_costs() {
    let store = sample_store();
    let f = repo().join("data/funnels/journeys_compared.toml");
    let call = |baseline: &str, format: &str, code: i32| {
        compare_run(
            &store,
            &f,
            ("journey", baseline),
            &["--format", format],
            code,
        )
    };
    let (out, _) = call("wechat_native", "json", 0);
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
    call("wechat_native", "markdown", 0);
    let (_, err) = call("carrier_pigeon", "table", 2);
    assert!(
        err.contains("carrier_pigeon") && err.contains("wechat_native"),
        "{err}"
    );
}

#[test]
fn compare_adjusted_and_before_after_on_the_sample() {
    let store = sample_store();
    let f = repo().join("data/funnels/external_link_to_purchase.toml");
    let call =
        |extra: &[&str], code: i32| compare_run(&store, &f, ("chat_type", "group"), extra, code);
    let full = [
        "--adjust-for",
        "campaign",
        "--split-at",
        "2021-09-17",
        "--control",
        "group",
    ];
    let (md, _) = call(&[&full[..], &["--format", "markdown"]].concat(), 0);
    insta::assert_snapshot!("sample_compare_adjusted_markdown", md);
    let (out, _) = call(&[&full[..], &["--format", "json"]].concat(), 0);
    let c: Value = serde_json::from_str(&out).unwrap();
    // CONTRACT §8: the keys, in place.
    assert_eq!(c["split_at"], "2021-09-17T00:00:00+08:00");
    for d in c["differences"].as_array().unwrap() {
        let a = &d["adjusted"];
        assert_eq!(a["by"], serde_json::json!(["campaign"]));
        for k in [
            "strata",
            "mh_risk_difference",
            "mh_risk_difference_ci",
            "mh_odds_ratio",
            "mh_odds_ratio_ci",
            "cmh_p",
            "homogeneity_p",
            "strata_left_out",
        ] {
            assert!(a.get(k).is_some(), "adjusted.{k} missing: {a}");
        }
        let s = &a["strata"][0];
        assert!(s["value"]["campaign"].is_string() && s["group"]["persons"].is_u64());
        assert!(s["baseline"]["reached"].is_u64());
    }
    let ba = c["before_after"].as_array().unwrap();
    assert!(!ba.is_empty());
    for b in ba {
        let (x1, n1) = (
            b["after"]["reached"].as_f64().unwrap(),
            b["after"]["persons"].as_f64().unwrap(),
        );
        let (x0, n0) = (
            b["before"]["reached"].as_f64().unwrap(),
            b["before"]["persons"].as_f64().unwrap(),
        );
        let d = b["difference"].as_f64().unwrap();
        assert!((d - (x1 / n1 - x0 / n0)).abs() < 1e-12);
        assert!(b["ci"][0].as_f64().unwrap() <= d && d <= b["ci"][1].as_f64().unwrap());
        assert!(b["p"].is_f64());
    }
    let did = c["did"].as_array().unwrap();
    // Every group but the control, at each milestone both go through.
    assert!(
        did.iter()
            .all(|d| d["group"] != "group" && d["estimate"].is_f64())
    );
    assert_eq!(did.len(), 2 * 3);
    // Without the flags, none of the new keys.
    let (plain, _) = call(&["--format", "json"], 0);
    let p: Value = serde_json::from_str(&plain).unwrap();
    for k in ["split_at", "before_after", "did", "control"] {
        assert!(p.get(k).is_none(), "{k}");
    }
    assert!(p["differences"][0].get("adjusted").is_none());
    // Usage errors name the option.
    let (_, err) = call(&["--control", "group"], 2);
    assert!(err.contains("--split-at"), "{err}");
    let (_, err) = call(&["--adjust-for", "chat_type"], 2);
    assert!(
        err.contains("--adjust-for") && err.contains("chat_type"),
        "{err}"
    );
    let (_, err) = call(
        &["--split-at", "2021-09-17", "--control", "carrier_pigeon"],
        2,
    );
    assert!(
        err.contains("carrier_pigeon") && err.contains("one_to_one"),
        "{err}"
    );
    let (_, err) = call(&["--adjust-for", "no_such_column"], 2);
    assert!(err.contains("no_such_column"), "{err}");
    let (_, err) = call(&["--split-at", "last tuesday"], 2);
    assert!(err.contains("--split-at"), "{err}");
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
