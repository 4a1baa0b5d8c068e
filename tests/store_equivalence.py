#!/usr/bin/env python3
"""Two builds of `funnel` ingest the same exports into the same store content.

    store_equivalence.py OLD_FUNNEL NEW_FUNNEL [--persons N] [--work DIR]

For the shipped sample and for generated exports with faults (duplicates, conflicts, malformed
rows, truncated files) in every input format, ingests each with both binaries (twice, so the
second run is all duplicates) and compares, with DuckDB EXCEPT both ways, every stored column
of the events, the id index, the identity and the quarantine, and the manifest's counts per
run. Two cases ingest a day at a time into three buckets, so that later logins merge stored
persons and their events move between buckets. Exits 1 and prints the differing rows when anything differs. This is how a rewrite of the
ingest proves it keeps behaviour (DEVELOPERS.md, non-negotiable 5).
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent


def sh(*args):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout


def ingest(funnel, store, runs, extra):
    """Each run's inputs in turn, then all of them again (all duplicates)."""
    for inputs in [*runs, [i for r in runs for i in r]]:
        out = subprocess.run(
            [str(funnel), "ingest", "--store", str(store), "--format", "json", *extra,
             *map(str, inputs)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"{funnel} ingest failed: {out.stderr}")


def manifest_counts(store):
    m = json.loads((store / "current" / "manifest.json").read_text())
    keep = ("rows_read", "rows_stored", "rows_rejected", "rows_duplicate", "rejected_by_reason")
    runs = [
        {
            "counts": {k: r[k] for k in keep},
            "inputs": [{k: f[k] for k in ("path", "bytes", "sha256", *keep)} for f in r["inputs"]],
            "persons_merged": r["persons_merged"],
            "min_ts": r["min_ts"],
            "max_ts": r["max_ts"],
        }
        for r in m["runs"]
    ]
    return {"events": m["events"], "persons": m["persons"], "buckets": m["buckets"], "runs": runs}


TABLES = {
    "events": "events/**/*.parquet",
    "ids": "ids/**/*.parquet",
    "identity": "identity.parquet",
    "quarantine": "quarantine/*.parquet",
}


def compare(name, a, b):
    con = duckdb.connect()
    problems = []
    ma, mb = manifest_counts(a), manifest_counts(b)
    if ma != mb:
        problems.append(f"manifest counts differ:\n  old {json.dumps(ma)}\n  new {json.dumps(mb)}")
    for table, glob in TABLES.items():
        pa, pb = sorted((a / "current").glob(glob)), sorted((b / "current").glob(glob))
        if not pa and not pb:
            continue
        if not pa or not pb:
            problems.append(f"{table}: present in one store only")
            continue
        src = lambda files: "read_parquet([{}], union_by_name = true)".format(
            ", ".join(f"'{f}'" for f in files)
        )
        # The lineage path is the same input path in both runs; nothing to normalise.
        for x, y, label in ((pa, pb, "old only"), (pb, pa, "new only")):
            rows = con.execute(
                f"SELECT * FROM {src(x)} EXCEPT ALL SELECT * FROM {src(y)} LIMIT 5"
            ).fetchall()
            if rows:
                problems.append(f"{table}: rows {label}: {rows}")
        na = con.execute(f"SELECT count(*) FROM {src(pa)}").fetchone()[0]
        nb = con.execute(f"SELECT count(*) FROM {src(pb)}").fetchone()[0]
        if na != nb:
            problems.append(f"{table}: {na} rows (old) vs {nb} (new)")
    status = "same" if not problems else "DIFFERENT"
    merged = sum(r["persons_merged"] for r in mb["runs"])
    print(f"{name}: {status} ({mb['events']} events, {len(mb['runs'])} runs, "
          f"{sum(r['counts']['rows_read'] for r in mb['runs'])} rows read, {merged} persons merged)")
    for p in problems:
        print("  " + p[:2000])
    return not problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--persons", type=int, default=3000)
    ap.add_argument("--work")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="store-eq-"))
    # name -> (runs, each a list of inputs; extra ingest options)
    cases = {"sample": ([[REPO / "data" / "sample"]], [])}
    gen = [
        ("csv", []),
        ("csv-gz", ["--format", "csv", "--gzip"]),
        ("jsonl", ["--format", "jsonl"]),
        ("jsonl-gz", ["--format", "jsonl", "--gzip"]),
        ("parquet", ["--format", "parquet"]),
    ]
    for i, (name, extra) in enumerate(gen):
        out = work / "exports" / name
        shutil.rmtree(out, ignore_errors=True)
        sh(args.new, "generate", "--out", out, "--persons", args.persons, "--seed", 11 + i,
           "--fault-rate", "0.05", "--duplicate-rate", "0.05", "--conflict-rate", "0.01", *extra)
        cases[name] = ([[out]], [])
    # A day at a time, into few buckets: later logins merge stored persons (retroactive
    # stitching), whose events move between buckets.
    for name in ("csv", "jsonl-gz"):
        days = sorted(p for p in (work / "exports" / name).iterdir() if p.is_dir())
        cases[f"{name}-by-day"] = ([[d] for d in days], ["--buckets", "3"])
    ok = True
    for name, (runs, extra) in cases.items():
        a, b = work / name / "old", work / name / "new"
        for s in (a, b):
            shutil.rmtree(s, ignore_errors=True)
        ingest(args.old, a, runs, extra)
        ingest(args.new, b, runs, extra)
        ok &= compare(name, a, b)
    print("store_equivalence: " + ("1 passed, 0 failed" if ok else "0 passed, 1 failed"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
