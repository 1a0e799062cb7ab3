"""The chat panel's "probabilities" box in JupyterLab (headless Chromium): coloured tokens while a reply streams,
their alternatives on hover."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

CELLS = [
    "%load_ext kanibook",
    "import kanibook\npanel = kanibook.chat(max_new_tokens=48, hyperparams={'min_new_tokens': 48})\npanel",
]

# every 15 ms: how many coloured tokens the last reply shows, and whether it is still streaming
_SAMPLER_JS = """() => {
  window.__kbProbs = [];
  window.__kbProbsSampler = setInterval(() => {
    const replies = document.querySelectorAll('.kb-chat-panel .kb-msg-assistant');
    if (!replies.length) return;
    const reply = replies[replies.length - 1];
    const tokens = reply.querySelectorAll('.kb-probs-view .kb-tok');
    const coloured = Array.from(tokens).filter(t => getComputedStyle(t).backgroundColor !== 'rgba(0, 0, 0, 0)');
    window.__kbProbs.push({streaming: reply.classList.contains('kb-msg-streaming'), n: tokens.length,
                           coloured: coloured.length});
  }, 15);
}"""


def test_probabilities_stream_coloured_and_hover_shows_alternatives(jupyter_lab, open_notebook):
    notebook = open_notebook(jupyter_lab, CELLS)
    page = notebook.page
    notebook.run_all()
    assert notebook.errors() == []
    panel = notebook.wait_for(".kb-chat-panel", timeout=120)
    panel.locator(".kb-probs-toggle input").check()  # the "probabilities" box, clicked like a person
    page.evaluate(_SAMPLER_JS)
    notebook.send_chat("Write a long story about a dragon.", via="enter")
    page.wait_for_function(
        """() => { const r = document.querySelectorAll('.kb-chat-panel .kb-msg-assistant');
                   return r.length === 1 && !r[0].classList.contains('kb-msg-streaming')
                     && document.querySelector('.kb-chat-panel .kb-stop').disabled; }""",
        timeout=120_000,
    )
    page.evaluate("() => clearInterval(window.__kbProbsSampler)")
    samples = page.evaluate("() => window.__kbProbs")
    live = [s["n"] for s in samples if s["streaming"] and s["n"]]
    assert live, "no coloured tokens appeared while the reply streamed"
    assert live == sorted(live) and live[-1] > live[0], f"tokens did not arrive one after another: {live[:20]}"
    assert all(s["coloured"] == s["n"] for s in samples if s["streaming"])
    token = panel.locator(".kb-msg-assistant .kb-probs-view .kb-tok").nth(3)
    token.hover()
    title = token.get_attribute("title")
    lines = title.splitlines()
    assert lines[1].startswith("model: ") and "rank" in lines[1]
    assert len([line for line in lines[2:] if line.strip().endswith("%")]) >= 2, title  # the alternatives
    outline = token.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline == "solid"  # the hovered token is highlighted
    assert panel.locator(".kb-msg-assistant .kb-branch").is_visible()  # the "what if" controls
