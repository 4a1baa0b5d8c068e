"""Scale curve: events vs time and peak memory, for ingest and analyze, on this machine.

Usage: python bench/scale.py [--events 10000000,100000000] [--keep] [--cgroup DIR] [--out FILE]
For each size: `funnel generate` (CSV), `funnel ingest` (one run, with its phase times and the
identity's size from FUNNEL_TRACE), the same ingest again (all duplicates), then `funnel analyze` with one
funnel (`all_journeys_by_journey`) and with four (median of 3 after a warm-up); whole-process
wall time and peak RSS (GNU time).
Data goes to bench/work/scale-N and is deleted after each size unless --keep. Writes
bench/scale.json and prints a table. Uses the release build (cargo build --release).
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work")
FUNNELS = [os.path.join(ROOT, "data", "funnels", f) for f in
           ("all_journeys_by_journey.toml", "external_link_to_purchase.toml", "external_link_first_login.toml",
            "wechat_native_to_purchase.toml")]


CGROUP = None  # a cgroup v1 memory directory (--cgroup): commands run in it under a hard limit
CAPS = {"ingest": 2 << 30, "analyze": 1 << 30}


def timed(cmd, env=None):
    """(wall seconds, peak RSS MiB) of a whole process; with --cgroup, under the hard memory limit
    of CAPS for its subcommand (page cache included: cgroup v1 reclaims it at the limit, and a
    process that needs more is killed, which fails the run)."""
    if CGROUP and cmd[1] in CAPS:
        with open(os.path.join(CGROUP, "memory.limit_in_bytes"), "w") as f:
            f.write(str(CAPS[cmd[1]]))
        procs = os.path.join(CGROUP, "cgroup.procs")
        cmd = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *cmd]
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    s = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{cmd}: {out.stderr}")
    return s, int(out.stderr.strip().splitlines()[-1]) / 1024, out.stdout, out.stderr


def median_of(runs, cmd):
    """Median wall seconds of `runs` runs after a warm-up, and the largest peak RSS."""
    timed(cmd)
    results = [timed(cmd)[:2] for _ in range(runs)]
    seconds = sorted(r[0] for r in results)
    return seconds[len(seconds) // 2], max(r[1] for r in results)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", default="10000000,100000000")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "scale.json"))
    ap.add_argument("--cgroup", help="cgroup v1 memory directory to run ingest (2 GiB) and analyze "
                    "(1 GiB) under hard memory limits, e.g. /sys/fs/cgroup/memory/funnel-cap")
    args = ap.parse_args()
    global CGROUP
    if args.cgroup:
        os.makedirs(args.cgroup, exist_ok=True)
        CGROUP = args.cgroup
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "funnel-cli"], cwd=ROOT, check=True)
    funnel = os.path.join(ROOT, "target", "release", "funnel")
    rows = []
    for n in (int(x) for x in args.events.split(",")):
        d = os.path.join(WORK, f"scale-{n}")
        shutil.rmtree(d, ignore_errors=True)
        data, store = os.path.join(d, "data"), os.path.join(d, "store")
        persons = max(1, n * 10 // 56)
        gen_s, *_ = timed([funnel, "generate", "--out", data, "--persons", str(persons), "--seed", "1",
                             "--format", "csv", "--clean"])
        events = json.load(open(os.path.join(data, "truth.json")))["expected"]["rows_stored"]
        # FUNNEL_TRACE: the end time of each phase, and the identity's size, on stderr.
        ing_s, ing_rss, _, trace = timed([funnel, "ingest", "--store", store, "--format", "json", data],
                                         env={"FUNNEL_TRACE": "1"})
        phases = [line.strip() for line in trace.splitlines() if " s  " in line]
        ident = re.search(r"identity: (\d+) linked ids, ([\d.]+) MiB", trace)
        re_s, re_rss, *_ = timed([funnel, "ingest", "--store", store, "--format", "json", data])
        buckets = json.load(open(os.path.join(store, "current", "manifest.json")))["buckets"]
        one_s, one_rss = median_of(3, [funnel, "analyze", "--store", store, "--funnel", FUNNELS[0], "--format", "json"])
        four_s, four_rss = median_of(3, [funnel, "analyze", "--store", store, "--format", "json",
                                         *[a for f in FUNNELS for a in ("--funnel", f)]])
        row = {"events": events, "persons": persons, "buckets": buckets, "generate_seconds": gen_s,
               "ingest_seconds": ing_s, "ingest_peak_rss_mib": ing_rss, "ingest_phases": phases,
               "identity_ids": int(ident[1]) if ident else None,
               "identity_mib": float(ident[2]) if ident else None,
               "reingest_seconds": re_s, "reingest_peak_rss_mib": re_rss,
               "analyze_seconds": one_s, "analyze_peak_rss_mib": one_rss,
               "analyze4_seconds": four_s, "analyze4_peak_rss_mib": four_rss}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    caps = {k: v >> 20 for k, v in CAPS.items()} if CGROUP else None
    json.dump({"machine": platform.platform(), "cores": os.cpu_count(), "rows": rows,
               "memory_limits_mib": caps},
              open(args.out, "w"), indent=1, sort_keys=True)
    print(f"{'events':>13} {'ingest s':>9} {'MiB':>6} {'Mev/s':>6} {'identity MiB':>12} {'re-ingest s':>11} "
          f"{'analyze s':>10} {'MiB':>6} {'4 funnels s':>12} {'MiB':>6}")
    for r in rows:
        print(f"{r['events']:>13,} {r['ingest_seconds']:9.1f} {r['ingest_peak_rss_mib']:6.0f} "
              f"{r['events'] / r['ingest_seconds'] / 1e6:6.2f} {r['identity_mib'] or 0:12.1f} "
              f"{r['reingest_seconds']:11.1f} {r['analyze_seconds']:10.2f} "
              f"{r['analyze_peak_rss_mib']:6.0f} {r['analyze4_seconds']:12.2f} {r['analyze4_peak_rss_mib']:6.0f}")


if __name__ == "__main__":
    main()
