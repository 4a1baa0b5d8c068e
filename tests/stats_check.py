"""Independent check of `funnel compare` statistics with scipy.

Recomputes every Wilson interval, Newcombe interval, z-test and Fisher p-value, and the Holm
adjustment, from the counts the comparison reports, and compares (to 1e-9).

Usage: python tests/stats_check.py PATH/TO/funnel
"""

import json
import math
import subprocess
import sys
import tempfile

from scipy import stats

FUNNEL = sys.argv[1]
checks, failures = 0, []


def close(a, b, what, tol=1e-9):
    global checks
    checks += 1
    if not (abs(a - b) <= tol or (math.isinf(a) and math.isinf(b))):
        failures.append(f"{what}: ours {a} scipy {b}")


def wilson(x, n):
    if n == 0:
        return (0.0, 1.0)
    ci = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
    return (ci.low, ci.high)


def check(comparison, label):
    by_group = {g["value"]: g for g in comparison["groups"]}
    base = by_group[comparison["baseline"]]
    for g in comparison["groups"]:
        for r in g["rates"]:
            lo, hi = wilson(r["persons"], g["clicks"])
            close(r["ci_low"], lo, f"{label} wilson low {g['value']} {r['step']}")
            close(r["ci_high"], hi, f"{label} wilson high {g['value']} {r['step']}")
    raw = []
    for d in comparison["differences"]:
        g = by_group[d["group"]]
        r = next(x for x in g["rates"] if x["step"] == d["step"])
        b = next(x for x in base["rates"] if x["step"] == d["step"])
        x1, n1, x2, n2 = r["persons"], g["clicks"], b["persons"], base["clicks"]
        p1, p2 = x1 / n1, x2 / n2
        (l1, u1), (l2, u2) = wilson(x1, n1), wilson(x2, n2)
        close(d["ci_low"], p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), f"{label} newcombe low {d['group']} {d['step']}")
        close(d["ci_high"], p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2), f"{label} newcombe high {d['group']} {d['step']}")
        small = min(x1, n1 - x1, x2, n2 - x2) < 5
        if small:
            assert d["test"] == "fisher", d
            p = stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]]).pvalue
        else:
            assert d["test"] == "z", d
            pooled = (x1 + x2) / (n1 + n2)
            se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
            p = 1.0 if se == 0 else 2 * stats.norm.sf(abs((p1 - p2) / se))
        close(d["p_value"], min(p, 1.0), f"{label} {d['test']} p {d['group']} {d['step']}", tol=1e-9 if not small else 1e-7)
        raw.append(d["p_value"])
    # Holm, written out.
    order = sorted(range(len(raw)), key=lambda i: (raw[i], i))
    running, adjusted = 0.0, [0.0] * len(raw)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(raw) - rank) * raw[i]))
        adjusted[i] = running
    for d, a in zip(comparison["differences"], adjusted):
        close(d["p_holm"], a, f"{label} holm {d['group']} {d['step']}")
        assert d["insufficient_sample"] == (by_group[d["group"]]["clicks"] < 30 or base["clicks"] < 30)


def compare(store, funnel, by, baseline, *extra):
    out = subprocess.run([FUNNEL, "compare", "--store", store, "--funnel", funnel, "--by", by,
                          "--baseline", baseline, "--format", "json", *extra], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


with tempfile.TemporaryDirectory() as tmp:
    for persons, seed in ((5000, 20210917), (120, 3)):
        data, store = f"{tmp}/d{seed}", f"{tmp}/s{seed}"
        subprocess.run([FUNNEL, "generate", "--out", data, "--persons", str(persons), "--seed", str(seed),
                        "--format", "mixed"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([FUNNEL, "ingest", "--store", store, data], check=True, stdout=subprocess.DEVNULL)
        for funnel in ("data/funnels/journeys_compared.toml", "data/funnels/all_journeys_by_journey.toml"):
            for attribution in ("step1", "first_touch", "last_touch"):
                check(compare(store, funnel, "journey", "wechat_native", "--attribution", attribution),
                      f"{persons} persons / {funnel} / {attribution}")
            check(compare(store, funnel, "chat_type", "official_account"), f"{persons} persons / {funnel} / chat_type")

for f in failures[:20]:
    print("FAIL", f)
print(f"stats: {checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
