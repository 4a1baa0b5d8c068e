#!/usr/bin/env python3
"""`funnel ingest --engine spark` writes the store the embedded ingest writes, byte for byte.

    cluster_ingest_check.py FUNNEL --spark sc://HOST:PORT [--persons N] [--work DIR]

Inputs: a generated export with every fault the generator plants (duplicates, conflicting
versions, every malformed kind, truncated last lines, mixed formats: CSV, JSON lines and Parquet,
gzip on alternate days), in two batches (the earlier and the later days: logins of the second
batch merge persons stored by the first, whose events move between buckets), plus the hostile
hand-written files of read_check.py in the first batch.

The two batches, then the first again (all duplicates), go into four stores, one per order of
engines: embedded only, Spark only, and two alternating orders (a store written by one engine
appended to by the other). All four must hold the same files with the same bytes: every bucket file, id-index partition, the
identity, each run's quarantine, and the manifest (figures, counts per file and reason, sums).
`analyze` and `report` must print the same on every store.

Then what a run must not do: a run refused by --max-reject-rate commits nothing and keeps the
same quarantine in failed/ on both engines (exit 3); a truncated gzip file stops both with the
same message and exit code; a cluster run killed after writing its bucket files leaves the store as it was (the same
`current`, and `funnel verify` passes). Exits 1 and prints the differences otherwise.
"""
import argparse
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from read_check import hostile

REPO = Path(__file__).resolve().parent.parent
FUNNELS = ["external_link_to_purchase.toml", "warning_page_by_campaign.toml"]


def run(funnel, *args, ok=True):
    out = subprocess.run([str(funnel), *map(str, args)], capture_output=True, text=True)
    if ok and out.returncode != 0:
        sys.exit(f"funnel {' '.join(map(str, args))[:300]} failed ({out.returncode}): {out.stderr}")
    return out


def ingest(funnel, engine, spark, store, inputs, *extra, ok=True):
    args = ["ingest", "--store", store, "--format", "json", "--buckets", "8",
            "--row-group-rows", "64", *extra]
    if engine == "spark":
        args += ["--engine", "spark", "--spark-remote", spark]
    return run(funnel, *args, *inputs, ok=ok)


def tree(store):
    """Every file of the current generation: relative path -> SHA-256 of its bytes."""
    gen = (store / "current").resolve()
    out = {}
    for p in sorted(gen.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(gen))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def differences(name, a, b):
    """What differs between two stores' trees (a list of lines)."""
    ta, tb = tree(a), tree(b)
    lines = [f"{name}: only in {a.name}: {p}" for p in sorted(set(ta) - set(tb))]
    lines += [f"{name}: only in {b.name}: {p}" for p in sorted(set(tb) - set(ta))]
    for p in sorted(set(ta) & set(tb)):
        if ta[p] != tb[p]:
            lines.append(f"{name}: {p} differs")
            if p == "manifest.json":
                ma = json.loads((a / "current" / p).read_text())
                mb = json.loads((b / "current" / p).read_text())
                for k in ma:
                    if ma[k] != mb.get(k):
                        lines.append(f"    {k}: {str(ma[k])[:300]}\n    vs {str(mb.get(k))[:300]}")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("funnel")
    ap.add_argument("--spark", required=True)
    ap.add_argument("--persons", type=int, default=400)
    ap.add_argument("--work")
    args = ap.parse_args()
    funnel = Path(args.funnel).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="cluster-ingest-check-"))
    shutil.rmtree(work, ignore_errors=True)
    export = work / "export"
    run(funnel, "generate", "--out", export, "--persons", args.persons, "--seed", 17,
        "--format", "mixed", "--fault-rate", "0.05", "--duplicate-rate", "0.05",
        "--conflict-rate", "0.02")
    hostile(work / "hostile")
    days = sorted(p for p in export.iterdir() if p.is_dir())
    half = len(days) // 2
    first = [work / "hostile", *days[:half]]
    # The third run repeats the first batch: all duplicates, nothing new to write.
    batches = [first, days[half:], first]
    failed = []

    stores = {}
    for order in (("embedded",) * 3, ("spark",) * 3, ("embedded", "spark", "embedded"),
                  ("spark", "embedded", "spark")):
        store = work / ("store-" + "-".join(order))
        started = time.monotonic()
        summaries = [json.loads(ingest(funnel, engine, args.spark, store, batch).stdout)
                     for engine, batch in zip(order, batches)]
        stores[order] = store
        print(f"{' then '.join(order)}: {time.monotonic() - started:.1f} s, "
              f"{sum(s['rows_read'] for s in summaries)} rows read, "
              f"{summaries[-1]['events_in_store']} events of {summaries[-1]['persons_in_store']} "
              f"persons, {summaries[1]['persons_merged']} persons merged by the second run, "
              f"{summaries[2]['rows_duplicate']} duplicates in the third")
    base = stores[("embedded",) * 3]
    m = json.loads((base / "current" / "manifest.json").read_text())
    if not m["runs"][1]["persons_merged"]:
        failed.append("the second batch merged no stored person: the check would miss re-keying")
    reasons = set(m["totals"]["rejected_by_reason"])
    for want in ("duplicate_conflict", "malformed_record", "bad_timestamp", "record_too_large"):
        if want not in reasons:
            failed.append(f"no {want} row in the inputs: {sorted(reasons)}")
    for order, store in stores.items():
        if store != base:
            failed += differences(" then ".join(order), base, store)
        verify = run(funnel, "verify", "--store", store, ok=False)
        if verify.returncode != 0:
            failed.append(f"verify {store.name}: {verify.stdout}{verify.stderr}")

    # The same analysis and report on every store.
    outputs = {}
    for order, store in stores.items():
        texts = []
        for f in FUNNELS:
            texts.append(run(funnel, "analyze", "--store", store, "--funnel",
                             REPO / "data" / "funnels" / f, "--format", "json").stdout)
        report = work / f"report-{store.name}.html"
        run(funnel, "report", "--store", store, "--funnel", REPO / "data" / "funnels" / FUNNELS[0],
            "--out", report)
        texts.append(report.read_text())
        outputs[order] = texts
    for order, texts in outputs.items():
        if texts != outputs[("embedded",) * 3]:
            failed.append(f"analyze or report differ on the store written {' then '.join(order)}")

    # A run refused by --max-reject-rate: nothing committed, the same quarantine kept.
    refused = {}
    for engine in ("embedded", "spark"):
        store = work / f"refused-{engine}"
        out = ingest(funnel, engine, args.spark, store, batches[0], "--max-reject-rate", "0.001",
                     ok=False)
        kept = sorted(store.glob("failed/*/quarantine.parquet"))
        refused[engine] = (out.returncode, json.loads(out.stdout)["rows_rejected"],
                           (store / "current").exists(),
                           [hashlib.sha256(k.read_bytes()).hexdigest() for k in kept])
    if refused["embedded"] != refused["spark"] or refused["spark"][0] != 3:
        failed.append(f"refused runs differ: {refused}")

    # A truncated gzip file stops both, with the same message and exit code.
    bad = work / "bad" / "cut.csv.gz"
    bad.parent.mkdir(parents=True)
    whole = gzip.compress(("event_id,user_id,event_type,ts\n"
                           + "x1,u1,click,2021-09-17T10:00:00Z\n" * 5000).encode())
    bad.write_bytes(whole[: len(whole) // 2])
    cut = {engine: ingest(funnel, engine, args.spark, work / f"cut-{engine}", [bad], ok=False)
           for engine in ("embedded", "spark")}
    said = {e: (o.returncode, o.stderr.strip()) for e, o in cut.items()}
    if said["embedded"] != said["spark"] or said["spark"][0] == 0:
        failed.append(f"truncated gzip: {said}")

    # A cluster run killed part way leaves the store as it was; the next run completes it.
    store = work / "killed"
    ingest(funnel, "spark", args.spark, store, batches[0])
    before = (store / "current").resolve().name, tree(store)
    # Killed once its bucket files are written, before the commit: the worst moment.
    p = subprocess.Popen([str(funnel), "ingest", "--store", str(store), "--buckets", "8",
                          "--row-group-rows", "64", "--engine", "spark", "--spark-remote",
                          args.spark, *map(str, batches[1])],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "FUNNEL_TRACE": "1"})
    seen = []
    for line in p.stderr:
        seen.append(line.strip())
        if "spark: bucket files" in line:
            p.send_signal(signal.SIGKILL)
            break
    p.wait()
    if not any("spark: bucket files" in s for s in seen):
        failed.append(f"the run to kill ended before writing its bucket files: {seen[-3:]}")
    after = (store / "current").resolve().name, tree(store)
    if before != after:
        failed.append("a killed cluster run changed the store")
    again = ingest(funnel, "spark", args.spark, store, batches[1], ok=False)
    if again.returncode == 0:
        again = ingest(funnel, "spark", args.spark, store, batches[2], ok=False)
    if again.returncode != 0 or differences("after a kill", base, store):
        failed.append(f"the run after a kill: exit {again.returncode} {again.stderr[-300:]} "
                      f"{differences('after a kill', base, store)[:5]}")

    for line in failed[:40]:
        print("  " + line)
    print(f"cluster_ingest_check: {'1 passed, 0 failed' if not failed else '0 passed, 1 failed'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
