"""The nbval shim (tests/_nbval_live_displays.py, installed by the repository's conftest.py) really compares the
output of a display that was updated in place (how ``%%chat`` streams) with what a notebook saves: the final content.

A tiny notebook is executed the way Jupyter saves notebooks (nbclient applies ``update_display_data``), then
checked by ``pytest --nbval`` in a subprocess: with the shim it passes, and it fails when the saved output is
changed; without the shim (``--noconftest``) nbval compares the first, stale display and fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Two handles updated in turn, with a print in between: the saved outputs are the final contents, in order.
CELL = """\
from IPython.display import display
a = display("a: start", display_id=True)
b = display("b: start", display_id=True)
for i in range(3):
    a.update(f"a: step {i}")
    b.update(f"b: step {i}")
print("printed after the displays")
a.update("a: final")
b.update("b: final")
"""

# A pytest run isolated from the repository's configuration, with the repository's conftest.py as its conftest.
CONFTEST = f"""\
import importlib.util

_spec = importlib.util.spec_from_file_location("kanibook_repo_conftest", {str(REPO / "conftest.py")!r})
_repo_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_repo_conftest)
pytest_configure = _repo_conftest.pytest_configure
"""


def _executed_notebook(path: Path) -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(CELL))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    nbformat.write(nb, str(path))
    return json.loads(path.read_text())


def _run_nbval(tmp_path: Path, *args: str) -> dict[str, str]:
    """Run pytest --nbval in tmp_path; returns {notebook file name: "passed" / "failed"} from the junit report."""
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path),
         "-p", "no:cacheprovider", "--nbval", "--nbval-current-env", "-q", f"--junitxml={report}", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    import xml.etree.ElementTree as ET

    results = {}
    for case in ET.parse(report).iter("testcase"):
        failed = any(child.tag in ("failure", "error") for child in case)
        results[Path(case.get("file") or case.get("classname")).name] = "failed" if failed else "passed"
    assert results, proc.stdout + proc.stderr
    return results


@pytest.mark.slow
def test_nbval_compares_the_final_content_of_updated_displays(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(CONFTEST)
    saved = _executed_notebook(tmp_path / "as_saved.ipynb")
    outputs = saved["cells"][0]["outputs"]
    # what Jupyter saved: the final content of each display, in order, and the print between them
    assert ["".join(o.get("data", {}).get("text/plain") or o.get("text")) for o in outputs] == [
        "'a: final'",
        "'b: final'",
        "printed after the displays\n",
    ]
    changed = json.loads(json.dumps(saved))
    changed["cells"][0]["outputs"][1]["data"]["text/plain"] = ["'b: step 2'"]
    (tmp_path / "changed.ipynb").write_text(json.dumps(changed))

    results = _run_nbval(tmp_path, "as_saved.ipynb", "changed.ipynb")
    assert results == {"as_saved.ipynb": "passed", "changed.ipynb": "failed"}

    # without the shim, nbval keeps the first display ("a: start") and the same saved notebook fails
    assert _run_nbval(tmp_path, "--noconftest", "as_saved.ipynb") == {"as_saved.ipynb": "failed"}
