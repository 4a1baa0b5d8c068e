"""Renders the demo's HTML report in headless Chromium and fails on a blank page, a broken SVG
or a console error. The screenshot is kept in out/ci/ for people to look at.

Usage: python tests/browser_check.py PATH/TO/funnel
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

from PIL import Image

FUNNEL = sys.argv[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
checks, failures = 0, []


def check(name, ok, detail=""):
    global checks
    checks += 1
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(name)


with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([FUNNEL, "demo", "--out", tmp], check=True, stdout=subprocess.DEVNULL)
    report = os.path.join(tmp, "report.html")
    html = open(report, encoding="utf-8").read()
    url = "file://" + os.path.abspath(report)

    # Every chart is well-formed SVG with content, and nothing is fetched from elsewhere.
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    broken = []
    for s in svgs:
        try:
            root = ET.fromstring(s)
            if len(root) == 0:
                broken.append("empty chart")
        except ET.ParseError as e:
            broken.append(str(e))
    check(f"{len(svgs)} SVG charts are well-formed and not empty", svgs and not broken, "; ".join(broken[:3]))
    check("self-contained (no http references)", not re.search(r"(src|href)=\"https?:", html))

    profile = os.path.join(tmp, "profile")
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    console = [l for l in out.stderr.splitlines() if "CONSOLE" in l or "Uncaught" in l]
    check("no console errors", not console, "\n".join(console[:5]))
    check("Chromium parsed every chart into its DOM", out.stdout.count("<svg") == len(svgs), f"{out.stdout.count('<svg')} of {len(svgs)}")

    os.makedirs("out/ci", exist_ok=True)
    shot = "out/ci/report.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--window-size=1100,2400",
                    f"--screenshot={os.path.abspath(shot)}", url], capture_output=True, timeout=120, check=True)
    img = Image.open(shot).convert("RGB")
    raw = img.resize((110, 240)).tobytes()
    pixels = [tuple(raw[i:i + 3]) for i in range(0, len(raw), 3)]
    colours = len(set(pixels))
    ink = sum(1 for p in pixels if sum(p) < 600) / len(pixels)
    check("the page is not blank", colours > 20 and ink > 0.02, f"{colours} colours, {ink:.3f} ink")
    print(f"screenshot: {shot}")

print(f"browser: {checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
