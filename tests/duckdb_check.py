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

failed = sum(1 for _, ok in checks if not ok)
print(f"duckdb: {len(checks) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
