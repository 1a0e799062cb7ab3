"""Every view as a person sees it (issue 17), in headless Chromium.

- A saved notebook someone else made, opened *untrusted* in JupyterLab 4 and Notebook 7 (its ``<style>`` elements are
  removed by the sanitizer): the prompt view's tokens still have boxes, special tokens look different from the
  messages' text, removed tokens are struck through, the probability colours and the legend's separate swatches
  survive; the lab's report and an opened KL strip fit the output area. The same notebook, signed (trusted), for a
  side-by-side screenshot.
- The chat panel after ``%kani load`` and ``%%chat``: ``kanibook.chat()`` opens on that conversation with the one
  model in the process; after three turns with probabilities on, every message shows its text, the list scrolls,
  follows the newest token, stays put when the reader scrolled up, and the What-if controls are there.

Screenshots go to ``test-artifacts/`` (see conftest.py).
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_untrusted_views import _report  # noqa: E402 - a lab report built from data, the renderer's real HTML

HOSTILE = '<img src=x onerror="window.__kb_pwned=1"><script>window.__kb_pwned=1</script>'


def _views_html(demo_model_dir) -> list[tuple[str, dict]]:
    """(name, mime bundle) of the real views: prompt, comparison, a reply's probabilities, the lab's report."""
    from kani import ChatMessage

    import kanibook
    from kanibook.probs.record import Alternative, Distribution, ReplyProbs, TokenProb
    from kanibook.prompt.view import PromptComparison

    messages = [ChatMessage.system("Be brief."), ChatMessage.user(f"What is the capital of France? {HOSTILE}")]
    prompt = kanibook.show_prompt(str(demo_model_dir), messages, element_id="kbt-prompt")
    without = kanibook.show_prompt(str(demo_model_dir), messages[1:], element_id="kbt-b")
    compare = PromptComparison(prompt, without, ("with a system prompt", "without"), element_id="kbt-compare")
    alts = (Alternative(1, " Paris", 0.5), Alternative(2, HOSTILE, 0.2))
    ps = [0.97, 0.75, 0.5, 0.2, 0.04] * 6
    probs = ReplyProbs([TokenProb(i, i + 10, f" word{i}", Distribution(p, 0, 0.5, alts), None)
                        for i, p in enumerate(ps)])  # fmt: skip
    rng = random.Random(1)
    n = 400
    report = _report({"fp32": [0.0] * n, "int8": [rng.uniform(0.001, 0.03) for _ in range(n)],
                      "nf4": [rng.uniform(0.02, 0.9) for _ in range(n)], "nf4-dq": [rng.uniform(0.02, 0.9) for _ in range(n)],
                      "fp4": [rng.uniform(0.05, 1.5) for _ in range(n)]})  # fmt: skip
    report.tokens = ["The"] + [f" {w}" for w in ("quick brown fox jumps over the lazy dog " * 50).split()][:n]
    return [
        ("prompt", prompt._repr_mimebundle_()),
        ("compare", compare._repr_mimebundle_()),
        ("probs", kanibook.show_reply(probs)._repr_mimebundle_()),
        ("report", report._repr_mimebundle_()),
    ]


def _saved_notebook(path: Path, views, *, trusted_data_dir: Path | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    for name, bundle in views:
        cell = nbformat.v4.new_code_cell(f"# the {name} view, as a colleague saved it")
        data = {k: v for k, v in bundle.items() if k in ("text/html", "text/plain")}
        cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
        nb.cells.append(cell)
    if trusted_data_dir is not None:
        from nbformat.sign import NotebookNotary

        NotebookNotary(data_dir=str(trusted_data_dir)).sign(nb)
    nbformat.write(nb, str(path))
    return path


# per token box: its computed border and background; per legend: the swatches' boxes
_TOKENS_JS = """() => {
  const cs = el => getComputedStyle(el);
  const prompt = document.querySelector('.kb-tokens:not(.kb-compare)');
  const boxes = [...prompt.querySelectorAll('.kb-b kbd[title^="#"]')];
  const plain = boxes.filter(b => !b.className);
  const special = boxes.filter(b => b.classList.contains('kb-sp'));
  const del = document.querySelector('.kb-compare kbd.kb-del del');
  const toks = [...document.querySelectorAll('.kb-probs .kb-tok')];
  const chips = [...document.querySelectorAll('.kb-probs .kb-plegend kbd')].map(c => c.getBoundingClientRect());
  return {
    styles: document.querySelectorAll('.jp-OutputArea-output style').length,
    n: boxes.length,
    borders: boxes.map(b => parseFloat(cs(b).borderTopWidth)),
    borderStyles: [...new Set(boxes.map(b => cs(b).borderTopStyle))],
    plainBg: plain.map(b => cs(b).backgroundColor),
    specialBg: special.map(b => cs(b).backgroundColor),
    specialWeight: special.map(b => cs(b).fontWeight),
    plainWeight: plain.map(b => cs(b).fontWeight),
    segBorder: cs(prompt.querySelector('.kb-seg')).borderLeftWidth,
    delLine: del ? cs(del).textDecorationLine : null,
    tokBg: toks.map(t => [t.className.match(/kb-p(\\d)/)[1], cs(t).backgroundColor]),
    chips: chips.map(r => [r.left, r.right, r.top, r.bottom]),
    pwned: !!window.__kb_pwned,
  };
}"""

_BIN_RGB = ["rgb(255, 245, 235)", "rgb(253, 208, 162)", "rgb(253, 141, 60)", "rgb(217, 72, 1)", "rgb(127, 39, 4)"]

# the report's width against its output area's, and the setting column's place in every table
_REPORT_JS = """() => {
  const report = document.querySelector('.kb-quant');
  const area = report.closest('.jp-OutputArea-output');
  const tables = [...report.querySelectorAll('table.kb-quant-table, table.kb-quant-table-more')];
  return {
    area: area.clientWidth, areaScroll: area.scrollWidth, report: report.scrollWidth,
    tables: tables.map(t => {
      const wrap = t.parentElement, first = t.querySelector('th').getBoundingClientRect();
      return {scroll: wrap.scrollWidth, client: wrap.clientWidth, firstLeft: first.left, firstRight: first.right,
              areaLeft: area.getBoundingClientRect().left, areaRight: area.getBoundingClientRect().right,
              visible: t.offsetParent !== null};
    }),
  };
}"""


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
def test_saved_views_render_untrusted(jupyter_app, open_notebook, demo_model_dir, trusted):
    views = _views_html(demo_model_dir)
    data_dir = jupyter_app.base / "data" if trusted else None
    name = f"saved-views-{jupyter_app.app}-{'trusted' if trusted else 'untrusted'}.ipynb"
    _saved_notebook(jupyter_app.root_dir / name, views, trusted_data_dir=data_dir)
    notebook = open_notebook(jupyter_app, [], wait_kernel=False)
    page = notebook.page
    notebook.goto(jupyter_app.notebook_url(name))
    notebook.wait_for(".kb-tokens .kb-b kbd")
    notebook.wait_for(".kb-quant")
    width = 1400
    for _ in range(4):  # the 948 px output area, whatever the app's margins and maximum width
        area = page.evaluate("() => document.querySelector('.kb-quant').closest('.jp-OutputArea-output').clientWidth")
        if abs(area - 948) <= 4:
            break
        width += 948 - area
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(300)
    seen = page.evaluate(_TOKENS_JS)
    assert not seen["pwned"]
    assert (seen["styles"] > 0) == trusted  # untrusted: the sanitizer removed every <style>
    assert seen["n"] > 20 and min(seen["borders"]) >= 1 and set(seen["borderStyles"]) <= {"solid", "dashed"}
    assert seen["specialBg"] and set(seen["specialBg"]).isdisjoint(seen["plainBg"])  # special tokens stand out
    assert min(int(w) for w in seen["specialWeight"]) > max(int(w) for w in seen["plainWeight"])
    assert float(seen["segBorder"].rstrip("px")) >= 3  # the role colour bar of each message
    assert seen["delLine"] == "line-through"  # removed tokens are struck through
    assert seen["tokBg"] and all(bg == _BIN_RGB[int(b)] for b, bg in seen["tokBg"])
    chips = seen["chips"]
    assert len(chips) == 5 and all(b[0] - a[1] >= 2 for a, b in zip(chips, chips[1:]))  # swatches apart
    kind = "trusted" if trusted else "untrusted"
    notebook.screenshot(f"views-{jupyter_app.app}-{kind}-prompt.png", ".kb-tokens")
    notebook.screenshot(f"views-{jupyter_app.app}-{kind}-probs.png", ".kb-probs")

    # the lab's report fits the output area, with a strip and the other columns open
    report = page.locator(".kb-quant")
    report.locator("details.kb-quant-strip summary").first.click()
    report.locator("details.kb-quant-more summary").click()
    sizes = page.evaluate(_REPORT_JS)
    assert 940 <= sizes["area"] <= 956, sizes
    assert sizes["report"] <= sizes["area"] + 1 and sizes["areaScroll"] <= sizes["area"] + 1, sizes
    assert len(sizes["tables"]) == 4
    for t in sizes["tables"]:  # nothing to scroll sideways: the setting column is always in view
        assert t["visible"] and t["scroll"] <= t["client"] + 1, t
        assert t["areaLeft"] <= t["firstLeft"] and t["firstRight"] <= t["areaRight"], t
    notebook.screenshot(f"views-{jupyter_app.app}-{kind}-report.png", ".kb-quant")


PANEL_CELLS = [
    "%load_ext kanibook",
    "%kani load",
    "%%chat --max-new-tokens 8 --temperature 0\nWhat is the capital of France?",
    "import kanibook\npanel = kanibook.chat(max_new_tokens=24, hyperparams={'min_new_tokens': 24})\npanel",
    (
        "import gc\n"  # whole models (a LlamaForCausalLM holds a LlamaModel: count only the outer ones)
        "print('models in the process:', sum(type(o).__name__.endswith('ForCausalLM') for o in gc.get_objects()))\n"
        "from kanibook.conversation.session import current_session\n"
        "print('same conversation:', panel.kani is current_session().kani)"
    ),
]

_MESSAGES_JS = """() => {
  const scroller = document.querySelector('.kb-chat-panel .kb-messages-scroll');
  const msgs = [...scroller.querySelectorAll('.kb-msg')];
  return {
    scrollHeight: scroller.scrollHeight, clientHeight: scroller.clientHeight, scrollTop: scroller.scrollTop,
    lastBelow: msgs[msgs.length - 1].getBoundingClientRect().bottom - scroller.getBoundingClientRect().bottom,
    msgs: msgs.map(m => {
      const head = m.querySelector('.kb-role') || m.firstElementChild;
      const body = m.querySelector('.kb-body');
      return {role: m.className.match(/kb-msg-(user|assistant|system)/)?.[1], height: m.getBoundingClientRect().height,
              head: head.getBoundingClientRect().height, body: body ? body.getBoundingClientRect().height : 0,
              bodyScroll: body ? body.scrollHeight : 0, clipped: m.scrollHeight > m.clientHeight + 1,
              text: body ? body.textContent.trim().length : 0};
    }),
  };
}"""

_DONE_JS = """(n) => { const r = document.querySelectorAll('.kb-chat-panel .kb-msg-assistant');
  return r.length === n && !r[n - 1].classList.contains('kb-msg-streaming')
    && document.querySelector('.kb-chat-panel .kb-stop').disabled; }"""


def test_panel_scrolls_follows_and_shares_the_notebooks_model(jupyter_lab, open_notebook):
    notebook = open_notebook(jupyter_lab, PANEL_CELLS)
    page = notebook.page
    notebook.run_all(timeout=300)
    assert notebook.errors() == []
    outputs = "\n".join(notebook.outputs())
    assert "models in the process: 1" in outputs and "same conversation: True" in outputs, outputs[-800:]
    assert len(re.findall(r"Loading\W+weights", outputs)) == 1  # chat() loaded nothing: no second progress bar
    panel = notebook.wait_for(".kb-chat-panel", timeout=120)
    title = panel.locator(".kb-title").inner_text()
    assert "KanibookEngine" not in title and "SmolLM2" in title, title  # the header names the model
    # the %%chat turn is in the panel: the same conversation
    assert "capital of France" in panel.locator(".kb-msg-user").first.inner_text()

    toggle = panel.locator(".kb-probs-toggle")
    box, label = toggle.locator("input").bounding_box(), toggle.locator(".widget-label-basic span").first
    centre = lambda b: b["y"] + b["height"] / 2  # noqa: E731
    assert abs(centre(box) - centre(label.bounding_box())) <= 2.5  # the checkbox sits level with its label
    toggle.locator("input").check()
    for turn, text in enumerate(["Tell me about dragons.", "And about knights?", "Who wins?"], start=2):
        notebook.send_chat(text)
        page.wait_for_function(_DONE_JS, arg=turn, timeout=120_000)
    seen = page.evaluate(_MESSAGES_JS)
    assert seen["scrollHeight"] > seen["clientHeight"] + 50, seen  # the list scrolls instead of squashing
    for m in seen["msgs"]:
        assert m["text"] > 0 and m["body"] > 10 and m["height"] > m["head"] + 10, m  # text visible
        assert not m["clipped"] and m["bodyScroll"] <= m["body"] + 1, m  # not cut through a line
    # it followed the newest tokens down to the end
    assert -12 <= seen["lastBelow"] <= 4, seen  # its bottom edge in view (a margin above the list's end)
    notebook.screenshot("panel-three-turns.png", ".kb-chat-panel")
    # the What-if controls of the first reply with probabilities are there when scrolled to
    branch = panel.locator(".kb-msg-assistant .kb-branch").first
    branch.scroll_into_view_if_needed()
    assert branch.is_visible() and branch.bounding_box()["height"] >= 20
    notebook.screenshot("panel-what-if.png", ".kb-chat-panel")
    # scrolled up by the reader: a new reply streams in below without moving what they read
    first_top = """() => { const s = document.querySelector('.kb-chat-panel .kb-messages-scroll');
      return s.querySelector('.kb-msg').getBoundingClientRect().top - s.getBoundingClientRect().top; }"""
    page.evaluate("() => { const s = document.querySelector('.kb-chat-panel .kb-messages-scroll');"
                  " s.scrollTop = s.scrollTop - 1e6; }")  # to the top, whatever the scroll origin
    before = page.evaluate(first_top)
    assert abs(before) <= 6  # the first message at the top (its margin)
    notebook.send_chat("One more, please.")
    page.wait_for_function(_DONE_JS, arg=5, timeout=120_000)
    assert abs(page.evaluate(first_top) - before) <= 2  # what they read did not move
    seen = page.evaluate(_MESSAGES_JS)
    assert seen["lastBelow"] > 100, seen  # and the new reply is below, out of view until they scroll down
