#!/usr/bin/env python3
"""The cluster ingest's row rules and deduplication on Spark give the embedded ingest's outcome,
row by row.

    rules_check.py FUNNEL --spark sc://HOST:PORT [--rows N] [--seed S] [--work DIR]

Writes two batches of random export rows (text columns: hostile timestamps in every form of the
grammar and around it, daylight-saving gaps and repeats, leap seconds, bad calendars, amounts of
every shape, bad and absent types, actions, accounts and orders, a property column; batch 1
repeats 5% of its own event_ids, batch 2 30% of batch 1's and its own, half as exact copies
and half with one field changed) to Parquet files, ingests them one after the other with
`funnel ingest` in several zones, and runs `funnel sql --dialect spark --rules` and `--dedup`
(batch 2 against the store's events after batch 1) on the same files on Spark. For every row:
a stored row must have the same instant, amount, currency and `src_amount`; a quarantined one
the same reason, field, value and message (`duplicate_conflict` included); a duplicate must be
a duplicate on both. Exits 1 and prints the first differences otherwise.
"""
import argparse
import json
import random
import shutil
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
        "campaign": r.choice([None, "", "autumn", "member_day"]),
        "platform": r.choice([None, "", "wechat", "taobao"]),
        "journey": r.choice([None, "external_link", "mini_program"]),
        "chat_type": r.choice([None, "", "group"]),
    }
    return row


def with_repeats(r, rows, earlier, share):
    """`rows` where a `share` of them repeat an event_id of `earlier` or of an earlier row:
    an exact copy (a duplicate) or a copy with one field changed (a conflict)."""
    out = []
    for row in rows:
        pool = earlier + out
        if pool and r.random() < share:
            row = dict(r.choice(pool))
            if r.random() < 0.5:
                field = r.choice(["platform", "amount", "campaign", "ts", "user_id"])
                row[field] = r.choice(["x", "", None, "7", "2021-09-17T10:00:00Z"])
        out.append(row)
    return out


def ingest(funnel, store, path, zone, run):
    """Ingests `path` as run `run` of `store`: the outcome of each of its rows by row number
    (rows neither stored nor rejected are duplicates)."""
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
            if rec["_ingest_run"] != run:
                continue
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
            if rec["run"] == run:
                outcome[rec["row"]] = ("rejected", rec["reason"], rec["field"], rec["value"],
                                       rec["message"])
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
    # Batch 1 repeats some of its own event_ids; batch 2 repeats some of batch 1's and its own.
    first = with_repeats(r, [random_row(r, i) for i in range(args.rows)], [], 0.05)
    second = with_repeats(r, [random_row(r, args.rows + i) for i in range(args.rows // 2)],
                          [row for row in first if row["event_id"]], 0.3)
    names = list(first[0])
    paths = [work / "a-rows.parquet", work / "b-rows.parquet"]
    for rows, path in zip([first, second], paths):
        pq.write_table(pa.table({n: pa.array([row[n] for row in rows], pa.string()) for n in names}),
                       path, row_group_size=4096)

    from pyspark.sql import SparkSession
    spark = SparkSession.builder.remote(args.spark).getOrCreate()

    def sql(*extra):
        return subprocess.run([funnel, "sql", "--dialect", "spark", *extra], check=True,
                              capture_output=True, text=True).stdout

    failed = 0
    for zone in ZONES:
        store = work / f"store-{zone.replace('/', '_')}"
        stored_after_first = work / f"stored-{zone.replace('/', '_')}"
        for run, (rows, path) in enumerate(zip([first, second], paths), start=1):
            want = ingest(funnel, store, path, zone, run)
            if run == 1:
                # The store's events after batch 1, for Spark to deduplicate batch 2 against.
                shutil.copytree(store / "current" / "events", stored_after_first)
            # The embedded store holds instants as timestamps; compare in epoch ms.
            want = {k: (v[0], ms_of(v[1]), *v[2:]) if v[0] == "stored" else v
                    for k, v in want.items()}
            spark.read.parquet(str(path)).selectExpr("*", "_metadata.row_index + 1 AS _row") \
                .createOrReplaceTempView("src")
            rules = sql("--rules", "--source", "src", "--timezone", zone)
            spark.sql(f"SELECT *, 0 AS _file FROM ({rules}) q").createOrReplaceTempView("validated")
            dedup = ["--dedup", "--source", "validated", "--properties", "campaign"]
            if run == 2:
                contract = {"event_id", "user_id", "event_type", "ts", "platform", "journey",
                            "chat_type", "warning_action", "account_id", "order_id", "amount",
                            "currency", "person_id"}
                props = sorted({n for f in stored_after_first.glob("*/*.parquet")
                                for n in pq.read_schema(f).names
                                if n not in contract and not n.startswith("_")})
                assert {"campaign", "src_amount"} <= set(props), props
                dedup += ["--stored", f"{stored_after_first}/*/*.parquet",
                          "--stored-properties", ",".join(props)]
            verdicts = {rec["_row"]: rec for rec in spark.sql(
                f"SELECT _row, _verdict, _conflict_field, _conflict_value, _conflict_message "
                f"FROM ({sql(*dedup)}) d").collect()}
            got = {}
            for rec in spark.sql("SELECT _row, event_id, _reason, _field, _value, _message, "
                                 "_ts_ms, _amount_units, _currency, _unparsed_amount "
                                 "FROM validated").collect():
                k = rec["_row"]
                if rec["_reason"] is not None:
                    got[k] = ("rejected", rec["_reason"], rec["_field"], rec["_value"],
                              rec["_message"])
                elif verdicts[k]["_verdict"] == "duplicate_conflict":
                    v = verdicts[k]
                    got[k] = ("rejected", "duplicate_conflict", v["_conflict_field"],
                              v["_conflict_value"], v["_conflict_message"])
                elif verdicts[k]["_verdict"] == "accepted":
                    got[k] = ("stored", rec["_ts_ms"], rec["_amount_units"], rec["_currency"],
                              rec["_unparsed_amount"])
            diffs = [(k, rows[k - 1], want.get(k), got.get(k))
                     for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
            stored = sum(1 for v in want.values() if v[0] == "stored")
            reasons = {}
            for v in want.values():
                if v[0] == "rejected":
                    reasons[v[1]] = reasons.get(v[1], 0) + 1
            print(f"{zone} batch {run}: {len(rows)} rows ({stored} stored, "
                  f"{len(rows) - len(want)} duplicates, {len(want) - stored} rejected), "
                  f"{len(diffs)} different; rejected by reason {dict(sorted(reasons.items()))}")
            for k, row, w, g in diffs[:8]:
                print(f"  row {k}: {json.dumps(row, ensure_ascii=False)}\n"
                      f"    embedded {w}\n    spark    {g}")
            failed += bool(diffs)
    spark.stop()
    print(f"rules_check: {2 * len(ZONES) - failed} batches agree, {failed} differ")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
