"""Independent check of the store with DuckDB (no code of ours reads the Parquet here).

Generates exports with faults, ingests them with the `funnel` binary, then reads the store with
DuckDB and compares it with the generator's truth: exactly the valid distinct events, grouped
into the true persons, each bucket file sorted, the quarantine complete.

Usage: python tests/duckdb_check.py PATH/TO/funnel
"""

import json
import subprocess
import sys
import tempfile
from collections import defaultdict

import duckdb

FUNNEL = sys.argv[1]
checks = []


def check(name, ok, detail=""):
    checks.append((name, bool(ok)))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{(': ' + detail) if detail and not ok else ''}")


with tempfile.TemporaryDirectory() as d:
    data, store = f"{d}/data", f"{d}/store"
    subprocess.run(
        [FUNNEL, "generate", "--out", data, "--persons", "1500", "--seed", "77",
         "--format", "mixed", "--fault-rate", "0.05", "--duplicate-rate", "0.03"],
        check=True, stdout=subprocess.DEVNULL)
    # Two batches, so that persons merge across runs as well.
    days = sorted(subprocess.run(["ls", data], capture_output=True, text=True).stdout.split())
    days = [f"{data}/{x}" for x in days if x[0].isdigit()]
    for batch in (days[: len(days) // 2], days[len(days) // 2:]):
        subprocess.run([FUNNEL, "ingest", "--store", store, *batch], check=True, stdout=subprocess.DEVNULL)
    truth = json.load(open(f"{data}/truth.json"))
    exp = truth["expected"]
    con = duckdb.connect()
    # The store's entry point for tools (`STORE/events`, through `current`), after two commits.
    events = f"read_parquet('{store}/events/**/*.parquet', union_by_name=true)"

    n, distinct = con.execute(f"select count(*), count(distinct event_id) from {events}").fetchone()
    check("stored rows = valid distinct events", n == distinct == exp["rows_stored"], f"{n} {distinct} {exp['rows_stored']}")
    import polars as pl
    import pyarrow.dataset as pads
    n_polars = pl.scan_parquet(f"{store}/events/", missing_columns="insert").select(pl.len()).collect().item()
    n_arrow = pads.dataset(f"{store}/events", format="parquet", partitioning="hive").count_rows()
    check("polars and pyarrow read STORE/events the same", n_polars == n_arrow == n, f"{n_polars} {n_arrow} {n}")

    by_type = dict(con.execute(f"select event_type, count(*) from {events} group by 1").fetchall())
    check("events by type", by_type == truth["events_by_type"], f"{by_type} vs {truth['events_by_type']}")

    person_of = dict(con.execute(f"select distinct user_id, person_id from {events}").fetchall())
    person_of.update(dict(con.execute(f"select id, person_id from read_parquet('{store}/current/identity.parquet')").fetchall()))
    groups = defaultdict(set)
    missing = [i for i in truth["id_person"] if i not in person_of]
    for id_, label in truth["id_person"].items():
        if id_ in person_of:
            groups[label].add(person_of[id_])
    reverse = defaultdict(set)
    for label, persons in groups.items():
        for p in persons:
            reverse[p].add(label)
    check("every true id is in the store", not missing, str(missing[:5]))
    check("persons = true persons",
          all(len(s) == 1 for s in groups.values()) and all(len(s) == 1 for s in reverse.values())
          and len(reverse) == truth["persons"], f"{len(reverse)} vs {truth['persons']}")

    reasons = dict(con.execute(
        f"select reason, count(*) from read_parquet('{store}/current/quarantine/*.parquet') group by 1").fetchall())
    check("quarantine by reason", reasons == exp["rejected_by_reason"], f"{reasons} vs {exp['rejected_by_reason']}")

    files = [r[0] for r in con.execute(f"select distinct filename from read_parquet('{store}/current/events/*/*.parquet', filename=true, union_by_name=true)").fetchall()]
    unsorted = []
    for f in files:
        rows = con.execute(f"select person_id, epoch_ms(ts), event_id from read_parquet('{f}')").fetchall()
        if rows != sorted(rows):
            unsorted.append(f)
    check("each bucket file sorted by (person_id, ts, event_id)", not unsorted, str(unsorted[:3]))

    # Where the dropped went: from the audit table's chains (the reported chain of each
    # person), the next stored event after the chain's last one within the window from its
    # first, counted here in SQL and compared with `analyze --next-by`.
    window_ms = 86_400_000
    for funnel, next_by, cutoff in (("data/funnels/external_link_to_purchase.toml", "warning_action", None),
                                    ("data/funnels/all_journeys_by_journey.toml", None, None),
                                    ("data/funnels/external_link_to_purchase.toml", "warning_action",
                                     "2021-10-05T12:00:00Z")):
        audit = f"{d}/audit.parquet"  # d: the temporary directory
        extra = ["--cutoff", cutoff] if cutoff else []
        out = subprocess.run([FUNNEL, "analyze", "--store", store, "--funnel", funnel, "--format", "json",
                              "--persons-out", audit, "--dropped-next", *(["--next-by", next_by] if next_by else []),
                              *extra], capture_output=True, text=True, check=True).stdout
        report = json.loads(out)
        steps = report["groups"][0]["steps"]
        n = len(steps)
        cut = f"TIMESTAMPTZ '{cutoff}'" if cutoff else "TIMESTAMPTZ '9999-12-31T00:00:00Z'"
        last_ts = "CASE " + " ".join(f"WHEN level = {k} THEN step_{k}_ts" for k in range(1, n)) + " END"
        last_id = "CASE " + " ".join(f"WHEN level = {k} THEN step_{k}_event_id" for k in range(1, n)) + " END"
        value = f"e.{next_by}" if next_by else "NULL"
        rows = con.execute(f"""
            WITH a AS (
              SELECT person_id, level, window_open, step_1_ts AS t0, {last_ts} AS lt, {last_id} AS lid
              FROM read_parquet('{audit}') WHERE "group" = '{{}}' AND level BETWEEN 1 AND {n - 1}),
            nxt AS (
              SELECT a.person_id, a.level, a.window_open,
                     -- One struct, so that a NULL value is taken as it is (arg_min skips NULL args).
                     arg_min({{'t': e.event_type, 'v': {value}}}, (e.ts, e.event_id)) AS nx,
                     count(e.event_id) AS c
              FROM a LEFT JOIN {events} e
                ON e.person_id = a.person_id AND (e.ts, e.event_id) > (a.lt, a.lid)
               AND epoch_ms(e.ts) <= epoch_ms(a.t0) + {window_ms} AND e.ts <= {cut}
              GROUP BY ALL)
            SELECT level + 1 AS step,
                   CASE WHEN c > 0 THEN nx.t WHEN window_open THEN '(window still open)' ELSE '(nothing more)' END,
                   CASE WHEN c > 0 THEN nx.v END, count(*)
            FROM nxt GROUP BY ALL""").fetchall()
        ours = {}
        for k, s in enumerate(steps):
            for dst in s.get("dropped_next") or []:
                ours[(k + 1, dst["event_type"], dst.get("value"))] = dst["persons"]
        theirs = {(st, t, v if next_by else None): c for st, t, v, c in rows}
        label = f"dropped next: {funnel.split('/')[-1]} {next_by or ''} {cutoff or ''}".strip()
        check(label, ours == theirs and sum(ours.values()) == sum(s["stopped_before"] for s in steps),
              f"{sorted(ours.items(), key=str)[:8]} vs {sorted(theirs.items(), key=str)[:8]}")

failed = sum(1 for _, ok in checks if not ok)
print(f"duckdb: {len(checks) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
