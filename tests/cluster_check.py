"""Cluster engines give the embedded engine's numbers, exactly.

For a generated store, an adversarial one (dense in equal timestamps and window edges) and one
with such chains before and across 1970, every example funnel in every windowFunnel mode, a set
of random funnels, a hostile funnel, and the scope options (--from/--to, --cutoff,
--closed-windows-only), `funnel analyze --engine E` must print the same JSON as `funnel analyze`
(embedded), byte for byte once parsed: every group and trend period (--interval, in several
time zones), step for step: persons, conversion, drop-off, pending, excluded persons, time to
convert (median, percentiles, mean, histogram) and where the dropped went (--dropped-next,
--next-by). On Spark, the --persons-out audit table must
hold the embedded engine's rows (every person and group, level, window state, the reported
chain's timestamps and event ids). `funnel report --engine E` must write the embedded engine's
HTML and Markdown byte for byte. Funnels with extensions SQL cannot compute exactly must be
refused with exit 2 naming the option.

  python tests/cluster_check.py FUNNEL_BIN --clickhouse-chdb [--funnels N]
      ClickHouse's engine (chDB) behind a minimal ClickHouse HTTP interface on 127.0.0.1.
  python tests/cluster_check.py FUNNEL_BIN --spark sc://127.0.0.1:15002 [--funnels N]
      A Spark cluster over Spark Connect (tests/spark_cluster.sh starts one).
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from funnel_cases import (EXTENSIONS, MODES, PRE_1970_STARTS, VOCAB, adversarial_exports, is_extended,
                          random_funnel, toml)

FUNNEL = sys.argv[1]
RANDOM_FUNNELS = int(sys.argv[sys.argv.index("--funnels") + 1]) if "--funnels" in sys.argv else 20
passed, failed, seconds = 0, [], []


def chdb_http_server():
    """ClickHouse's HTTP interface for what funnel sends: POST a query ending in FORMAT X."""
    import chdb

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            query, _, fmt = body.rstrip().rpartition("FORMAT ")
            try:
                data = chdb.query(query, fmt.strip()).bytes()
                self.send_response(200)
            except Exception as e:  # the server's error text, as ClickHouse sends it
                data = f"Code: 1. DB::Exception: {e}".encode()
                self.send_response(500)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


if "--spark" in sys.argv:
    ENGINE = ["--engine", "spark", "--spark-remote", sys.argv[sys.argv.index("--spark") + 1]]
else:
    ENGINE = ["--engine", "clickhouse", "--clickhouse-url", chdb_http_server()]


def analyze(store, path, options, engine=()):
    started = time.monotonic()
    out = subprocess.run([FUNNEL, "analyze", "--store", store, "--funnel", path, "--format", "json",
                          *engine, *options], capture_output=True, text=True)
    if engine:
        seconds.append(time.monotonic() - started)
    return out


def comparable(report):
    return json.loads(report)


def check(label, store, path, options=()):
    global passed
    embedded = analyze(store, path, options)
    if embedded.returncode != 0:
        raise RuntimeError(embedded.stderr)
    cluster = analyze(store, path, options, ENGINE)
    if cluster.returncode != 0:
        failed.append(label)
        print(f"FAIL {label}: exit {cluster.returncode}: {cluster.stderr.strip()}")
        return
    want, got = comparable(embedded.stdout), comparable(cluster.stdout)
    if want == got:
        passed += 1
    else:
        failed.append(label)
        for part in ("groups", "trend"):
            if want[part] == got[part]:
                continue
            for gw, gg in zip(want[part], got[part]):
                if gw != gg:
                    print(f"FAIL {label} {part} {gw['key']}:\n  embedded {gw}\n  cluster  {gg}")
                    break
            else:
                print(f"FAIL {label}: {len(want[part])} vs {len(got[part])} {part}")
            break
        else:
            print(f"FAIL {label}: {set(k for k in want if want[k] != got.get(k))} differ")


def audit_rows(path):
    """The audit table at `path` (a Parquet file or a directory of them) as a multiset of rows,
    the group key parsed and timestamps as epoch milliseconds."""
    import collections
    import pyarrow as pa
    import pyarrow.dataset as ds
    table = ds.dataset(path, format="parquet").to_table()
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            ms = table.column(i).cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
            table = table.set_column(i, field.name, ms)
    rows = collections.Counter()
    for r in table.to_pylist():
        r["group"] = json.dumps(json.loads(r["group"]), sort_keys=True)
        rows[tuple(sorted(r.items()))] += 1
    return rows


def check_audit(label, store, funnels, options, tmp):
    global passed
    args = [a for f in funnels for a in ("--funnel", f)]
    embedded, spark_dir = f"{tmp}/audit.parquet", f"{tmp}/audit-spark"
    a = subprocess.run([FUNNEL, "analyze", "--store", store, *args, "--format", "json", *options,
                        "--persons-out", embedded], capture_output=True, text=True)
    if a.returncode != 0:
        raise RuntimeError(a.stderr)
    started = time.monotonic()
    b = subprocess.run([FUNNEL, "analyze", "--store", store, *args, "--format", "json", *options, *ENGINE,
                        "--persons-out", spark_dir], capture_output=True, text=True)
    seconds.append(time.monotonic() - started)
    if b.returncode != 0:
        failed.append(label)
        print(f"FAIL {label}: exit {b.returncode}: {b.stderr.strip()[:800]}")
        return
    want, got = audit_rows(embedded), audit_rows(spark_dir)
    if want == got and a.stdout == b.stdout:
        passed += 1
    else:
        failed.append(label)
        print(f"FAIL {label}: {sum(want.values())} rows embedded, {sum(got.values())} on spark; "
              f"only embedded: {list((want - got).items())[:2]}; only spark: {list((got - want).items())[:2]}")


def check_refused(label, store, path):
    """A funnel SQL cannot compute exactly: exit 2, naming the option."""
    global passed
    out = analyze(store, path, (), ENGINE)
    f = tomllib.load(open(path, "rb"))
    named = sorted(k for k in EXTENSIONS if k in f or any(k in s for s in f["steps"]))
    if out.returncode == 2 and any(n in out.stderr for n in named):
        passed += 1
    else:
        failed.append(label)
        print(f"FAIL {label}: expected exit 2 naming one of {named}, got {out.returncode}: {out.stderr.strip()}")


with tempfile.TemporaryDirectory() as tmp:
    rng = random.Random(20211001)
    gen, store = f"{tmp}/gen", f"{tmp}/store"
    subprocess.run([FUNNEL, "generate", "--out", gen, "--persons", "1200", "--seed", "5", "--format", "mixed"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([FUNNEL, "ingest", "--store", store, gen], check=True, stdout=subprocess.DEVNULL)
    adv_csv, adv = f"{tmp}/adv.csv", f"{tmp}/adv-store"
    adversarial_exports(adv_csv, rng, 300)
    subprocess.run([FUNNEL, "ingest", "--store", adv, adv_csv], check=True, stdout=subprocess.DEVNULL)
    # Chains before and across 1970 (a separate stream of random numbers, so the stores and
    # funnels above stay as they were).
    old_csv, old = f"{tmp}/pre1970.csv", f"{tmp}/pre1970-store"
    adversarial_exports(old_csv, random.Random(19691231), 300, PRE_1970_STARTS)
    subprocess.run([FUNNEL, "ingest", "--store", old, old_csv], check=True, stdout=subprocess.DEVNULL)

    def write(funnel, name):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(toml(funnel))
        return path

    examples = sorted(os.path.join("data/funnels", f) for f in os.listdir("data/funnels") if f.endswith(".toml"))
    for path in examples:
        name = os.path.basename(path)
        if is_extended(path):
            check_refused(f"{name} refused", store, path)
            continue
        check(f"generated / {name}", store, path)
        check(f"generated / {name} / from-to", store, path,
              ["--from", "2021-09-20T00:00:00Z", "--to", "2021-10-01T12:00:00Z"])
        check(f"generated / {name} / cutoff", store, path, ["--cutoff", "2021-10-03T00:00:00Z"])
        check(f"generated / {name} / closed windows only", store, path,
              ["--cutoff", "2021-10-03T00:00:00Z", "--closed-windows-only"])
        check(f"generated / {name} / weekly trend", store, path, ["--interval", "week"])
        check(f"generated / {name} / where the dropped went", store, path,
              ["--next-by", "warning_action", "--cutoff", "2021-10-03T00:00:00Z"])
        check(f"adversarial / {name} / where the dropped went, closed windows", adv, path,
              ["--dropped-next", "--closed-windows-only"])
        if isinstance(tomllib.load(open(path, "rb")).get("breakdown"), str):
            for n in (1, 2):
                check(f"generated / {name} / top {n}, weekly trend", store, path,
                      ["--top", str(n), "--interval", "week"])
        check(f"generated / {name} / daily trend, New York, closed windows", store, path,
              ["--interval", "day", "--timezone", "America/New_York", "--cutoff", "2021-10-03T00:00:00Z",
               "--closed-windows-only"])
        base = tomllib.load(open(path, "rb"))
        for modes in MODES[1:]:
            if isinstance(base.get("breakdown"), list):
                continue
            f = dict(base, mode=modes)
            check(f"adversarial / {name} / {modes}", adv, write(f, "mode.toml"))
        for modes in MODES:
            if isinstance(base.get("breakdown"), list):
                continue
            f = dict(base, mode=modes)
            check(f"before/across 1970 / {name} / {modes or 'default'}", old, write(f, "mode.toml"),
                  ["--interval", ["day", "week", "month"][len(modes) % 3]])
    for i in range(RANDOM_FUNNELS):
        f = random_funnel(rng, i, VOCAB)
        trend_rng = random.Random(i)
        if rng.random() < 0.3 and f.get("breakdown"):
            f["breakdown"] = [f["breakdown"], rng.choice(["journey", "chat_type", "campaign"])]
            if f["breakdown"][0] == f["breakdown"][1]:
                f["breakdown"] = f["breakdown"][:1]
        label = "adversarial" if i % 2 else "generated"
        trend = ["--interval", trend_rng.choice(["day", "week", "month"]), "--timezone",
                 trend_rng.choice(["UTC", "Asia/Shanghai", "Europe/London"])] if trend_rng.random() < 0.4 else []
        check(f"{label} / random {i} {f.get('mode')} {' '.join(trend)}", adv if i % 2 else store,
              write(f, f"r{i}.toml"), trend)
    hostile = {"name": "x'; DROP TABLE t; --", "window": "1d", "breakdown": "journey",
               "mode": ["strict_order", "strict_once"],
               "steps": [{"name": "a", "event_type": "click",
                          "where": {"journey": ["external_link", "x') OR 1=1 --", "back\\slash'quote`tick",
                                                "\\u0027) OR (1=1"]}},
                         {"name": "b", "event_type": "purchase"}]}
    check("generated / hostile funnel", store, write(hostile, "hostile.toml"))

    # The audit table (--persons-out, Spark): the embedded engine's rows, person for person.
    if "--spark" in sys.argv:
        by_journey = "data/funnels/all_journeys_by_journey.toml"
        once = write(dict(tomllib.load(open(by_journey, "rb")), mode=["strict_once", "strict_order"]),
                     "once.toml")
        one_step = write({"name": "clicks", "window": "1h", "breakdown": "journey",
                          "steps": [{"name": "click", "event_type": "click"}]}, "one.toml")
        for label, st, funnels, options in [
            ("audit / examples and trends", store, [p for p in examples if not is_extended(p)][:3],
             ["--interval", "week"]),
            ("audit / top 1, strict_once, one step, closed windows", store, [by_journey, once, one_step],
             ["--top", "1", "--cutoff", "2021-10-03T00:00:00Z", "--closed-windows-only"]),
            ("audit / adversarial", adv, [by_journey, once], []),
        ]:
            check_audit(label, st, funnels, options, tmp)

    # The whole report (funnels, weekly trends, time to convert, the comparison adjusted for
    # the chat surface and split before/after a date against a control): the same HTML and
    # Markdown, byte for byte.
    # (The example comparison holds the item constant, an extension; this one compares the
    # journeys on the plain funnel.)
    compare = "data/funnels/all_journeys_by_journey.toml"
    shown = [p for p in examples if not is_extended(p) and p != compare]

    def report(out, engine=()):
        started = time.monotonic()
        r = subprocess.run([FUNNEL, "report", "--store", store, *[a for p in shown for a in ("--funnel", p)],
                            "--out", f"{out}.html", "--markdown", f"{out}.md", "--compare", compare,
                            "--adjust-for", "chat_type", "--split-at", "2021-09-25", "--control",
                            "wechat_native", "--next-by", "warning_action", *engine],
                           capture_output=True, text=True)
        if engine:
            seconds.append(time.monotonic() - started)
        return r

    # `funnel compare` (CONTRACT §8 JSON, adjusted and before/after): the same output.
    for fmt in ("json", "markdown"):
        cmd = [FUNNEL, "compare", "--store", store, "--funnel", compare, "--by", "journey", "--baseline",
               "wechat_native", "--adjust-for", "chat_type", "--split-at", "2021-09-25", "--control",
               "wechat_native", "--format", fmt]
        want, got = (subprocess.run(c, capture_output=True, text=True) for c in (cmd, cmd + ENGINE))
        if want.returncode == 0 and got.returncode == 0 and want.stdout == got.stdout:
            passed += 1
        else:
            failed.append(f"compare {fmt}")
            print(f"FAIL compare {fmt}: exit {want.returncode}/{got.returncode} {got.stderr.strip()[:500]}")

    want, got = report(f"{tmp}/embedded"), report(f"{tmp}/cluster", ENGINE)
    if want.returncode != 0:
        raise RuntimeError(want.stderr)
    same = got.returncode == 0 and all(
        open(f"{tmp}/embedded.{x}", "rb").read() == open(f"{tmp}/cluster.{x}", "rb").read() for x in ("html", "md"))
    if same:
        passed += 1
    else:
        failed.append("report")
        print(f"FAIL report: exit {got.returncode} {got.stderr.strip()[:500]}")

engine = ENGINE[1]
seconds.sort()
median = seconds[len(seconds) // 2] if seconds else 0
print(f"{engine}: {passed} passed, {len(failed)} failed; {len(seconds)} queries, "
      f"median {median:.1f} s per funnel, slowest {max(seconds, default=0):.1f} s")
sys.exit(1 if failed else 0)
