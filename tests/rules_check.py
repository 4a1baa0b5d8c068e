#!/usr/bin/env python3
"""The cluster ingest's row rules on Spark give the embedded ingest's outcome, row by row.

    rules_check.py FUNNEL --spark sc://HOST:PORT [--rows N] [--seed S] [--work DIR]

Writes N random export rows (text columns: hostile timestamps in every form of the grammar and
around it, daylight-saving gaps and repeats, leap seconds, bad calendars, amounts of every
shape, bad and absent types, actions, accounts and orders) to a Parquet file, ingests it with
`funnel ingest` in several zones, and runs `funnel sql --dialect spark --rules` on the same
file on Spark. For every row: a stored row must have the same instant, amount, currency and
`src_amount`; a quarantined one the same reason, field, value and message. Exits 1 and prints
the first differences otherwise.
"""
import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ZONES = ["Asia/Shanghai", "America/New_York", "UTC", "Europe/Berlin", "Australia/Lord_Howe"]
SPACES = [" ", "\t", "\u3000", "\u00a0", "\u2003", "\n"]


def two(n):
    return f"{n:02d}"


def random_ts(r):
    """A timestamp text: mostly of the grammar, often just outside it."""
    y = r.choice([r.randint(1900, 2100), r.randint(1, 9999), 0, 1, 9999, 2021, 2021, 2021])
    mo = r.choice([r.randint(1, 12), 3, 11, 10, 2, 0, 13])
    d = r.choice([r.randint(1, 28), r.randint(1, 31), 29, 30, 31, 0, 32, 7, 14])
    h = r.choice([r.randint(0, 23), 1, 2, 3, 24])
    mi = r.choice([r.randint(0, 59), 0, 30, 60])
    s = r.choice([r.randint(0, 59), 0, 59, 60, 61])
    date = f"{y:04d}-{two(mo)}-{two(d)}"
    sep = r.choice(["T", "T", " ", "t", "  ", ""])
    time = f"{two(h)}:{two(mi)}"
    shape = r.random()
    if shape < 0.7:
        time += ":" + two(s)
        if r.random() < 0.6:
            time += "." + "".join(str(r.randint(0, 9)) for _ in range(r.choice([1, 2, 3, 3, 6, 9, 12, 0])))
    offset = r.choice(["", "", "Z", "z", "+08:00", "-05:00", "+0530", "-00:00", "+23:59", "+24:00",
                       "+08", "+8:00", " +01:00", " Z", "  Z", "+01:60", "UTC"])
    if not offset.strip(" ") or offset == "UTC":
        # chrono-tz (the embedded ingest) has no daylight-saving rules after 2037, Java (Spark)
        # extends them for ever: local times are checked before 2038.
        date = f"{min(y, 2037):04d}" + date[4:]
    text = date + sep + time + offset
    kind = r.random()
    if kind < 0.4:
        # A valid instant in one of the exported forms.
        ms = r.randint(-2208988800000, 4102444800000)
        import datetime
        t = datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)
        text = r.choice([t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                         t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                         t.strftime("%Y-%m-%dT%H:%M:%S") + "+08:00",
                         str(ms)])
    elif kind < 0.48:
        text = str(r.choice([r.randint(-10**13, 10**13), -62135596800000, -62135596800001,
                             253402300799999, 253402300800000, 10**19, -10**19, 0]))
    elif kind < 0.51:
        text = r.choice(["", " ", "yesterday", "2021-09-17", "21-09-17 10:00", "+2021-09-17 10:00",
                         "1.6e12", "2021-9-17 10:00:00", "2021-09-17 1:00", "١٦٣١٨٤٤٠٠٠٠٠٠"])
    elif kind < 0.58:
        # Daylight-saving edges of New York, Berlin and Lord Howe, without an offset.
        text = r.choice(["2021-03-14 02", "2021-11-07 01", "2021-03-28 02", "2021-10-31 02",
                         "2021-10-03 02", "2021-04-04 01", "2021-03-14 01", "2021-03-14 03"])
        text += f":{two(r.choice([0, 15, 30, 59]))}"
        if r.random() < 0.5:
            text += f":{two(r.choice([0, 59, 60]))}"
            if r.random() < 0.5:
                text += ".5"
    if r.random() < 0.1:
        text = r.choice(SPACES) + text
    if r.random() < 0.1:
        text = text + r.choice(SPACES)
    return text


AMOUNTS = ["199.00", "0", "-1", "+3.5", ".5", "5.", ".", "", " ", "1e3", "12,00", "1.23456",
           "1.23450000", "000123.4", "99999999999999.9999", "100000000000000", "-0", "\u0661\u0662",
           " 7 ", "\u30007.25", "--1", "+-1", "1.2.3", "00000000000000000000001", "0.0001",
           "0.00001", "-99.5", "abc"]


def random_row(r, i):
    et = r.choice(["click", "click", "warning", "warning", "login", "purchase", "purchase",
                   "view", "Click", "", " ", "9x", "a-b", None])
    row = {
        "event_id": r.choice([f"e{i}"] * 30 + ["", None]),
        "user_id": r.choice([f"u{i % 97}"] * 30 + ["", None, " "]),
        "event_type": et,
        "ts": r.choice([random_ts(r)] * 20 + ["", None]),
        "warning_action": r.choice(["shown", "continue", "return", "report", "ignore", "",
                                    None, "Shown", " shown"]),
        "account_id": r.choice([f"a{i % 31}", "", None]),
        "order_id": r.choice([f"o{i}", "", None]),
        "amount": r.choice(AMOUNTS + [None, None, f"{r.randint(0, 10**6)}.{r.randint(0, 99):02d}"]),
        "currency": r.choice([None, "", "USD", "CNY"]),
    }
    return row


def ingest(funnel, work, path, zone):
    store = work / f"store-{zone.replace('/', '_')}"
    out = subprocess.run([funnel, "ingest", "--store", str(store), "--timezone", zone,
                          "--format", "json", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"ingest in {zone} failed: {out.stderr}")
    gen = store / "current"
    outcome = {}
    for f in sorted((gen / "events").glob("*/*.parquet")):
        t = pq.read_table(f)
        cols = t.column_names
        for rec in t.to_pylist():
            amount = rec["amount"]
            outcome[rec["_source_line"]] = (
                "stored",
                rec["ts"],
                None if amount is None else int(amount * 10000),
                rec["currency"],
                rec.get("src_amount") if "src_amount" in cols else None,
            )
    for f in sorted((gen / "quarantine").glob("*.parquet")):
        for rec in pq.read_table(f).to_pylist():
            outcome[rec["row"]] = ("rejected", rec["reason"], rec["field"], rec["value"], rec["message"])
    return outcome


def ms_of(ts):
    """Epoch ms of a stored timestamp as pyarrow returns it (datetime, maybe before 1970)."""
    import datetime
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    delta = ts - epoch
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("funnel")
    ap.add_argument("--spark", required=True)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--work")
    args = ap.parse_args()
    funnel = str(Path(args.funnel).resolve())
    work = Path(args.work or tempfile.mkdtemp(prefix="rules-check-"))
    work.mkdir(parents=True, exist_ok=True)
    r = random.Random(args.seed)
    rows = [random_row(r, i) for i in range(args.rows)]
    names = list(rows[0])
    path = work / "rows.parquet"
    pq.write_table(pa.table({n: pa.array([row[n] for row in rows], pa.string()) for n in names}),
                   path, row_group_size=4096)

    from pyspark.sql import SparkSession
    spark = SparkSession.builder.remote(args.spark).getOrCreate()
    failed = 0
    for zone in ZONES:
        want = ingest(funnel, work, path, zone)
        # The embedded store holds instants as timestamps; compare in epoch ms.
        want = {k: (v[0], ms_of(v[1]), *v[2:]) if v[0] == "stored" else v for k, v in want.items()}
        spark.read.parquet(str(path)).selectExpr("*", "_metadata.row_index + 1 AS _row") \
            .createOrReplaceTempView("src")
        sql = subprocess.run([funnel, "sql", "--dialect", "spark", "--rules", "--source", "src",
                              "--timezone", zone], check=True, capture_output=True, text=True).stdout
        got = {}
        for rec in spark.sql(f"SELECT _row, _reason, _field, _value, _message, _ts_ms, "
                             f"_amount_units, _currency, _unparsed_amount FROM ({sql}) q").collect():
            if rec["_reason"] is None:
                got[rec["_row"]] = ("stored", rec["_ts_ms"], rec["_amount_units"], rec["_currency"],
                                    rec["_unparsed_amount"])
            else:
                got[rec["_row"]] = ("rejected", rec["_reason"], rec["_field"], rec["_value"],
                                    rec["_message"])
        diffs = [(k, rows[k - 1], want.get(k), got.get(k)) for k in sorted(set(want) | set(got))
                 if want.get(k) != got.get(k)]
        stored = sum(1 for v in want.values() if v[0] == "stored")
        reasons = {}
        for v in want.values():
            if v[0] == "rejected":
                reasons[v[1]] = reasons.get(v[1], 0) + 1
        print(f"{zone}: {len(want)} rows ({stored} stored, {len(want) - stored} rejected), "
              f"{len(diffs)} different; rejected by reason {dict(sorted(reasons.items()))}")
        for k, row, w, g in diffs[:8]:
            print(f"  row {k}: {json.dumps(row, ensure_ascii=False)}\n    embedded {w}\n    spark    {g}")
        failed += bool(diffs)
    spark.stop()
    print(f"rules_check: {len(ZONES) - failed} zones agree, {failed} differ")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
