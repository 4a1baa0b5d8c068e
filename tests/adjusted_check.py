"""Independent check of `funnel compare --adjust-for` and `--split-at/--control` (CONTRACT §8).

1. The per-stratum tables: recomputed from `funnel analyze` with a two-column breakdown
   (compared column, stratum column), and the before/after sides from `analyze --to T` and
   `--from T` (step-1 attribution: the funnel whose step 1 also requires the value and the side).
2. Every pooled figure from those tables: the odds ratio, its interval and the CMH and
   Breslow-Day (Tarone) statistics with statsmodels' StratifiedTable, p-values with scipy; the
   Mantel-Haenszel risk difference and Sato's variance written out here; the before/after
   Newcombe intervals and tests and the differences-in-differences with scipy; Holm over the
   whole family. Relative tolerance 1e-6.
3. What the generator plants is found: a Simpson's-paradox mix (mini programs used mostly in
   group chats, which convert worse on every journey, WeChat-native pages mostly in one-to-one
   chats; within every surface mini programs are 5 points better) gives a raw difference of the
   other sign and an adjusted one whose interval holds +5 points; a change of +15 points in
   one-to-one chats from 2021-09-27 is recovered by the difference-in-differences against
   group chats within its interval, while a surface without a change has an interval holding 0.

Usage: python tests/adjusted_check.py PATH/TO/funnel
"""

import json
import math
import subprocess
import sys
import tempfile

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import StratifiedTable

FUNNEL = sys.argv[1]
Z = stats.norm.ppf(0.975)
checks, failures = 0, []


def close(ours, ref, what, rel=1e-6, abs_=1e-12):
    global checks
    checks += 1
    if ours is None or ref is None or not math.isfinite(ref):
        if not (ours is None and (ref is None or not math.isfinite(ref))):
            failures.append(f"{what}: ours {ours} reference {ref}")
        return
    if not abs(ours - ref) <= max(rel * abs(ref), abs_):
        failures.append(f"{what}: ours {ours} reference {ref}")


def expect(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)


def run(*args):
    out = subprocess.run([FUNNEL, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"funnel {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def funnel_with_breakdown(path, columns, tmp, name):
    """The funnel file with `breakdown = columns` (any breakdown line of its own removed)."""
    lines = [l for l in open(path).read().splitlines() if not l.startswith("breakdown")]
    first_table = next(i for i, l in enumerate(lines) if l.startswith("["))
    lines.insert(first_table, "breakdown = [" + ", ".join(json.dumps(c) for c in columns) + "]")
    out = f"{tmp}/{name}.toml"
    open(out, "w").write("\n".join(lines) + "\n")
    return out


def groups_by_key(report):
    return {tuple(sorted(g["key"].items())): g["steps"] for g in report["groups"][1:]}


def step_index(report, name):
    return next(i for i, s in enumerate(report["groups"][0]["steps"]) if s["name"] == name)


# ---- the pooled figures from the tables --------------------------------------------------

def mh_reference(strata, one, other):
    """Pooled figures over strata, from statsmodels (OR, CMH, BD) and written-out Sato."""
    t = [(s[one]["reached"], s[one]["persons"], s[other]["reached"], s[other]["persons"]) for s in strata]
    out = {}
    # Mantel-Haenszel risk difference, Sato (1989) variance.
    num = sum((a * n0 - c * n1) / (n1 + n0) for a, n1, c, n0 in t)
    w = sum(n1 * n0 / (n1 + n0) for a, n1, c, n0 in t)
    p = sum((n1 ** 2 * c - n0 ** 2 * a + n1 * n0 * (n0 - n1) / 2) / (n1 + n0) ** 2 for a, n1, c, n0 in t)
    q = sum((a * (n0 - c) + c * (n1 - a)) / (2 * (n1 + n0)) for a, n1, c, n0 in t)
    rd = num / w
    se = math.sqrt(max(rd * p + q, 0.0)) / w
    out["rd"], out["rd_ci"] = rd, (rd - Z * se, rd + Z * se)
    tables = [np.array([[a, n1 - a], [c, n0 - c]], dtype=float) for a, n1, c, n0 in t]
    st = StratifiedTable(tables)
    r = sum(a * (n0 - c) / (n1 + n0) for a, n1, c, n0 in t)
    s_ = sum((n1 - a) * c / (n1 + n0) for a, n1, c, n0 in t)
    if r > 0 and s_ > 0:
        out["or"] = float(st.oddsratio_pooled)
        out["or_ci"] = tuple(float(x) for x in st.oddsratio_pooled_confint())
    else:
        out["or"], out["or_ci"] = None, None
    m1 = [a + c for a, n1, c, n0 in t]
    if sum(n1 * n0 * m * (n1 + n0 - m) for (a, n1, c, n0), m in zip(t, m1)) > 0:
        out["cmh_p"] = float(stats.chi2.sf(st.test_null_odds().statistic, 1))
    else:
        out["cmh_p"] = 1.0
    informative = [tb for tb, (a, n1, c, n0), m in zip(tables, t, m1) if 0 < m < n1 + n0]
    if out["or"] is not None and len(informative) >= 2:
        bd_table = StratifiedTable(informative)
        if bd_table.oddsratio_pooled != 1.0:
            bd = bd_table.test_equal_odds(adjust=True).statistic
        else:
            # statsmodels divides by 1 - OR; with OR = 1 the expected cell is n1 m1 / N.
            a = np.array([tb[0, 0] for tb in informative])
            n1 = np.array([tb[0].sum() for tb in informative])
            m1 = np.array([tb[:, 0].sum() for tb in informative])
            n = np.array([tb.sum() for tb in informative])
            e = n1 * m1 / n
            v = 1 / (1 / e + 1 / (m1 - e) + 1 / (n1 - e) + 1 / (n - n1 - m1 + e))
            bd = np.sum((a - e) ** 2 / v) - (a.sum() - e.sum()) ** 2 / v.sum()
        out["hom_p"] = float(stats.chi2.sf(bd, len(informative) - 1))
    else:
        out["hom_p"] = None
    return out


def check_pooled(a, one, other, what):
    ref = mh_reference(a["strata"], one, other) if a["strata"] else None
    if ref is None:
        expect(a["mh_risk_difference"] is None and a["cmh_p"] is None, f"{what}: no strata, no figures")
        return
    close(a["mh_risk_difference"], ref["rd"], f"{what} MH risk difference", abs_=1e-12)
    close(a["mh_risk_difference_ci"][0], ref["rd_ci"][0], f"{what} MH RD ci low", abs_=1e-12)
    close(a["mh_risk_difference_ci"][1], ref["rd_ci"][1], f"{what} MH RD ci high", abs_=1e-12)
    close(a["mh_odds_ratio"], ref["or"], f"{what} MH odds ratio")
    if ref["or_ci"] is not None:
        close(a["mh_odds_ratio_ci"][0], ref["or_ci"][0], f"{what} OR ci low")
        close(a["mh_odds_ratio_ci"][1], ref["or_ci"][1], f"{what} OR ci high")
    close(a["cmh_p"], ref["cmh_p"], f"{what} CMH p", abs_=1e-300)
    close(a["homogeneity_p"], ref["hom_p"], f"{what} Breslow-Day-Tarone p", abs_=1e-300)
    for s in a["strata"]:
        g, b = s[one], s[other]
        close(s["risk_difference"], g["reached"] / g["persons"] - b["reached"] / b["persons"], f"{what} stratum rd")


# ---- two-sided tests of two proportions, as stats_check.py ---------------------------------

def wilson(x, n):
    ci = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def two_proportions(x1, n1, x2, n2):
    p1, p2 = x1 / n1, x2 / n2
    (l1, u1), (l2, u2) = wilson(x1, n1), wilson(x2, n2)
    lo = max(-1.0, p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2))
    hi = min(1.0, p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
    if min(x1, n1 - x1, x2, n2 - x2) < 5:
        return "fisher", stats.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]]).pvalue, (lo, hi)
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return "z", (1.0 if se == 0 else min(1.0, 2 * stats.norm.sf(abs((p1 - p2) / se)))), (lo, hi)


def holm(p):
    order = sorted(range(len(p)), key=lambda i: (p[i], i))
    running, out = 0.0, [0.0] * len(p)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


# ---- one comparison ------------------------------------------------------------------------

def check(store, funnel, by, baseline, adjust, tmp, label, split=None, control=None):
    args = ["compare", "--store", store, "--funnel", funnel, "--by", by, "--baseline", baseline,
            "--format", "json"]
    if adjust:
        args += ["--adjust-for", ",".join(adjust)]
    if split:
        args += ["--split-at", split]
    if control:
        args += ["--control", control]
    c = json.loads(run(*args))
    # 1. Strata tables from a two-column analyze breakdown.
    if adjust:
        f2 = funnel_with_breakdown(funnel, [by, *adjust], tmp, "strata")
        strata_report = json.loads(run("analyze", "--store", store, "--funnel", f2, "--format", "json"))
        cells = groups_by_key(strata_report)
        for d in c["differences"]:
            a = d["adjusted"]
            k = step_index(strata_report, d["step"])
            seen = set()
            for s in a["strata"]:
                for side, value in (("group", d["group"]), ("baseline", baseline)):
                    key = tuple(sorted({by: value, **s["value"]}.items()))
                    st = cells[key]
                    expect(s[side] == {"persons": st[0]["persons"], "reached": st[k]["persons"]},
                           f"{label}: stratum {s['value']} {side} {value} {d['step']}: {s[side]} vs analyze")
                seen.add(tuple(sorted(s["value"].items())))
            # Every stratum either side has is pooled or listed as left out.
            for key, st in cells.items():
                kd = dict(key)
                if kd[by] in (d["group"], baseline) and st[0]["persons"] > 0:
                    v = tuple(sorted((col, kd[col]) for col in adjust))
                    expect(v in seen or dict(v) in a["strata_left_out"], f"{label}: stratum {v} lost")
            check_pooled(a, "group", "baseline", f"{label} {d['group']} {d['step']}")
    # 2. Before/after from --to / --from.
    family = []
    for d in c["differences"]:
        family.append(d["p_value"])
        if d.get("adjusted") and d["adjusted"]["cmh_p"] is not None:
            family.append(d["adjusted"]["cmh_p"])
    if split:
        f1 = funnel_with_breakdown(funnel, [by], tmp, "plain")
        halves = {}
        for side, flag in (("before", "--to"), ("after", "--from")):
            r = json.loads(run("analyze", "--store", store, "--funnel", f1, "--format", "json", flag, split))
            halves[side] = (r, groups_by_key(r))
        for b in c["before_after"]:
            for side in ("before", "after"):
                r, cells = halves[side]
                st = cells[((by, b["group"]),)]
                k = step_index(r, b["step"])
                expect(b[side] == {"persons": st[0]["persons"], "reached": st[k]["persons"]},
                       f"{label}: {side} of {b['group']} {b['step']}: {b[side]} vs analyze {flag}")
            x1, n1 = b["after"]["reached"], b["after"]["persons"]
            x0, n0 = b["before"]["reached"], b["before"]["persons"]
            test, p, (lo, hi) = two_proportions(x1, n1, x0, n0)
            expect(b["test"] == test, f"{label}: test {b['test']} vs {test}")
            close(b["difference"], x1 / n1 - x0 / n0, f"{label} before/after difference")
            close(b["ci"][0], lo, f"{label} before/after ci low", abs_=1e-12)
            close(b["ci"][1], hi, f"{label} before/after ci high", abs_=1e-12)
            close(b["p"], p, f"{label} before/after p", rel=1e-6, abs_=1e-300)
            family.append(b["p"])
            if b.get("adjusted"):
                check_pooled(b["adjusted"], "after", "before", f"{label} before/after {b['group']} {b['step']}")
                if b["adjusted"]["cmh_p"] is not None:
                    family.append(b["adjusted"]["cmh_p"])
        ba = {(b["group"], b["step"]): b for b in c["before_after"]}
        for d in c.get("did") or []:
            g, k = ba[(d["group"], d["step"])], ba[(control, d["step"])]
            rate = lambda s: s["reached"] / s["persons"]
            var = lambda s: rate(s) * (1 - rate(s)) / s["persons"]
            est = (rate(g["after"]) - rate(g["before"])) - (rate(k["after"]) - rate(k["before"]))
            se = math.sqrt(var(g["after"]) + var(g["before"]) + var(k["after"]) + var(k["before"]))
            close(d["estimate"], est, f"{label} did", abs_=1e-12)
            close(d["ci"][0], est - Z * se, f"{label} did ci low", abs_=1e-12)
            close(d["ci"][1], est + Z * se, f"{label} did ci high", abs_=1e-12)
            close(d["p"], 1.0 if se == 0 else min(1.0, 2 * stats.norm.sf(abs(est / se))), f"{label} did p", abs_=1e-300)
            family.append(d["p"])
            if d.get("adjusted") and d["adjusted"]["p"] is not None:
                family.append(d["adjusted"]["p"])
    # 3. Holm over the family, in the documented order.
    adjusted = iter(holm(family))
    for d in c["differences"]:
        close(d["p_holm"], next(adjusted), f"{label} holm")
        if d.get("adjusted") and d["adjusted"]["cmh_p"] is not None:
            close(d["adjusted"]["cmh_p_holm"], next(adjusted), f"{label} holm cmh")
    for b in c.get("before_after") or []:
        close(b["p_holm"], next(adjusted), f"{label} holm before/after")
        if b.get("adjusted") and b["adjusted"]["cmh_p"] is not None:
            close(b["adjusted"]["cmh_p_holm"], next(adjusted), f"{label} holm before/after cmh")
    for d in c.get("did") or []:
        close(d["p_holm"], next(adjusted), f"{label} holm did")
        if d.get("adjusted") and d["adjusted"]["p"] is not None:
            close(d["adjusted"]["p_holm"], next(adjusted), f"{label} holm did adjusted")
    return c


PARADOX = """name = "first page after the click, per attempt"
window = "30s"
count = "attempts"
hold_constant = "journey"

[[steps]]
name = "click"
event_type = "click"

[[steps]]
name = "view"
event_type = "view"
"""

CHANGE = """name = "warning page passed, per attempt"
window = "30s"
count = "attempts"

[[steps]]
name = "click"
event_type = "click"
where = { journey = "external_link" }

[[steps]]
name = "continue"
event_type = "warning"
where = { warning_action = "continue" }
"""

with tempfile.TemporaryDirectory() as tmp:
    # The sample, as the README shows it.
    sample = f"{tmp}/sample"
    run("ingest", "--store", sample, "data/sample")
    check(sample, "data/funnels/journeys_compared.toml", "journey", "wechat_native", ["chat_type"], tmp, "sample journeys")
    check(sample, "data/funnels/external_link_to_purchase.toml", "chat_type", "group", ["campaign"], tmp,
          "sample split", split="2021-09-17", control="group")
    check(sample, "data/funnels/journeys_compared.toml", "journey", "wechat_native", ["chat_type", "campaign"], tmp,
          "sample two strata columns", split="2021-09-20")
    # A small faulty store: strata with few persons, Fisher's tests, strata left out.
    small = f"{tmp}/small"
    run("generate", "--out", f"{tmp}/small-data", "--persons", "150", "--seed", "3", "--format", "mixed")
    run("ingest", "--store", small, f"{tmp}/small-data")
    check(small, "data/funnels/journeys_compared.toml", "journey", "wechat_native", ["chat_type", "campaign"], tmp,
          "small", split="2021-09-27", control="wechat_native")

    # Planted Simpson's paradox.
    paradox = f"{tmp}/paradox"
    open(f"{tmp}/paradox.toml", "w").write(PARADOX)
    run("generate", "--out", f"{tmp}/paradox-data", "--persons", "20000", "--seed", "11", "--clean",
        "--chat-mix", "mini_program=0.1:0.8:0.1", "--chat-mix", "wechat_native=0.8:0.1:0.1",
        "--chat-effect", "group=-0.4")
    run("ingest", "--store", paradox, f"{tmp}/paradox-data")
    c = check(paradox, f"{tmp}/paradox.toml", "journey", "wechat_native", ["chat_type"], tmp, "paradox")
    d = next(d for d in c["differences"] if d["group"] == "mini_program" and d["step"] == "view")
    a = d["adjusted"]
    print(f"paradox: raw {d['difference']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], "
          f"adjusted {a['mh_risk_difference']:+.4f} {a['mh_risk_difference_ci']} (planted +0.05 on every surface)")
    expect(d["ci_high"] < 0, f"paradox: the raw difference is not negative: {d['difference']}")
    lo, hi = a["mh_risk_difference_ci"]
    expect(lo <= 0.05 <= hi and lo > 0, f"paradox: adjusted interval {lo, hi} does not hold +0.05 above 0")

    # Planted dated change in one-to-one chats.
    change = f"{tmp}/change"
    open(f"{tmp}/change.toml", "w").write(CHANGE)
    run("generate", "--out", f"{tmp}/change-data", "--persons", "20000", "--seed", "12", "--clean",
        "--chat-effect", "one_to_one=0.15@2021-09-27")
    run("ingest", "--store", change, f"{tmp}/change-data")
    c = check(change, f"{tmp}/change.toml", "chat_type", "group", ["campaign"], tmp, "change",
              split="2021-09-27", control="group")
    did = {d["group"]: d for d in c["did"]}
    for g, planted in (("one_to_one", 0.15), ("official_account", 0.0)):
        d = did[g]
        print(f"change: {g} DiD {d['estimate']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] "
              f"adjusted {d['adjusted']['estimate']:+.4f} (planted {planted:+.2f})")
        expect(d["ci"][0] <= planted <= d["ci"][1], f"change: {g} DiD interval {d['ci']} misses {planted}")
        lo, hi = d["adjusted"]["ci"]
        expect(lo <= planted <= hi, f"change: {g} adjusted DiD interval {lo, hi} misses {planted}")
    g = next(b for b in c["before_after"] if b["group"] == "group")
    print(f"change: group chats alone moved {g['difference']:+.4f} (the scenario's common trend), "
          f"which the DiD takes out")

for f in failures[:20]:
    print("FAIL", f)
print(f"adjusted: {checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
