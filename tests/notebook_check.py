"""Executes every notebook in notebooks/ end to end (nbclient), as CI does.

Usage: FUNNEL_BIN=target/debug/funnel python tests/notebook_check.py
"""

import pathlib
import sys

import nbformat
from nbclient import NotebookClient

root = pathlib.Path(__file__).resolve().parent.parent
passed, failed = 0, 0
for path in sorted((root / "notebooks").glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    if any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        print(f"FAIL {path.name}: committed with outputs")
        failed += 1
        continue
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root / "notebooks")}}).execute()
        print(f"ok   {path.name}")
        passed += 1
    except Exception as e:  # report and go on to the next notebook
        print(f"FAIL {path.name}: {e}")
        failed += 1
print(f"notebooks: {passed} passed, {failed} failed")
sys.exit(1 if failed or not passed else 0)
