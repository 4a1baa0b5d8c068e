#!/usr/bin/env python3
"""The cluster ingest's stages so far against the embedded ingest, on the same files (README,
Running on a cluster).

usage: bench/cluster_ingest.py FUNNEL INPUT_DIR [--spark sc://127.0.0.1:15002] [--tasks N]

Times `funnel ingest` into a new store (wall clock and peak RSS), then on Spark: reading the
files on the workers (`funnel sql --read`, written to Parquet in a scratch directory), and the
row rules over what was read (`--rules`), and deduplication of that (`--dedup`), each written
likewise.
Needs pyspark with its Connect client and a Spark Connect server (tests/spark_cluster.sh).
"""
import argparse
import json
import resource
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
CONTRACT = ["event_id", "user_id", "event_type", "ts", "platform", "journey", "chat_type",
            "warning_action", "account_id", "order_id", "amount", "currency"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("funnel")
    ap.add_argument("inputs")
    ap.add_argument("--spark", default="sc://127.0.0.1:15002")
    ap.add_argument("--tasks", type=int, default=4)
    args = ap.parse_args()
    funnel = str(Path(args.funnel).resolve())
    work = Path(tempfile.mkdtemp(prefix="cluster-ingest-"))
    files = sorted(p for p in Path(args.inputs).resolve().rglob("*")
                   if p.is_file() and p.name.endswith((".csv", ".csv.gz", ".jsonl", ".jsonl.gz",
                                                       ".parquet")))

    t = time.time()
    out = subprocess.run([funnel, "ingest", "--store", str(work / "store"), "--format", "json",
                          *map(str, files)], check=True, capture_output=True, text=True)
    embedded_s = time.time() - t
    rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rows = json.loads(out.stdout)["rows_read"]
    print(f"embedded ingest: {rows} rows in {embedded_s:.1f} s ({rows / embedded_s / 1e6:.2f}M "
          f"rows/s), peak RSS {rss_mib:.0f} MiB", flush=True)

    from pyspark.sql import SparkSession
    spark = SparkSession.builder.remote(args.spark).getOrCreate()

    def sql(*extra):
        return subprocess.run([funnel, "sql", "--dialect", "spark", *extra], check=True,
                              capture_output=True, text=True).stdout

    def fmt(p):
        return p.name.removesuffix(".gz").rsplit(".", 1)[1]

    values = ", ".join(f"({i}, '{p}', '{fmt(p)}', {str(p.name.endswith('.gz')).lower()})"
                       for i, p in enumerate(files))
    spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW inputs AS SELECT col1 AS file, col2 AS path, "
              f"col3 AS format, col4 AS gzip FROM VALUES {values}")
    def stage(name, query, rows=None):
        """Writes `query` to Parquet under the work directory as view `name`; prints its time."""
        t = time.time()
        spark.sql(f"INSERT OVERWRITE DIRECTORY '{work}/{name}' USING parquet {query}")
        spark.read.parquet(f"{work}/{name}").createOrReplaceTempView(name)
        took = time.time() - t
        rows = rows or spark.sql("SELECT count(*) AS n FROM read_out WHERE kind IN "
                                 "('record', 'rejected')").collect()[0].n
        print(f"spark {name}: {rows} rows in {took:.1f} s ({rows / took / 1e6:.2f}M rows/s)",
              flush=True)
        return rows

    got = stage("read_out", sql("--read", "inputs", "--tasks", str(args.tasks)))
    keys = [r.k for r in spark.sql("SELECT DISTINCT explode(map_keys(cells)) AS k FROM read_out "
                                   "WHERE kind = 'record'").collect() if r.k not in CONTRACT]
    cells = ", ".join(f"cells['{c}'] AS `{c}`" for c in CONTRACT + sorted(keys))
    spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW src AS SELECT file AS _file, row AS _row, "
              f"{cells} FROM read_out WHERE kind = 'record'")
    stage("validated", sql("--rules", "--source", "src"), got)
    stage("verdicts", sql("--dedup", "--source", "validated", "--properties",
                          ",".join(sorted(keys))), got)
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
