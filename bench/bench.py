"""Benchmark: `funnel` against ClickHouse's windowFunnel (chDB, over Parquet and over a MergeTree
table ordered by (person_id, ts)) and a bare DuckDB scan of the columns the funnel needs, on the
same generated data, in one run; and the ingest against DuckDB's plain CSV and JSON -> Parquet
conversions (as they come, and sorted by user), the re-ingest of the same export, and, end to
end from a fresh CSV export to the per-step counts, `funnel ingest` + `funnel analyze` against
chDB's windowFunnel run straight over the CSV. Prints a table and writes bench/results.json.

Usage: python3 bench/bench.py [--events 10000000] [--runs 3]
Creates bench/.venv (chdb, duckdb, polars, pyarrow pinned from PyPI) on first use and re-runs
itself there; its data goes to bench/work.

Every engine must return the same per-step counts for the funnel (with its breakdown by
journey); the run fails loudly otherwise. Times are whole-process wall times (median of --runs
after a warm-up), peak RSS from GNU time. The DuckDB SQL and Python polars implementations are
specific to this two-step funnel, whose level is "a purchase within the window after a click";
funnels with more steps or modes are compared with ClickHouse by tests/chdb_check.py. The scale
curve is bench/scale.py.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work")
FUNNEL_FILE = os.path.join(ROOT, "data", "funnels", "all_journeys_by_journey.toml")
FOUR_FILE = os.path.join(ROOT, "bench", "four_steps.toml")
# Step conditions of the two funnels, as SQL over (event_type, warning_action).
TWO_STEPS = ["event_type = 'click'", "event_type = 'purchase'"]
FOUR_STEPS = ["event_type = 'click'", "event_type = 'warning' AND warning_action = 'continue'",
              "event_type = 'login'", "event_type = 'purchase'"]
WINDOW_MS = 86_400_000


def timed(cmd, **kw):
    """(wall seconds, peak RSS MiB, stdout) of a whole process."""
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, **kw)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    rss_kib = int(out.stderr.strip().splitlines()[-1])
    return wall, rss_kib / 1024, out.stdout


def median_of(runs, cmd, **kw):
    timed(cmd, **kw)  # warm-up
    results = [timed(cmd, **kw) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results), results[-1][2]


VENV = os.path.join(ROOT, "bench", ".venv")
PACKAGES = ["chdb==4.4.0", "duckdb==2.0.0", "polars==2.1.0", "pyarrow==26.0.1"]


def ensure_venv():
    """Re-runs this script in bench/.venv, created with the pinned packages if absent."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *PACKAGES], check=True)
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


PY = sys.executable


def python(code):
    return [PY, "-c", code]


def chdb_query(sql, setup=""):
    return python(
        "import chdb, sys\n"
        "from chdb import session\n"
        f"s = session.Session({os.path.join(WORK, 'chdb')!r})\n"
        + (f"s.query({setup!r})\n" if setup else "")
        + f"print(s.query({sql!r}, 'JSONEachRow').data())"
    )


def funnel_sql(source, steps=TWO_STEPS):
    """Per-step persons for all persons and per journey of the click (CONTRACT §5 breakdown)."""
    conds = ", ".join(f"({c})" for c in steps)
    first, rest = f"({steps[0]})", "".join(f", ({c})" for c in steps[1:])
    rest_e = rest.replace("event_type", "e.event_type").replace("warning_action", "e.warning_action")
    first_e = first.replace("event_type", "e.event_type")
    return f"""
      WITH j AS (SELECT DISTINCT journey FROM {source} WHERE event_type = 'click')
      SELECT g, level, count() AS n FROM (
        SELECT person_id, '' AS g,
               windowFunnel({WINDOW_MS})(toUInt64(toUnixTimestamp64Milli(ts)), {conds}) AS level
        FROM {source} GROUP BY person_id
        UNION ALL
        SELECT person_id, ifNull(j.journey, '∅') AS g,
               windowFunnel({WINDOW_MS})(toUInt64(toUnixTimestamp64Milli(e.ts)),
                 {first_e} AND ifNull(e.journey = j.journey, 0){rest_e}) AS level
        FROM {source} AS e CROSS JOIN j GROUP BY person_id, j.journey)
      WHERE level > 0 GROUP BY g, level ORDER BY g, level"""


CSV_COLUMNS = ("event_id String, user_id String, event_type String, ts String, platform Nullable(String), "
               "journey Nullable(String), chat_type Nullable(String), warning_action Nullable(String), "
               "account_id Nullable(String), order_id Nullable(String), amount Nullable(String), "
               "currency Nullable(String), campaign Nullable(String), item_id Nullable(String)")


def chdb_over_csv(data):
    """chDB straight from the CSV export to the funnel's counts, as an analyst would write it
    without our ingest: events read once into a Memory table, timestamps parsed in the export's
    zone, each user_id mapped one hop to the account it logged in with, then windowFunnel."""
    load = f"""
      CREATE TABLE ev_csv ENGINE = Memory AS
      WITH raw AS (SELECT user_id, event_type, nullIf(ifNull(journey, ''), '') AS journey,
                          nullIf(ifNull(account_id, ''), '') AS account_id,
                          parseDateTime64BestEffort(ts, 3, 'Asia/Shanghai') AS ts
                   FROM file('{data}/*/*.csv', CSVWithNames, '{CSV_COLUMNS}')),
           link AS (SELECT user_id, min(account_id) AS account FROM raw
                    WHERE event_type = 'login' AND account_id IS NOT NULL GROUP BY user_id)
      SELECT coalesce(nullIf(link.account, ''), raw.user_id) AS person_id, raw.ts AS ts,
             raw.event_type AS event_type, raw.journey AS journey
      FROM raw LEFT JOIN link ON raw.user_id = link.user_id
      SETTINGS join_use_nulls = 0"""
    return python(
        "import chdb\n"
        "from chdb import session\n"
        "s = session.Session()\n"
        f"s.query({load!r})\n"
        f"print(s.query({funnel_sql('ev_csv')!r}, 'JSONEachRow').data())"
    )


def counts_from_levels(jsonl, steps=2):
    by = {}
    for line in jsonl.splitlines():
        if line.strip():
            r = json.loads(line)
            by.setdefault(r["g"], {})[int(r["level"])] = int(r["n"])
    return {g: [sum(n for l, n in lv.items() if l >= k) for k in range(1, steps + 1)] for g, lv in by.items()}


DUCK_FUNNEL = """
WITH ev AS (SELECT person_id, ts, event_type, journey FROM read_parquet('{glob}', union_by_name=true)
            WHERE event_type IN ('click', 'purchase')),
     c AS (SELECT person_id, ts, coalesce(journey, '∅') AS journey FROM ev WHERE event_type = 'click'),
     p AS (SELECT person_id, ts AS pts FROM ev WHERE event_type = 'purchase'),
     hit AS (SELECT c.person_id, c.journey, c.ts, p.pts FROM c ASOF LEFT JOIN p ON c.person_id = p.person_id AND p.pts >= c.ts),
     per AS (SELECT person_id, journey, bool_or(pts IS NOT NULL AND pts <= ts + INTERVAL 1 DAY) AS bought FROM hit GROUP BY ALL)
SELECT '' AS g, count(DISTINCT person_id), count(DISTINCT person_id) FILTER (WHERE bought) FROM per
UNION ALL
SELECT journey, count(*), count(*) FILTER (WHERE bought) FROM per GROUP BY journey
"""

# windowFunnel's default mode for the four-step funnel with window functions: per event, the
# time of the next event (at or after it) of each later step, from a window over the person's
# events in time order; the chain from each click follows those times greedily (the earliest
# next step leaves the most of the window), and a person's level is the best of their clicks'.
DUCK_FOUR = """
WITH ev AS (SELECT person_id, ts, event_type, warning_action, journey
            FROM read_parquet('{glob}', union_by_name=true)
            WHERE event_type IN ('click', 'warning', 'login', 'purchase')),
     s AS (SELECT person_id, ts, journey, event_type = 'click' AS s1,
                  event_type = 'warning' AND warning_action IS NOT DISTINCT FROM 'continue' AS s2,
                  event_type = 'login' AS s3, event_type = 'purchase' AS s4 FROM ev),
     nxt AS (SELECT *,
               min(ts) FILTER (WHERE s2) OVER w AS n2,
               min(ts) FILTER (WHERE s3) OVER w AS n3,
               min(ts) FILTER (WHERE s4) OVER w AS n4
             FROM s WINDOW w AS (PARTITION BY person_id ORDER BY ts
                                 RANGE BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)),
     at2 AS (SELECT DISTINCT person_id, ts, n3 FROM nxt WHERE s2),
     at3 AS (SELECT DISTINCT person_id, ts, n4 FROM nxt WHERE s3),
     chain AS (SELECT c.person_id, coalesce(c.journey, '∅') AS journey,
                      1 + coalesce((c.n2 <= c.ts + INTERVAL 1 DAY)::INT, 0)
                        + coalesce((a2.n3 <= c.ts + INTERVAL 1 DAY)::INT, 0)
                        + coalesce((a3.n4 <= c.ts + INTERVAL 1 DAY)::INT, 0) AS level
               FROM nxt AS c
               LEFT JOIN at2 AS a2 ON a2.person_id = c.person_id AND a2.ts = c.n2
               LEFT JOIN at3 AS a3 ON a3.person_id = c.person_id AND a3.ts = a2.n3
               WHERE c.s1),
     total AS (SELECT person_id, max(level) AS level FROM chain GROUP BY person_id),
     byj AS (SELECT person_id, journey, max(level) AS level FROM chain GROUP BY person_id, journey)
SELECT '' AS g, LEVELS FROM total
UNION ALL
SELECT journey, LEVELS FROM byj GROUP BY journey
""".replace("LEVELS", "[" + ", ".join(f"count(*) FILTER (WHERE level >= {k})" for k in range(1, 5)) + "]")

POLARS_FUNNEL = """
import json, polars as pl
ev = (pl.scan_parquet({glob!r}, missing_columns="insert", extra_columns="ignore")
      .select("person_id", "ts", "event_type", "journey")
      .filter(pl.col("event_type").is_in(["click", "purchase"])))
c = ev.filter(pl.col("event_type") == "click").select("person_id", "ts", pl.col("journey").fill_null("∅")).sort("ts")
p = ev.filter(pl.col("event_type") == "purchase").select("person_id", pl.col("ts").alias("pts")).sort("pts")
hit = c.join_asof(p, left_on="ts", right_on="pts", by="person_id", strategy="forward")
per = (hit.with_columns(bought=pl.col("pts").is_not_null() & (pl.col("pts") <= pl.col("ts") + pl.duration(days=1)))
       .group_by("person_id", "journey").agg(pl.col("bought").any()).collect())
out = {{"": [per["person_id"].n_unique(), per.filter(pl.col("bought"))["person_id"].n_unique()]}}
for (j,), g in per.group_by("journey"):
    out[j] = [g.height, int(g["bought"].sum())]
print(json.dumps(out))
"""


def counts_from_rows(text):
    out = {}
    for g, a, b in eval(text.strip()):
        out[g] = [int(a), int(b)]
    return out


def counts_from_lists(text):
    return {g: [int(n) for n in counts] for g, counts in eval(text.strip())}


def counts_from_report(text):
    r = json.loads(text)
    return {(g["key"].get("journey") or ""): [s["persons"] for s in g["steps"]] for g in r["groups"]}


def main():
    ensure_venv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    t0 = time.perf_counter()
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "funnel-cli"], cwd=ROOT, check=True)
    build_s = time.perf_counter() - t0
    funnel = os.path.join(ROOT, "target", "release", "funnel")
    persons = max(1, args.events * 10 // 56)  # the scenario makes about 5.6 events per person
    data, store = os.path.join(WORK, "data"), os.path.join(WORK, "store")
    t = time.perf_counter()
    subprocess.run([funnel, "generate", "--out", data, "--persons", str(persons), "--seed", "1", "--format", "csv", "--clean"],
                   check=True, stdout=subprocess.DEVNULL)
    gen_s = time.perf_counter() - t
    jdata = os.path.join(WORK, "data-jsonl")
    subprocess.run([funnel, "generate", "--out", jdata, "--persons", str(persons), "--seed", "1", "--format", "jsonl", "--clean"],
                   check=True, stdout=subprocess.DEVNULL)
    truth = json.load(open(os.path.join(data, "truth.json")))
    events = truth["expected"]["rows_stored"]
    rows = []

    # Ingest: whole processes, one run each (a second run into the same store is all duplicates).
    ingest_s, ingest_rss, _ = timed([funnel, "ingest", "--store", store, "--format", "json", data])
    rows.append(("ingest CSV -> store (funnel)", ingest_s, ingest_rss, events))
    s, rss, _ = timed([funnel, "ingest", "--store", store, "--format", "json", data])
    rows.append(("re-ingest the same CSV, all duplicates (funnel)", s, rss, events))
    one = os.path.join(WORK, "store-1-thread")
    s, rss, _ = timed([funnel, "ingest", "--store", one, "--format", "json", data],
                      env={**os.environ, "FUNNEL_THREADS": "1"})
    rows.append(("ingest CSV -> store (funnel, 1 thread)", s, rss, events))
    shutil.rmtree(one)
    duck_out = os.path.join(WORK, "duck.parquet")
    src = f"read_csv('{data}/*/*.csv', union_by_name=true)"
    copy = f"COPY (SELECT * FROM {src}) TO '{duck_out}' (FORMAT parquet)"
    s, rss, _ = timed(python(f"import duckdb; duckdb.sql('SET enable_progress_bar = false'); duckdb.sql({copy!r})"))
    rows.append(("ingest CSV -> Parquet (DuckDB COPY)", s, rss, events))
    copy = f"COPY (SELECT * FROM {src} ORDER BY user_id, ts) TO '{duck_out}' (FORMAT parquet)"
    s, rss, _ = timed(python(f"import duckdb; duckdb.sql('SET enable_progress_bar = false'); duckdb.sql({copy!r})"))
    rows.append(("ingest CSV -> Parquet ORDER BY user_id, ts (DuckDB)", s, rss, events))
    s, rss, _ = timed([funnel, "ingest", "--store", os.path.join(WORK, "store-jsonl"), "--format", "json", jdata])
    rows.append(("ingest JSON lines -> store (funnel)", s, rss, events))
    src = f"read_json('{jdata}/*/*.jsonl', union_by_name=true)"
    copy = f"COPY (SELECT * FROM {src}) TO '{duck_out}' (FORMAT parquet)"
    s, rss, _ = timed(python(f"import duckdb; duckdb.sql('SET enable_progress_bar = false'); duckdb.sql({copy!r})"))
    rows.append(("ingest JSON lines -> Parquet (DuckDB COPY)", s, rss, events))
    copy = f"COPY (SELECT * FROM {src} ORDER BY user_id, ts) TO '{duck_out}' (FORMAT parquet)"
    s, rss, _ = timed(python(f"import duckdb; duckdb.sql('SET enable_progress_bar = false'); duckdb.sql({copy!r})"))
    rows.append(("ingest JSON lines -> Parquet ORDER BY user_id, ts (DuckDB)", s, rss, events))
    os.remove(duck_out)

    # End to end: a fresh CSV export to the per-step counts.
    results = {}
    e2e = os.path.join(WORK, "store-e2e")
    s, rss, out = timed(["sh", "-c", f'"$0" ingest --store "$1" "$2" >/dev/null && '
                         f'"$0" analyze --store "$1" --funnel "$3" --format json',
                         funnel, e2e, data, FUNNEL_FILE])
    results["funnel ingest + analyze, fresh CSV"] = counts_from_report(out)
    rows.append(("CSV -> counts: funnel ingest + analyze", s, rss, events))
    shutil.rmtree(e2e)
    s, rss, out = median_of(args.runs, chdb_over_csv(data))
    results["chDB windowFunnel over the CSV"] = counts_from_levels(out)
    rows.append(("CSV -> counts: chDB windowFunnel over the CSV", s, rss, events))

    parquet = f"file('{store}/current/events/*/*.parquet', Parquet)"
    s, rss, out = median_of(args.runs, [funnel, "analyze", "--store", store, "--funnel", FUNNEL_FILE, "--format", "json"])
    results["funnel analyze"] = counts_from_report(out)
    rows.append(("funnel analyze (embedded)", s, rss, events))
    four = [os.path.join(ROOT, "data", "funnels", f) for f in
            ("all_journeys_by_journey.toml", "external_link_to_purchase.toml", "external_link_first_login.toml",
             "wechat_native_to_purchase.toml")]
    s4, rss4, _ = median_of(args.runs, [funnel, "analyze", "--store", store, "--format", "json",
                                        *[a for f in four for a in ("--funnel", f)]])
    rows.append(("funnel analyze, 4 funnels in one run", s4, rss4, events))
    s, rss, out = median_of(args.runs, chdb_query(funnel_sql(parquet)))
    results["chDB windowFunnel, Parquet"] = counts_from_levels(out)
    rows.append(("chDB windowFunnel over Parquet", s, rss, events))
    setup = (f"CREATE TABLE IF NOT EXISTS ev ENGINE = MergeTree ORDER BY (person_id, ts) AS "
             f"SELECT person_id, ts, event_type, journey FROM {parquet}")
    subprocess.run(chdb_query("SELECT 1", setup), check=True, stdout=subprocess.DEVNULL)
    s, rss, out = median_of(args.runs, chdb_query(funnel_sql("ev")))
    results["chDB windowFunnel, MergeTree"] = counts_from_levels(out)
    rows.append(("chDB windowFunnel over MergeTree (person_id, ts)", s, rss, events))
    glob = f"{store}/current/events/*/*.parquet"
    sql = DUCK_FUNNEL.format(glob=glob)
    s, rss, out = median_of(args.runs, python(f"import duckdb; duckdb.sql('SET enable_progress_bar = false'); print(duckdb.sql({sql!r}).fetchall())"))
    results["DuckDB SQL (ASOF join)"] = counts_from_rows(out)
    rows.append(("DuckDB SQL, same funnel (ASOF join)", s, rss, events))
    s, rss, out = median_of(args.runs, python(POLARS_FUNNEL.format(glob=glob)))
    results["Python polars (join_asof)"] = json.loads(out)
    rows.append(("Python polars, same funnel (join_asof)", s, rss, events))
    scan = (f"SELECT count(*), count(DISTINCT person_id), epoch_ms(max(ts)), count(journey) FROM "
            f"read_parquet('{store}/current/events/*/*.parquet', union_by_name=true) WHERE event_type IN ('click', 'purchase')")
    s, rss, _ = median_of(args.runs, python(f"import duckdb; duckdb.sql('SET enable_progress_bar = false'); print(duckdb.sql({scan!r}).fetchall())"))
    rows.append(("bare scan of the needed columns (DuckDB)", s, rss, events))

    # The four-step funnel: funnel, chDB's windowFunnel (MergeTree), DuckDB window functions.
    four = {}
    s, rss, out = median_of(args.runs, [funnel, "analyze", "--store", store, "--funnel", FOUR_FILE, "--format", "json"])
    four["funnel analyze"] = counts_from_report(out)
    rows.append(("funnel analyze, four-step funnel", s, rss, events))
    setup4 = (f"CREATE TABLE IF NOT EXISTS ev4 ENGINE = MergeTree ORDER BY (person_id, ts) AS "
              f"SELECT person_id, ts, event_type, warning_action, journey FROM {parquet}")
    subprocess.run(chdb_query("SELECT 1", setup4), check=True, stdout=subprocess.DEVNULL)
    s, rss, out = median_of(args.runs, chdb_query(funnel_sql("ev4", FOUR_STEPS)))
    four["chDB windowFunnel, MergeTree"] = counts_from_levels(out, 4)
    rows.append(("chDB windowFunnel over MergeTree, four-step funnel", s, rss, events))
    sql = DUCK_FOUR.format(glob=glob)
    s, rss, out = median_of(args.runs, python(f"import duckdb; duckdb.sql('SET enable_progress_bar = false'); print(duckdb.sql({sql!r}).fetchall())"))
    four["DuckDB SQL (window functions)"] = counts_from_lists(out)
    rows.append(("DuckDB SQL, four-step funnel (window functions)", s, rss, events))

    ours = results["funnel analyze"]
    agree = all(r == ours for r in results.values()) and all(r == four["funnel analyze"] for r in four.values())
    ref = next(r for r in rows if r[0].startswith("funnel analyze"))[1]
    print(f"\n{events:,} events, {persons:,} people; {platform.machine()}, {os.cpu_count()} cores; "
          f"release build {build_s:.0f} s, generate {gen_s:.0f} s")
    print(f"{'what':52} {'wall s':>8} {'peak MiB':>9} {'M events/s':>11} {'vs funnel':>10}")
    for name, s, rss, n in rows:
        print(f"{name:52} {s:8.2f} {rss:9.0f} {n / s / 1e6:11.2f} {s / ref:9.2f}x")
    print(f"\nper-step counts agree across engines: {agree}")
    if not agree:
        for k, v in list(results.items()) + [("four-step: " + k, v) for k, v in four.items()]:
            print(" ", k, json.dumps(v, sort_keys=True))
    json.dump({"events": events, "persons": persons, "machine": platform.platform(), "cores": os.cpu_count(),
               "release_build_seconds": build_s,
               "rows": [{"what": n, "wall_seconds": s, "peak_rss_mib": r, "events": e} for n, s, r, e in rows],
               "counts": results, "counts_four_steps": four, "agree": agree},
              open(os.path.join(ROOT, "bench", "results.json"), "w"), indent=1, sort_keys=True)
    sys.exit(0 if agree else 1)


if __name__ == "__main__":
    main()
