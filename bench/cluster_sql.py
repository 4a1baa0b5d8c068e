#!/usr/bin/env python3
"""Side by side (README, Running on a cluster): two builds' compiled queries on one store, run
alternately in chDB and on Spark (pyspark's Connect client).

usage: bench/cluster_sql.py OLD_BIN NEW_BIN STORE_EVENTS_GLOB FUNNEL...

Needs chdb and pyspark with its Connect client (grpcio, grpcio-status, googleapis-common-protos,
pandas, pyarrow, zstandard) and a Spark Connect server at sc://127.0.0.1:15002
(tests/spark_cluster.sh start VENV DIR).
"""
import subprocess, sys, time, warnings
warnings.filterwarnings("ignore")
old, new, src, funnels = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
import chdb
from pyspark.sql import SparkSession
spark = SparkSession.builder.remote("sc://127.0.0.1:15002").getOrCreate()
def sql(binary, dialect, f):
    return subprocess.run([binary, "sql", "--dialect", dialect, "--funnel", f, "--source", src],
                          check=True, capture_output=True, text=True).stdout
for f in funnels:
    for engine in ("clickhouse", "spark"):
        for label, b in (("old", old), ("new", new), ("old", old), ("new", new)):
            q = sql(b, engine, f)
            t = time.time()
            if engine == "spark":
                rows = spark.sql(q).toArrow().num_rows
            else:
                rows = len(chdb.query(q, "CSV").bytes().splitlines())
            print(f"{f.split('/')[-1]} {engine} {label}: {time.time() - t:.2f} s, {rows} rows", flush=True)
