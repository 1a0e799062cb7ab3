"""nbval skips cells with no saved output, so a notebook saved unexecuted would "pass": refuse that here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_tutorials():
    assert NOTEBOOKS, "notebooks/ has no tutorials"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_ran_once_in_order_without_error(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in cells if "".join(c["source"]).strip()]
    assert None not in counts, f"{path.name}: a code cell was saved without running"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: not run top to bottom in one kernel: {counts}"
    for cell in cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{path.name}: saved with an error: {output.get('evalue')}"
            assert "Traceback" not in "".join(output.get("text", "")), f"{path.name}: a traceback was printed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_start_with_prose_and_load_the_extension(path):
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    assert any("%load_ext kanibook" in "".join(c["source"]) for c in cells if c["cell_type"] == "code")


_BAR_BELOW_100 = re.compile(r"(?<![\d.])(\d{1,2}(?:\.\d+)?)%\|")  # tqdm's text form: "  0%|          | 0/272"


def stuck_bars(text: str) -> list[str]:
    """The progress bars in ``text`` that read below 100% (tqdm's text form, which a notebook saves as it was when
    the bar was shown)."""
    return [m.group(0) for m in _BAR_BELOW_100.finditer(text)]


def test_the_stuck_bar_check_finds_tqdm_text_below_100_percent():
    assert stuck_bars("Loading weights:   0%|          | 0/272 [00:00<?, ?it/s]") == ["0%|"]
    assert stuck_bars("quantization lab:  57%|#####     | 12/21") == ["57%|"]
    assert stuck_bars("Loading weights: 100%|##########| 272/272") == []
    assert stuck_bars("Loading weights: 272/272, done in 0.4 s; same top token 97.0% | nf4 77.9%") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_saved_output_holds_a_progress_bar_below_100_percent(path):
    """A bar is for live work: in a saved tutorial "0%|" (the widget's text when it was shown) is noise and untrue."""
    found = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
            found += [f"cell {i}: {bar}" for bar in stuck_bars(text)]
    assert not found, f"{path.name}: progress bars saved below 100%: {found[:5]}"
