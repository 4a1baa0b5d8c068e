"""Funnels and stores shared by the differential checks (chdb_check.py, cluster_check.py)."""

import csv
import datetime
import json

MODES = [
    [],
    ["strict_order"],
    ["strict_deduplication"],
    ["strict_increase"],
    ["strict_once"],
    ["strict_order", "allow_reentry"],
    ["strict_order", "strict_increase"],
    ["strict_once", "strict_increase", "strict_deduplication"],
]

VOCAB = {
    "event_type": ["click", "warning", "view", "login", "purchase", "app_open"],
    "journey": ["external_link", "wechat_native", "mini_program", "tao_code"],
    "chat_type": ["one_to_one", "group", "official_account"],
    "warning_action": ["shown", "continue", "return", "report"],
    "campaign": ["autumn_sale", "new_arrivals", "flash_deal", "member_day", "c1", "c2"],
}


EXTENSIONS = {"optional", "within", "exclusions", "hold_constant", "count", "order", "attribution"}


def is_extended(path):
    import tomllib
    f = tomllib.load(open(path, "rb"))
    return bool(EXTENSIONS & (set(f) | {k for s in f["steps"] for k in s}))


def toml(funnel):
    def value(v):
        return "[" + ", ".join(json.dumps(x) for x in v) + "]" if isinstance(v, list) else json.dumps(v)
    lines = [f"name = {json.dumps(funnel['name'])}", f"window = {json.dumps(funnel['window'])}"]
    if funnel.get("breakdown"):
        lines.append(f"breakdown = {json.dumps(funnel['breakdown'])}")
    if funnel.get("mode"):
        lines.append(f"mode = {value(funnel['mode'])}")
    for s in funnel["steps"]:
        lines += ["", "[[steps]]", f"name = {json.dumps(s['name'])}", f"event_type = {json.dumps(s['event_type'])}"]
        if s.get("where"):
            lines.append("where = { " + ", ".join(f"{k} = {value(v)}" for k, v in s["where"].items()) + " }")
    return "\n".join(lines) + "\n"


def random_funnel(rng, i, vocabulary):
    steps = []
    for k in range(rng.randint(1, 5)):
        et = rng.choice(vocabulary["event_type"])
        step = {"name": f"s{k}", "event_type": et}
        if rng.random() < 0.5:
            col = rng.choice([c for c in vocabulary if c != "event_type"])
            vals = rng.sample(vocabulary[col], rng.randint(1, min(2, len(vocabulary[col]))))
            step["where"] = {col: vals if len(vals) > 1 or rng.random() < 0.5 else vals[0]}
        steps.append(step)
    f = {"name": f"random {i}", "window": rng.choice(["0s", "1m", "3m", "10m", "1h", "1d", "2w"]), "steps": steps}
    if rng.random() < 0.4:
        f["breakdown"] = rng.choice(["journey", "chat_type", "campaign"])
    f["mode"] = rng.choice(MODES)
    return f


EPOCH = datetime.datetime(1970, 1, 1)

# Chains before 1970, across its first instant, and at both ends of the years a timestamp may
# name (0001..9999): windowFunnel reads unsigned timestamps, so these catch a signed-to-unsigned
# wrap. (Naive datetimes in UTC.)
PRE_1970_STARTS = [datetime.datetime(1960, 5, 1, 12), datetime.datetime(1969, 12, 31, 23, 30),
                   datetime.datetime(1969, 12, 31, 23, 59)]
EXTREME_STARTS = PRE_1970_STARTS + [datetime.datetime(1, 1, 1), datetime.datetime(9999, 12, 31, 22, 58)]


def adversarial_exports(path, rng, persons, starts=None):
    """Few event kinds, minute-resolution times: dense ties, equal timestamps, window edges.

    With `starts` (a list of UTC datetimes), each person's events fall in the 62 minutes after
    one of them, written half as RFC 3339 and half as epoch milliseconds (negative before 1970).
    """
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "user_id", "event_type", "ts", "journey", "chat_type", "warning_action",
                    "account_id", "order_id", "amount", "campaign"])
        n = 0
        for p in range(persons):
            start = rng.choice(starts) if starts else None
            for _ in range(rng.randint(0, 14)):
                n += 1
                et = rng.choice(["click", "click", "warning", "view", "login", "purchase"])
                minute = rng.choice([0, 0, 1, 2, 3, 3, 4, 10, 11, 60, 61])
                if start is None:
                    ts = (f"2021-09-17T10:{minute % 60:02d}:00Z" if minute < 60
                          else f"2021-09-17T11:{minute - 60:02d}:00Z")
                else:
                    t = start + datetime.timedelta(minutes=minute)
                    ts = (t.isoformat() + "Z" if rng.random() < 0.5
                          else str((t - EPOCH) // datetime.timedelta(milliseconds=1)))
                w.writerow([f"e{n}", f"u{p}", et, ts,
                            rng.choice(["external_link", "wechat_native", ""]),
                            rng.choice(["one_to_one", "group"]),
                            rng.choice(["shown", "continue", "return"]) if et == "warning" else "",
                            f"a{p}" if et == "login" else "", f"o{n}" if et == "purchase" else "",
                            "9.90" if et == "purchase" else "", rng.choice(["c1", "c2", ""])])


