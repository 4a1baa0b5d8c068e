"""Differential test of `funnel analyze` against ClickHouse's own windowFunnel (chDB, in-process).

For several stores (the generator's scenario data, adversarial stores dense in equal timestamps
and window-edge gaps, and one with such chains before and across 1970 and in years 1 and 9999),
every example funnel and a set of random funnels, in the default mode and every ClickHouse mode,
the per-step person counts of every group (all persons and each breakdown value) must be
identical.

Usage: python tests/chdb_check.py PATH/TO/funnel [--funnels N]
"""

import csv
import json
import os
import random
import subprocess
import sys
import tempfile

import chdb

from funnel_cases import EXTREME_STARTS, MODES, VOCAB, adversarial_exports, is_extended, random_funnel, toml

FUNNEL = sys.argv[1]
RANDOM_FUNNELS = int(sys.argv[sys.argv.index("--funnels") + 1]) if "--funnels" in sys.argv else 40
passed, failed = 0, []


def q(sql):
    return chdb.query(sql, "JSONEachRow").data()


def sql_str(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cond(step, extra=None):
    parts = [f"event_type = {sql_str(step['event_type'])}"]
    for column, values in step.get("where", {}).items():
        values = values if isinstance(values, list) else [values]
        parts.append(f"ifNull(`{column}` IN ({', '.join(sql_str(v) for v in values)}), 0)")
    if extra:
        parts.append(extra)
    return "toUInt8(" + " AND ".join(parts) + ")"


def window_ms(text):
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return int(text[:-1]) * units[text[-1]] * 1000


def levels(events, funnel, step1_extra=None, where="1"):
    modes = "".join(f", {sql_str(m)}" for m in funnel.get("mode", []))
    conds = [cond(s, step1_extra if i == 0 else None) for i, s in enumerate(funnel["steps"])]
    # windowFunnel reads unsigned timestamps: milliseconds since the store's earliest event.
    sql = f"""
        SELECT level, count() AS n FROM (
          SELECT person_id, windowFunnel({window_ms(funnel['window'])}{modes})(
              toUInt64(toUnixTimestamp64Milli(ts) - (SELECT min(toUnixTimestamp64Milli(ts)) FROM {events})),
              {', '.join(conds)}) AS level
          FROM {events} WHERE {where} GROUP BY person_id)
        GROUP BY level"""
    hist = {}
    for line in q(sql).splitlines():
        row = json.loads(line)
        hist[int(row["level"])] = int(row["n"])
    n = len(funnel["steps"])
    return [sum(c for l, c in hist.items() if l >= k) for k in range(1, n + 1)]


def clickhouse_groups(events, funnel, step1=None, where="1"):
    """Per-step persons of every group; `step1` further restricts step 1, `where` the events."""
    def both(extra):
        return f"({step1}) AND ({extra})" if step1 else extra
    groups = {"{}": levels(events, funnel, step1, where)}
    col = funnel.get("breakdown")
    if col:
        sql = f"SELECT DISTINCT `{col}` AS v FROM {events} WHERE {cond(funnel['steps'][0], step1)} AND {where}"
        for line in q(sql).splitlines():
            v = json.loads(line)["v"]
            extra = f"`{col}` IS NULL" if v is None else f"ifNull(`{col}` = {sql_str(v)}, 0)"
            groups[json.dumps({col: v}, sort_keys=True)] = levels(events, funnel, both(extra), where)
    return groups


WEEK = "toString(toMonday(toTimeZone(ts, 'Asia/Shanghai')))"


def clickhouse_trend(events, funnel, step1=None, where="1"):
    """Weekly trend groups: per week W of the step-1 event, step 1 also requires W."""
    out = {}
    sql = f"SELECT DISTINCT {WEEK} AS w FROM {events} WHERE {cond(funnel['steps'][0], step1)} AND {where}"
    for line in q(sql).splitlines():
        w = json.loads(line)["w"]
        extra = f"{WEEK} = {sql_str(w)}" + (f" AND ({step1})" if step1 else "")
        for key, counts in clickhouse_groups(events, funnel, extra, where).items():
            k = json.loads(key)
            k["period"] = w
            out[json.dumps(k, sort_keys=True)] = counts
    return out


def clickhouse_top(events, funnel, n):
    """CONTRACT §9: the n values with the most step-1 persons (ties by value order, null first)
    as they are, and "(other)": the funnel whose step 1 requires a value outside them (an
    absent value is outside unless null is kept)."""
    groups = clickhouse_groups(events, funnel)
    col = funnel["breakdown"]
    values = [(c[0], json.loads(k)[col]) for k, c in groups.items() if k != "{}"]
    if len(values) <= n:
        return groups
    values.sort(key=lambda x: (-x[0], x[1] is not None, x[1] or ""))
    kept = [v for _, v in values[:n]]
    named = [v for v in kept if v is not None]
    outside = f"`{col}` NOT IN ({', '.join(sql_str(v) for v in named)})" if named else "1"
    extra = (f"(`{col}` IS NOT NULL AND {outside})" if None in kept
             else f"(`{col}` IS NULL OR {outside})")
    out = {"{}": groups["{}"]}
    for v in kept:
        key = json.dumps({col: v}, sort_keys=True)
        out[key] = groups[key]
    out[json.dumps({col: "(other)"}, sort_keys=True)] = levels(events, funnel, extra)
    return out


def ours(store, funnel, tmp, options=(), section="groups"):
    path = os.path.join(tmp, "f.toml")
    with open(path, "w") as f:
        f.write(toml(funnel))
    out = subprocess.run([FUNNEL, "analyze", "--store", store, "--funnel", path, "--format", "json", *options],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    report = json.loads(out.stdout)
    return {json.dumps(g["key"], sort_keys=True): [s["persons"] for s in g["steps"]] for g in report[section]}


def generated_sql(store, funnel, tmp, fold_level=False):
    """Per-step counts from the query `funnel sql --dialect clickhouse` prints, run in chDB; with
    `fold_level`, the level comes from the query's arrayFold instead of windowFunnel."""
    path = os.path.join(tmp, "f.toml")
    with open(path, "w") as f:
        f.write(toml(funnel))
    sql = subprocess.run([FUNNEL, "sql", "--dialect", "clickhouse", "--funnel", path,
                          "--source", f"{store}/current/events/*/*.parquet",
                          *(["--fold-level"] if fold_level else [])],
                         capture_output=True, text=True, check=True).stdout
    cols = funnel.get("breakdown") or []
    cols = cols if isinstance(cols, list) else [cols]
    hist = {}
    for line in q(sql).splitlines():
        row = json.loads(line)
        if int(row["what"]) != 0:  # the time-to-convert rows
            continue
        row["level"] = row["step"]
        key = "{}" if int(row["grp"]) == 0 else json.dumps(
            {c: row[f"k{i}"] for i, c in enumerate(cols)}, sort_keys=True)
        levels_of = hist.setdefault(key, {})
        levels_of[int(row["level"])] = levels_of.get(int(row["level"]), 0) + int(row["persons"])
    n = len(funnel["steps"])
    return {k: [sum(c for l, c in h.items() if l >= s) for s in range(1, n + 1)] for k, h in hist.items()}


def compare(label, store, funnel, tmp, options=(), want=None, section="groups"):
    global passed
    events = f"file('{store}/current/events/*/*.parquet', Parquet)"
    plain = want is None
    want = clickhouse_groups(events, funnel) if want is None else want(events)
    got = ours(store, funnel, tmp, options, section)
    if plain:
        # The SQL this project generates for ClickHouse must give the same numbers, with the
        # level from windowFunnel and with the level from the query's own fold (as on Spark).
        for fold_level in (False, True):
            sql_counts = generated_sql(store, funnel, tmp, fold_level)
            # A group whose every person is at level 0 has no rows in SQL; ours reports zeros.
            padded = {k: sql_counts.get(k, [0] * len(funnel["steps"])) for k in want}
            what = "generated SQL, fold level" if fold_level else "generated SQL"
            if padded != want:
                failed.append((f"{label} ({what})", funnel, want, sql_counts))
                print(f"FAIL {label} ({what}):\n  clickhouse {want}\n  generated  {sql_counts}")
            else:
                passed += 1
    if got == want:
        passed += 1
    else:
        failed.append((label, funnel, want, got))
        print(f"FAIL {label}: {toml(funnel)}\n  clickhouse {want}\n  ours       {got}")


# Funnels with extensions beyond windowFunnel have no ClickHouse counterpart.
EXAMPLES = [os.path.join("data/funnels", f) for f in sorted(os.listdir("data/funnels"))
            if f.endswith(".toml") and not is_extended(os.path.join("data/funnels", f))]
with tempfile.TemporaryDirectory() as tmp:
    rng = random.Random(20210917)
    stores = []
    for seed in (3, 4):
        data, store = f"{tmp}/gen{seed}", f"{tmp}/store{seed}"
        subprocess.run([FUNNEL, "generate", "--out", data, "--persons", "1500", "--seed", str(seed),
                        "--format", "mixed"], check=True, stdout=subprocess.DEVNULL)
        # Seed 4 goes into 2 buckets of small row groups: many units of work per bucket file.
        layout = ["--buckets", "2", "--row-group-rows", "300"] if seed == 4 else []
        subprocess.run([FUNNEL, "ingest", "--store", store, *layout, data], check=True,
                       stdout=subprocess.DEVNULL)
        stores.append((f"generated seed {seed}", store))
    for k in range(2):
        exports, store = f"{tmp}/adv{k}.csv", f"{tmp}/adv-store{k}"
        adversarial_exports(exports, rng, 400)
        subprocess.run([FUNNEL, "ingest", "--store", store, exports], check=True, stdout=subprocess.DEVNULL)
        stores.append((f"adversarial {k}", store))
    # Before and across 1970, and at both ends of years 1..9999 (a separate stream of random
    # numbers, so the stores and funnels above stay as they were).
    exports, store = f"{tmp}/adv-extreme.csv", f"{tmp}/adv-store-extreme"
    adversarial_exports(exports, random.Random(19691231), 400, EXTREME_STARTS)
    subprocess.run([FUNNEL, "ingest", "--store", store, exports], check=True, stdout=subprocess.DEVNULL)
    stores.append(("adversarial before/across 1970, years 1 and 9999", store))

    import tomllib
    for label, store in stores:
        for path in EXAMPLES:
            base = tomllib.load(open(path, "rb"))
            for modes in MODES:
                f = dict(base, mode=modes)
                if isinstance(f.get("breakdown"), list):
                    continue
                compare(f"{label} / {os.path.basename(path)} / {modes or 'default'}", store, f, tmp)
        for i in range(RANDOM_FUNNELS):
            compare(f"{label} / random {i}", store, random_funnel(rng, i, VOCAB), tmp)
        # Hostile values and a hostile name: the generated SQL must keep them as data.
        hostile = {"name": "x'; DROP TABLE t; --", "window": "1d", "breakdown": "journey", "mode": ["strict_order"],
                   "steps": [{"name": "a", "event_type": "click",
                              "where": {"journey": ["external_link", "x') OR 1=1 --", "back\\slash'quote`tick"]}},
                             {"name": "b", "event_type": "purchase"}]}
        compare(f"{label} / hostile funnel", store, hostile, tmp)
        # Big breakdowns: `--top N` keeps N values and computes "(other)" exactly.
        by_item = {"name": "by item", "window": "1h", "breakdown": "item_id",
                   "steps": [{"name": "click", "event_type": "click"},
                             {"name": "view", "event_type": "view"},
                             {"name": "purchase", "event_type": "purchase"}]}
        tops = [(by_item, n) for n in (1, 5, 40)] if label.startswith("generated") else []
        tops += [(tomllib.load(open(p, "rb")), 2) for p in EXAMPLES if "breakdown" in tomllib.load(open(p, "rb"))]
        for f, n in tops:
            if isinstance(f.get("breakdown"), list):
                continue
            compare(f"{label} / {f['name']} / top {n}", store, f, tmp, ["--top", str(n)],
                    lambda ev, f=f, n=n: clickhouse_top(ev, f, n))
        # Small groups: under --min-persons K every count is null; the others, the total and
        # "(other)" are as without it.
        def suppressed(groups, k):
            return {key: (c if c[0] >= k else [None] * len(c)) for key, c in groups.items()}
        for f, n, k in [(by_item, 40, 12), (by_item, 5, 10**9)] if label.startswith("generated") else []:
            compare(f"{label} / {f['name']} / top {n} min-persons {k}", store, f, tmp,
                    ["--top", str(n), "--min-persons", str(k)],
                    lambda ev, f=f, n=n, k=k: suppressed(clickhouse_top(ev, f, n), k))
        if not label.startswith("generated"):
            continue
        # Options: trends by week, a step-1 time range, and a cutoff, on every example funnel.
        frm, to, cutoff = "2021-09-20T00:00:00Z", "2021-10-01T12:00:00Z", "2021-10-03T00:00:00Z"
        ms = lambda t: f"toDateTime64({sql_str(t.replace('T', ' ').rstrip('Z'))}, 3, 'UTC')"
        for path in EXAMPLES:
            base = tomllib.load(open(path, "rb"))
            for modes in ([], ["strict_order"]):
                f = dict(base, mode=modes)
                compare(f"{label} / {os.path.basename(path)} / trend {modes}", store, f, tmp,
                        ["--interval", "week"], lambda ev, f=f: clickhouse_trend(ev, f), "trend")
                compare(f"{label} / {os.path.basename(path)} / from-to {modes}", store, f, tmp,
                        ["--from", frm, "--to", to],
                        lambda ev, f=f: clickhouse_groups(ev, f, f"ts >= {ms(frm)} AND ts < {ms(to)}"))
                compare(f"{label} / {os.path.basename(path)} / cutoff {modes}", store, f, tmp,
                        ["--cutoff", cutoff],
                        lambda ev, f=f: clickhouse_groups(ev, f, None, f"ts <= {ms(cutoff)}"))

print(f"chdb: {passed} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
