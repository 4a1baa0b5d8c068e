#!/usr/bin/env python3
"""The cluster ingest reads, validates and deduplicates input files as the embedded ingest does,
row by row.

    read_check.py FUNNEL --spark sc://HOST:PORT [--persons N] [--work DIR]

Inputs: generated exports with faults (duplicates, conflicts, malformed rows) as CSV, gzip CSV,
JSON lines, gzip JSON lines and Parquet, and hand-written hostile files (a byte-order mark,
CRLF and lone CR line ends, quoted line breaks, stray and unclosed quotes, wrong field counts,
blank lines, a field over the field limit, a record over the record limit, JSON that is not an
object or not valid, nested values, repeated keys, literal numbers, bytes that are not UTF-8).

The embedded ingest loads them all in one run. On Spark, `funnel sql --read` reads the same
files on the workers (`funnel spark-worker read`), then `--rules` and `--dedup` run on what it
read. Compared: every quarantined row (file, row, line, reason, field, value, message, raw
text), every stored row (file, line, its contract fields as stored, the instant, the amount,
the currency and the properties), and per file its size, SHA-256 and row counts. A truncated
gzip file must stop both with the same message and exit code. Exits 1 and prints the first
differences otherwise.
"""
import argparse
import collections
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from rules_check import ms_of  # epoch ms of a stored timestamp

CONTRACT = ["event_id", "user_id", "event_type", "ts", "platform", "journey", "chat_type",
            "warning_action", "account_id", "order_id", "amount", "currency"]
TEXT = [c for c in CONTRACT if c not in ("ts", "amount", "currency")]
HEADER = "event_id,user_id,event_type,ts,platform,journey,chat_type,note"


def hostile(d):
    """Hand-written files with every read fault the readers know."""
    d.mkdir(parents=True, exist_ok=True)
    ok = "2021-09-17T10:00:00+08:00"
    csv = [
        "\ufeff" + HEADER,
        f"h1,u1,click,{ok},wechat,external_link,group,plain",
        f'h2,u1,click,{ok},wechat,external_link,group,"quoted, with comma"',
        f'h3,u2,click,{ok},wechat,external_link,group,"two\nlines"',
        f'h4,u2,click,{ok},wechat,external_link,group,"text"after',
        f'h5,u3,click,{ok},wechat,"unclosed,group,x',
        f"h6,u3,click,{ok},wechat,external_link,group",
        "",
        f'h7,u4,click,{ok},wechat,external_link,group,"a ""doubled"" quote"',
        f'h8,u4,cl"ick,{ok},wechat,external_link,group,stray quote kept',
        f'h9,u5,click,{ok},wechat,external_link,group,"multi\nline","extra field"',
        f"h10,u5,click,{ok},wechat,external_link,group," + "v" * ((1 << 20) + 5),
        f"h11,u6,click,{ok},wechat,external_link,group," + "w" * ((16 << 20) + 10),
        f"h12,u6,click,{ok},wechat,external_link,group,after the long line",
        f" h13 ,u7, click ,{ok},wechat,external_link,group, spaced ",
    ]
    text = "\r\n".join(csv[:6]) + "\r\n" + "\n".join(csv[6:9]) + "\r" + "\n".join(csv[9:]) + "\n"
    (d / "hostile.csv").write_bytes(text.encode())
    lines = [
        json.dumps({"event_id": "j1", "user_id": "u1", "event_type": "click", "ts": ok,
                    "n": 1e2}).replace("100.0", "1e2"),
        '{"event_id": "j2", "user_id": "u1", "event_type": "click", "ts": "' + ok
        + '", "big": 123456789012345678901, "neg": -0, "f": 1.50, "t": true, "no": null}',
        '{"event_id": "j3", "user_id": "u1", "event_type": "click", "ts": "' + ok
        + '", "platform": {"nested": [1, 2]}}',
        '{"event_id": "j4", "user_id": "u1", "event_type": "click", "ts": "' + ok
        + '", "props": {"a": [1, {"b": "c"}], "d": 1e5}}',
        '{"event_id": "j5", "user_id": "u1", "event_type": "click", "event_type": "login",'
        ' "account_id": "acc-9", "ts": "' + ok + '"}',
        '[1, 2, 3]',
        '{"event_id": "j6", "user_id": ',
        '   ',
        '{"event_id": "j7", "user_id": "u\\ud800x", "event_type": "click", "ts": "' + ok + '"}',
        '{"event_id": "j8", "user_id": "u2", "event_type": "click", "ts": "' + ok
        + '", "blob": "' + "b" * ((1 << 20) + 1) + '"}',
        '{"event_id": "j9", "user_id": "u2", "event_type": "click", "ts": "' + ok
        + '", "tab": "a\\tb", "uni": "\u5fae\u4fe1"}',
        '{"event_id": "j10", "user_id": "u3", "event_type": "purchase", "ts": "' + ok
        + '", "order_id": "o1", "amount": 12.50}',
    ]
    body = ("\n".join(lines) + "\n").encode()
    body += b'{"event_id": "j11", "user_id": "u\xff\xfe", "event_type": "click", "ts": "x"}\n'
    body += b'{"event_id": "j12", "user_id": "u4", "event_type": "click", "ts": "' + ok.encode() \
        + b'", "pad": "' + b"p" * ((16 << 20) + 3) + b'"}\n'
    body += b'{"event_id": "j13", "user_id": "u4", "event_type": "click", "ts": "' + ok.encode() \
        + b'"}'
    (d / "hostile.jsonl").write_bytes(body)
    # Conflicting versions whose quarantine raw text is the normalised event's JSON: years before
    # 1000 and 1970, amounts, property names in capitals and beyond ASCII, control characters,
    # texts over the quarantine's 64 KiB.
    first = {"event_id": "c1", "user_id": "u8", "event_type": "click", "ts": "0999-05-01T00:00:00Z"}
    pairs = [
        (first, {**first, "Zeta": "Z", "\u00e9t\u00e9": "x\u000b\u001f\u0001\t\\u000B\u2028"}),
        ({"event_id": "c2", "user_id": "u8", "event_type": "purchase", "order_id": "o9",
          "amount": "12.5", "ts": "1969-12-31T23:59:59.999Z"},
         {"event_id": "c2", "user_id": "u8", "event_type": "purchase", "order_id": "o9",
          "amount": "0.25", "ts": "1969-12-31T23:59:59.999Z", "currency": "USD"}),
        ({"event_id": "c3", "user_id": "u8", "event_type": "click", "ts": ok},
         {"event_id": "c3", "user_id": "u8", "event_type": "click", "ts": ok,
          "long": "\u5fae" * 40000}),
        ({"event_id": "c4" * 40000, "user_id": "u8", "event_type": "click", "ts": ok},
         {"event_id": "c4" * 40000, "user_id": "u9", "event_type": "click", "ts": ok}),
    ]
    (d / "conflicts.jsonl").write_text(
        "".join(json.dumps(a) + "\n" + json.dumps(b, ensure_ascii=False) + "\n" for a, b in pairs))
    # Timestamp-typed Parquet columns: wall-clock and instant `ts`, a typed property; a wall
    # clock in Shanghai's 1988 daylight-saving gap and an instant past the year 9999.
    import pyarrow as pa
    ms = [1631844000000, 577247400000, 253402300800000, 0]
    for name, tz in (("typed-local.parquet", None), ("typed-utc.parquet", "UTC")):
        pq.write_table(pa.table({
            "event_id": [f"{name}-{i}" for i in range(len(ms))],
            "user_id": ["u10"] * len(ms),
            "event_type": ["click"] * len(ms),
            "ts": pa.array(ms, pa.timestamp("ms", tz=tz)),
            "seen_at": pa.array(ms, pa.timestamp("us", tz=tz)),
        }), d / name)
    # Two files share a name's stem; one is gzip.
    (d / "hostile-gz.csv.gz").write_bytes(gzip.compress(
        (HEADER + "\n" + f"g1,u9,click,{ok},wechat,external_link,group,in gzip\n").encode()))


def cut(text, limit=64 << 10):
    """The quarantine's cut of a text (a reference for what its writer keeps)."""
    if text is None:
        return None
    b = text.encode()
    if len(b) <= limit:
        return text
    end = min(len(b), limit - len(f"… [{len(b)} more bytes cut]".encode()))
    while end > 0 and (b[end] & 0xC0) == 0x80:
        end -= 1
    return b[:end].decode() + f"… [{len(b) - end} more bytes cut]"


def embedded(funnel, store, files):
    out = subprocess.run([funnel, "ingest", "--store", str(store), "--format", "json",
                          *map(str, files)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"embedded ingest failed: {out.stderr}")
    gen = store / "current"
    stored = collections.Counter()
    for f in sorted((gen / "events").glob("*/*.parquet")):
        t = pq.read_table(f)
        props = [n for n in t.column_names
                 if n not in CONTRACT and n != "person_id" and not n.startswith("_")]
        for rec in t.to_pylist():
            amount = rec["amount"]
            stored[(rec["_source_file"], rec["_source_line"],
                    *(rec[c] for c in TEXT), ms_of(rec["ts"]),
                    None if amount is None else int(amount * 10000), rec["currency"],
                    tuple(sorted((p, rec[p]) for p in props if rec[p] is not None)))] += 1
    rejected = {}
    for f in sorted((gen / "quarantine").glob("*.parquet")):
        for rec in pq.read_table(f).to_pylist():
            rejected[(rec["source_file"], rec["row"])] = (
                rec["line"], rec["reason"], rec["field"], rec["value"], rec["message"],
                rec["raw"])
    manifest = json.loads((gen / "manifest.json").read_text())
    inputs = {i["path"]: (i["bytes"], i["sha256"], i["rows_read"], i["rows_stored"],
                          i["rows_rejected"], i["rows_duplicate"])
              for i in manifest["runs"][-1]["inputs"]}
    return stored, rejected, inputs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("funnel")
    ap.add_argument("--spark", required=True)
    ap.add_argument("--persons", type=int, default=400)
    ap.add_argument("--work")
    args = ap.parse_args()
    funnel = str(Path(args.funnel).resolve())
    work = Path(args.work or tempfile.mkdtemp(prefix="read-check-"))
    shutil.rmtree(work / "in", ignore_errors=True)
    for i, (name, extra) in enumerate([
            ("csv", []), ("csv-gz", ["--format", "csv", "--gzip"]),
            ("jsonl", ["--format", "jsonl"]), ("jsonl-gz", ["--format", "jsonl", "--gzip"]),
            ("parquet", ["--format", "parquet"])]):
        subprocess.run([funnel, "generate", "--out", str(work / "in" / name), "--persons",
                        str(args.persons), "--seed", str(30 + i), "--fault-rate", "0.05",
                        "--duplicate-rate", "0.05", "--conflict-rate", "0.01", *extra],
                       check=True, capture_output=True)
    hostile(work / "in" / "hostile")
    files = sorted(p for p in (work / "in").rglob("*")
                   if p.is_file() and p.name.endswith((".csv", ".csv.gz", ".jsonl", ".jsonl.gz",
                                                       ".parquet")))

    def fmt(p):
        n = p.name.removesuffix(".gz")
        return n.rsplit(".", 1)[1]

    shutil.rmtree(work / "store", ignore_errors=True)
    want_stored, want_rejected, want_files = embedded(funnel, work / "store", files)

    from pyspark.sql import SparkSession
    spark = SparkSession.builder.remote(args.spark).getOrCreate()

    def sql(*extra):
        return subprocess.run([funnel, "sql", "--dialect", "spark", *extra], check=True,
                              capture_output=True, text=True).stdout

    def files_view(name, paths):
        def lit(t):
            return "'" + t.replace("\\", "\\\\").replace("'", "\\'") + "'"
        rows = ", ".join(f"({i}, {lit(str(p))}, '{fmt(p)}', {str(p.name.endswith('.gz')).lower()})"
                         for i, p in enumerate(paths))
        spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {name} AS SELECT col1 AS file, "
                  f"col2 AS path, col3 AS format, col4 AS gzip FROM VALUES {rows}")

    files_view("inputs", files)
    scratch = work / "spark-read"
    shutil.rmtree(scratch, ignore_errors=True)
    spark.sql(f"INSERT OVERWRITE DIRECTORY '{scratch}' USING parquet "
              f"{sql('--read', 'inputs', '--tasks', '3')}")
    spark.read.parquet(str(scratch)).createOrReplaceTempView("read_out")
    path_of = {i: str(p) for i, p in enumerate(files)}
    failed = []

    errors = spark.sql("SELECT file, message FROM read_out WHERE kind = 'error'").collect()
    if errors:
        failed.append(("unread files", str([(path_of[e.file], e.message) for e in errors])))

    keys = spark.sql("SELECT DISTINCT explode(map_keys(cells)) AS k FROM read_out "
                     "WHERE kind = 'record'").collect()
    props = sorted(k.k for k in keys if k.k not in CONTRACT)
    store_name = {p: ("src_" + p if p in ("person_id", "_content_hash", "_source_file",
                                          "_source_line", "_ingest_run") else p) for p in props}

    def col(c):
        return "`" + c.replace("`", "``") + "`"

    cells = ", ".join(f"cells[{json.dumps(c)}] AS {col(c)}" for c in CONTRACT + props)
    spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW src AS SELECT file AS _file, row AS _row, "
              f"coalesce(line, row) AS _line, {cells} FROM read_out WHERE kind = 'record'")
    spark.sql(sql("--rules", "--source", "src")).createOrReplaceTempView("validated")
    dedup = sql("--dedup", "--source", "validated", "--properties", ",".join(props))
    spark.sql(dedup).createOrReplaceTempView("verdicts")

    got_rejected = {}
    twice = []

    def reject(key, outcome):
        if key in got_rejected:
            twice.append(key)
        got_rejected[key] = outcome
    for r in spark.sql("SELECT file, row, line, reason, field, value, message, raw FROM read_out "
                       "WHERE kind = 'rejected'").collect():
        reject((path_of[r.file], r.row), (r.line, r.reason, r.field, cut(r.value),
                                                  r.message, cut(r.raw)))
    raw_of = {(r.file, r.row): (r.line, r.raw) for r in spark.sql(
        "SELECT file, row, line, raw FROM read_out WHERE kind = 'record'").collect()}
    for r in spark.sql("SELECT _file, _row, _reason, _field, _value, _message FROM validated "
                       "WHERE _reason IS NOT NULL").collect():
        line, raw = raw_of[(r._file, r._row)]
        reject((path_of[r._file], r._row), (line, r._reason, r._field, cut(r._value),
                                                    r._message, cut(raw)))
    for r in spark.sql("SELECT _file, _row, _conflict_field, _conflict_value, _conflict_message, _conflict_raw "
                       "FROM verdicts WHERE _verdict = 'duplicate_conflict'").collect():
        line, _ = raw_of[(r._file, r._row)]
        reject((path_of[r._file], r._row), (line, "duplicate_conflict", r._conflict_field,
                                                    cut(r._conflict_value), r._conflict_message,
                                                    cut(r._conflict_raw)))
    if twice:
        failed.append(("rows rejected twice on Spark", str(twice[:5])))

    prop_cols = ", ".join(f"v.{col(p)}" for p in props)
    got_stored = collections.Counter()
    for r in spark.sql(
            f"SELECT v._file, v._line, {', '.join('v.' + c for c in TEXT)}, v._ts_ms, "
            f"v._amount_units, v._currency, v._unparsed_amount{', ' + prop_cols if props else ''} "
            f"FROM validated v JOIN verdicts d ON v._file = d._file AND v._row = d._row "
            f"WHERE d._verdict = 'accepted'").collect():
        d = r.asDict()
        kv = [(store_name[p], d[p]) for p in props if d[p] not in (None, "")]
        if d["_unparsed_amount"] is not None:
            kv.append(("src_amount", d["_unparsed_amount"]))
        got_stored[(path_of[d["_file"]], d["_line"], *(d[c] or None for c in TEXT), d["_ts_ms"],
                    d["_amount_units"], d["_currency"], tuple(sorted(kv)))] += 1

    for k in sorted(set(want_rejected) | set(got_rejected)):
        w, g = want_rejected.get(k), got_rejected.get(k)
        if w != g:
            what = [n for i, n in enumerate(["line", "reason", "field", "value", "message", "raw"])
                    if w is None or g is None or w[i] != g[i]]
            failed.append((f"quarantine {(w or g)[1]}, {'/'.join(what)} differ",
                           f"quarantine {k}:\n    embedded {str(w)[:400]}\n"
                           f"    spark    {str(g)[:400]}"))
    only_want, only_got = want_stored - got_stored, got_stored - want_stored
    for k in only_want:
        failed.append(("stored by the embedded ingest only", str(k)[:600]))
    for k in only_got:
        failed.append(("stored by Spark only", str(k)[:600]))
    # Per file: size, SHA-256, and the rows that reached Spark by outcome (read, stored,
    # rejected, duplicate), against the embedded manifest's figures.
    got_files = {path_of[r.file]: (r.bytes, r.sha256, r.read, r.stored, r.rejected, r.duplicate)
                 for r in spark.sql(
        "SELECT f.file, f.bytes, f.sha256, coalesce(n.read, 0) AS read, "
        "coalesce(v.stored, 0) AS stored, "
        "coalesce(n.rejected, 0) + coalesce(q.rejected, 0) + coalesce(v.conflicts, 0) AS rejected, "
        "coalesce(v.duplicate, 0) AS duplicate FROM read_out f "
        "LEFT JOIN (SELECT file, count(*) AS read, count_if(kind = 'rejected') AS rejected "
        "  FROM read_out WHERE kind IN ('record', 'rejected') GROUP BY file) n ON f.file = n.file "
        "LEFT JOIN (SELECT _file, count(*) AS rejected FROM validated WHERE _reason IS NOT NULL "
        "  GROUP BY _file) q ON f.file = q._file "
        "LEFT JOIN (SELECT _file, count_if(_verdict = 'accepted') AS stored, "
        "  count_if(_verdict = 'duplicate') AS duplicate, "
        "  count_if(_verdict = 'duplicate_conflict') AS conflicts FROM verdicts GROUP BY _file) v "
        "  ON f.file = v._file WHERE f.kind = 'file'").collect()}
    for p, w in want_files.items():
        if got_files.get(p) != w:
            failed.append(("file figures", f"file {p}: embedded {w}, spark {got_files.get(p)}"))
    unknown = spark.sql("SELECT count(*) AS n FROM read_out WHERE kind IS NULL OR kind NOT IN "
                        "('record', 'rejected', 'file', 'error')").collect()[0].n
    if unknown:
        failed.append(("rows of no kind", f"{unknown} rows"))

    # A truncated gzip file stops both with the same message.
    bad = work / "in-bad" / "cut.csv.gz"
    bad.parent.mkdir(parents=True, exist_ok=True)
    whole = gzip.compress((HEADER + "\n" + "x1,u1,click,2021-09-17T10:00:00Z,a,b,c,d\n" * 5000)
                          .encode())
    bad.write_bytes(whole[: len(whole) // 2])
    emb = subprocess.run([funnel, "ingest", "--store", str(work / "store-bad"), str(bad)],
                         capture_output=True, text=True)
    files_view("bad_inputs", [bad])
    err = spark.sql(f"SELECT exit, message FROM ({sql('--read', 'bad_inputs')}) r "
                    "WHERE kind = 'error'").collect()
    emb_message = emb.stderr.strip().removeprefix("error: ")
    if len(err) != 1 or (err[0].exit, err[0].message) != (emb.returncode, emb_message):
        failed.append(("truncated gzip", f"embedded exit {emb.returncode} {emb_message!r}, "
                       f"spark {[(e.exit, e.message) for e in err]}"))

    spark.stop()
    reasons = collections.Counter(v[1] for v in want_rejected.values())
    print(f"read_check: {len(files)} files, {sum(w[2] for w in want_files.values())} rows: "
          f"{sum(want_stored.values())} stored, {len(want_rejected)} rejected "
          f"{dict(sorted(reasons.items()))}")
    by_kind = collections.defaultdict(list)
    for kind, text in failed:
        by_kind[kind].append(text)
    for kind, texts in sorted(by_kind.items()):
        print(f"  {kind}: {len(texts)}")
        for t in texts[:3]:
            print("    " + t)
    print(f"read_check: {'1 passed, 0 failed' if not failed else f'0 passed, 1 failed ({len(failed)} differences)'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
