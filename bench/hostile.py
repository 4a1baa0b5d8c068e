#!/usr/bin/env python3
"""Peak memory and outcome of `funnel ingest` on hostile inputs (issue 11, item 4).

    bench/hostile.py FUNNEL [--gb 1] [--work DIR] [--out bench/hostile.json]

Writes each bomb, runs one ingest of it into a fresh store under /usr/bin/time, and records the
exit code, peak RSS, wall time, the length of stderr and the rejected reasons. Every case must
stay under the documented bound (1 GiB peak RSS), print at most one bounded error line, and
lose nothing (rows_read = stored + rejected + duplicate). Exits 1 if a case breaks a bound.
"""
import argparse
import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HEADER = b"event_id,user_id,event_type,ts,journey,campaign\n"
ROW = b"e1,u1,click,2021-09-17T10:00:00Z,external_link,c1\n"
MIB = 1 << 20
BOUND_RSS_MIB = 1024


def write_repeated(path, head, byte, n, tail, compress=False):
    opener = gzip.open if compress else open
    kw = {"compresslevel": 1} if compress else {}
    block = byte * MIB
    with opener(path, "wb", **kw) as f:
        f.write(head)
        for _ in range(n // MIB):
            f.write(block)
        f.write(tail)


def cases(work, gb):
    n = gb * 1024 * MIB
    yield "NUL bytes, .csv.gz (header)", "bomb.csv.gz", lambda p: write_repeated(p, b"", b"\0", n, b"", True)
    yield "NUL bytes, 100 MB .csv.gz", "bomb100.csv.gz", lambda p: write_repeated(p, b"", b"\0", 100 * MIB, b"", True)
    yield "one CSV field of the whole size", "field.csv", lambda p: write_repeated(
        p, HEADER + b"f1,u1,click,2021-09-17T10:00:00Z,", b"x", n, b",c\n" + ROW)
    yield "one JSON line of the whole size", "line.jsonl", lambda p: write_repeated(
        p, b'{"event_id":"j1","user_id":"u1","event_type":"click","ts":"2021-09-17T10:00:00Z","campaign":"',
        b"y", n, b'"}\n')
    yield "unterminated quote, then the whole size", "quote.csv", lambda p: write_repeated(
        p, HEADER + b'q1,u1,click,2021-09-17T10:00:00Z,"open,', b"z", n, b"\n" + ROW)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("funnel")
    ap.add_argument("--gb", type=int, default=1)
    ap.add_argument("--work", default="bench/work/hostile")
    ap.add_argument("--out")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results, ok = [], True
    for label, name, make in cases(work, args.gb):
        path = work / name
        make(path)
        store = work / "store"
        shutil.rmtree(store, ignore_errors=True)
        t0 = time.time()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", args.funnel, "ingest", "--store", str(store), "--format", "json", str(path)],
            capture_output=True,
            text=True,
        )
        wall = time.time() - t0
        lines = proc.stderr.strip().splitlines()
        rss_mib = int(lines[-1]) / 1024
        errors = [l for l in lines[:-1] if not l.startswith("Command exited with non-zero status")]
        r = {"case": label, "file_mib": round(path.stat().st_size / MIB, 1), "exit": proc.returncode,
             "peak_rss_mib": round(rss_mib, 1), "seconds": round(wall, 1),
             "stderr_chars": sum(len(e) for e in errors), "stderr_lines": len(errors)}
        if proc.returncode == 0:
            s = json.loads(proc.stdout)
            r.update({k: s[k] for k in ("rows_read", "rows_stored", "rows_rejected", "rows_duplicate", "rejected_by_reason")})
            if s["rows_read"] != s["rows_stored"] + s["rows_rejected"] + s["rows_duplicate"]:
                ok = False
                r["problem"] = "counts do not reconcile"
        else:
            r["error"] = errors[0][:300] if errors else ""
        if rss_mib > BOUND_RSS_MIB or len(errors) > 1 or r["stderr_chars"] > 2100 or proc.returncode not in (0, 3):
            ok = False
            r.setdefault("problem", "over a bound")
        results.append(r)
        print(json.dumps(r), flush=True)
        path.unlink()
    shutil.rmtree(work / "store", ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("hostile: " + ("1 passed, 0 failed" if ok else "0 passed, 1 failed"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
