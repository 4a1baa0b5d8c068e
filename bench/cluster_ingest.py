#!/usr/bin/env python3
"""`funnel ingest` on Spark against the embedded ingest, on the same files (README, Running on a
cluster).

usage: bench/cluster_ingest.py FUNNEL INPUT_DIR [--spark sc://127.0.0.1:15002] [--batches N]
                               [--work DIR]

Splits the input's day directories (`funnel generate` writes DIR/YYYY-MM-DD/...) into N batches
(default 1) and ingests them in turn into a new store with the embedded engine and with
`--engine spark`, each timed (wall clock, and the client's peak RSS, which on Spark is only the
driver's), with the Spark run's steps as `FUNNEL_TRACE` prints them (including the rounds of
identity stitching). Then checks that the two stores hold the same bytes.
Needs a Spark Connect server (tests/spark_cluster.sh) and a `funnel` built with `--features
spark`; the workers run the same binary.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def timed(args, env=None):
    """Runs `args` under /usr/bin/time: (seconds, peak RSS MiB, stdout, stderr)."""
    t = time.time()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *args], capture_output=True, text=True,
                         env=env)
    took = time.time() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)[:200]} failed: {out.stderr[-2000:]}")
    lines = out.stderr.strip().splitlines()
    return took, int(lines[-1]) / 1024, out.stdout, "\n".join(lines[:-1])


def tree(store):
    gen = (store / "current").resolve()
    return {str(p.relative_to(gen)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(gen.rglob("*")) if p.is_file()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("funnel")
    ap.add_argument("inputs")
    ap.add_argument("--spark", default="sc://127.0.0.1:15002")
    ap.add_argument("--batches", type=int, default=1)
    ap.add_argument("--work")
    args = ap.parse_args()
    funnel = str(Path(args.funnel).resolve())
    work = Path(args.work or tempfile.mkdtemp(prefix="cluster-ingest-"))
    inputs = Path(args.inputs).resolve()
    days = sorted(p for p in inputs.iterdir() if p.is_dir()) or [inputs]
    n = max(1, min(args.batches, len(days)))
    batches = [days[len(days) * i // n: len(days) * (i + 1) // n] for i in range(n)]

    stores = {}
    for engine in ("embedded", "spark"):
        store = work / f"store-{engine}"
        shutil.rmtree(store, ignore_errors=True)
        stores[engine] = store
        for i, batch in enumerate(batches, 1):
            cmd = [funnel, "ingest", "--store", str(store), "--format", "json"]
            if engine == "spark":
                cmd += ["--engine", "spark", "--spark-remote", args.spark]
            took, rss, out, err = timed([*cmd, *map(str, batch)],
                                        env={**os.environ, "FUNNEL_TRACE": "1"})
            s = json.loads(out)
            print(f"{engine} batch {i}/{n}: {s['rows_read']:,} rows in {took:.1f} s "
                  f"({s['rows_read'] / took / 1e6:.3f}M rows/s), client peak RSS {rss:.0f} MiB, "
                  f"{s['persons_merged']:,} persons merged, store {s['events_in_store']:,} events",
                  flush=True)
            if engine == "spark":
                last = 0.0
                for line in err.splitlines():
                    m = re.match(r"\s*([0-9.]+) s\s+spark: (.*)", line)
                    if m:
                        at = float(m.group(1))
                        print(f"    {m.group(2)}: {at - last:.1f} s")
                        last = at
    same = tree(stores["embedded"]) == tree(stores["spark"])
    print(f"stores byte-identical: {same}")
    shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()
