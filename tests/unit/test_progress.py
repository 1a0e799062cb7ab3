"""kanibook's progress bar and transformers' bars routed through it: live in a kernel, and what a saved notebook keeps
is the bar's final state ("272/272, done in 0.4 s"), never a "0%|" frozen at the moment the bar was shown."""

from __future__ import annotations

import re

import pytest

from kanibook._progress import ProgressBar, _TqdmLike

_STUCK = re.compile(r"\b(\d{1,2})%\|")  # tqdm's text form below 100%


def test_the_text_form_says_how_the_work_ended_without_a_percentage():
    bar = ProgressBar(3, "lab", unit="step", enabled=False)
    bar.set_description("nf4: load")
    bar.update()
    assert bar.text().startswith("lab: nf4: load, 1/3 steps (")
    assert re.fullmatch(r"lab: stopped after 1/3 steps \(\d+\.\d s\)", bar.text(final=True))
    bar.update(5)  # never past the total
    assert bar.n == 3 and re.fullmatch(r"lab: 3/3 steps, done in \d+\.\d s", bar.text(final=True))
    assert "%" not in bar.text() + bar.text(final=True)
    passes = ProgressBar(2, "explain_reply", unit="pass", enabled=False)
    passes.update(2)
    assert "2/2 passes, done" in passes.text(final=True)  # not "passs"


def test_the_tqdm_stand_in_iterates_everything_and_counts_it():
    items = list(_TqdmLike(range(7), desc="Loading weights", unit="it"))
    assert items == list(range(7))
    bar = _TqdmLike(iter(range(3)), desc="x")  # no len(): no total, still iterates
    assert list(bar) == [0, 1, 2] and bar.total == 0
    with _TqdmLike(total=4, desc="manual") as manual:
        manual.update(2)
        manual.set_description("half")
        assert manual.n == 2


def test_a_saved_notebook_keeps_each_bars_final_state(tmp_path):
    """In a real kernel: transformers' own bar (after %load_ext kanibook) and kanibook's, saved by nbclient."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "%load_ext kanibook",
        "from transformers.utils import logging\nfor _ in logging.tqdm(range(40), desc='Loading weights'):\n"
        "    pass\nlist(logging.tqdm(range(3), desc='hidden', disable=True))",
        "from kanibook._progress import progress_bar\nwith progress_bar(4, 'quantization lab', unit='step') as bar:\n"
        "    for i in range(4):\n        bar.set_description(f'step {i}')\n        bar.update()",
    )]
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                            ).execute()  # fmt: skip
    texts = []
    for cell in nb.cells:
        for out in cell.outputs:
            texts.append("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", "")))
    saved = "\n".join(texts)
    assert not _STUCK.search(saved), saved
    assert re.search(r"Loading weights: 40/40, done in \d+\.\d s", saved), saved
    assert re.search(r"quantization lab: 4/4 steps, done in \d+\.\d s", saved), saved
    assert "hidden" not in saved  # a disabled bar shows nothing
