"""The chat panel used like a person would, in JupyterLab 4 and Notebook 7 (headless Chromium).

First a plain ipywidgets notebook proves the tier itself (server, kernel, widget comms both ways), so that a
failure of the panel test below is the panel's and not the harness's.
"""

from __future__ import annotations

import itertools
import re
import sys
import time
from pathlib import Path

import pytest
from _notebooks import chat_panel_cells, widget_smoke_cells

pytestmark = pytest.mark.browser


def test_plain_widgets_round_trip(jupyter_app, open_notebook):
    """Run a notebook, click an ipywidgets Button three times, see the kernel's answer in the page."""
    notebook = open_notebook(jupyter_app, widget_smoke_cells())
    notebook.run_all()
    assert notebook.errors() == []
    # the kernel is the venv's python
    assert Path(notebook.outputs()[0].strip()) == Path(sys.executable).absolute()
    button = notebook.wait_for(".kbt-button")
    for _ in range(3):
        button.click()
    notebook.page.wait_for_function(
        "() => document.querySelector('.kbt-label').textContent.trim() === 'clicked 3'", timeout=20_000
    )


# records every change of the last assistant message (its body text and its classes) every 15 ms, in the page
_SAMPLER_JS = """() => {
  window.__kbSamples = [];
  let previous = null;
  window.__kbSampler = setInterval(() => {
    const replies = document.querySelectorAll('.kb-chat-panel .kb-msg-assistant');
    if (!replies.length) return;
    const reply = replies[replies.length - 1];
    const body = reply.querySelector('.kb-body');
    const sample = {
      n: replies.length,
      text: body ? body.textContent : '',
      streaming: reply.classList.contains('kb-msg-streaming'),
      stopped: reply.classList.contains('kb-msg-stopped'),
      t: performance.now(),
    };
    const key = JSON.stringify([sample.n, sample.text, sample.streaming, sample.stopped]);
    if (key !== previous) { window.__kbSamples.push(sample); previous = key; }
  }, 15);
}"""

LONG_REQUEST = "Write a very long story about a brave knight and a dragon, with many chapters and details."


def _samples(page, n: int) -> list[dict]:
    """The recorded states of the ``n``-th assistant reply (1-based), in order."""
    return [s for s in page.evaluate("() => window.__kbSamples") if s["n"] == n]


def _streamed_texts(samples: list[dict]) -> list[str]:
    """The distinct non-empty texts the reply showed while it was streaming, in the order they appeared."""
    texts: list[str] = []
    for s in samples:
        if s["streaming"] and s["text"].strip() and (not texts or texts[-1] != s["text"]):
            texts.append(s["text"])
    return texts


def _assert_grows(texts: list[str]) -> None:
    """Each streamed text extends the one before it (tokens are appended, never rewritten while streaming)."""
    for before, after in itertools.pairwise(texts):
        assert after.startswith(before) and len(after) > len(before), f"not a growing sequence: {before!r} -> {after!r}"


def _set_max_new_tokens(panel, value: int) -> None:
    """Type a value into the Settings' "max new tokens" box, like a person (the box commits on blur)."""
    box = panel.locator(".kb-settings .widget-inline-hbox").filter(has_text="max new tokens").locator("input")
    box.fill(str(value))
    box.blur()


def _figures_tokens(reply) -> int:
    """The reply's completion token count from its per-turn figures ("... · 12 tokens · ...")."""
    figures = reply.locator(".kb-figures").inner_text()
    match = re.search(r"\b(\d+) tokens\b", figures)
    assert match, f"no token count in the reply's figures: {figures!r}"
    return int(match.group(1))


@pytest.mark.slow
def test_chat_panel_streams_and_stops(jupyter_app, open_notebook):
    """Type, send (Enter, then the Send button), watch tokens arrive one after another, press Stop mid-reply."""
    t0 = time.perf_counter()
    notebook = open_notebook(jupyter_app, chat_panel_cells())
    page = notebook.page
    phases = {"open + kernel": time.perf_counter() - t0}
    notebook.run_all()
    assert notebook.errors() == []
    panel = notebook.wait_for(".kb-chat-panel", timeout=120)
    phases["run all (model load)"] = time.perf_counter() - t0 - sum(phases.values())
    send, stop, status = panel.locator(".kb-send"), panel.locator(".kb-stop"), panel.locator(".kb-status")
    text_box = panel.locator(".kb-input input")
    assert stop.is_disabled(), "Stop must be disabled while nothing is generated"
    panel.locator(".jupyter-widget-Collapse-header").filter(has_text="Settings").click()  # open the Settings
    page.evaluate(_SAMPLER_JS)

    # round 1: a reply sent with Enter; its length limit (below the answer's natural length), typed into Settings,
    # must reach the kernel
    _set_max_new_tokens(panel, 3)
    notebook.send_chat("What is the capital of France?", via="enter")
    page.wait_for_function(
        """() => { const r = document.querySelectorAll('.kb-chat-panel .kb-msg-assistant');
                   return r.length === 1 && !r[0].classList.contains('kb-msg-streaming')
                     && document.querySelector('.kb-chat-panel .kb-stop').disabled; }""",
        timeout=90_000,
    )
    assert text_box.input_value() == "", "the input box is emptied once the message is sent"
    assert panel.locator(".kb-msg-user").first.inner_text().count("What is the capital of France?") == 1
    first = panel.locator(".kb-msg-assistant").nth(0)
    assert "kb-msg-stopped" not in (first.get_attribute("class") or "")
    assert 0 < _figures_tokens(first) <= 3
    assert first.locator(".kb-body").inner_text().strip()

    phases["round 1"] = time.perf_counter() - t0 - sum(phases.values())

    # round 2: a long reply sent with the Send button, stopped mid-way
    _set_max_new_tokens(panel, 4000)
    notebook.send_chat(LONG_REQUEST, via="button")
    deadline = time.monotonic() + 120
    while len(_streamed_texts(_samples(page, 2))) < 8:  # each new text holds at least one more token
        assert time.monotonic() < deadline, f"tokens did not arrive: {_samples(page, 2)[-3:]}\n{notebook.describe()}"
        assert not any(s["stopped"] for s in _samples(page, 2))
        page.wait_for_timeout(100)
    reply = panel.locator(".kb-msg-assistant").nth(1)
    assert "kb-msg-streaming" in reply.get_attribute("class")
    assert stop.is_enabled(), "Stop must be enabled while a reply streams"
    assert "generating" in status.inner_text()
    stop.click()
    stopped_at = page.evaluate("() => performance.now()")

    page.wait_for_function(
        "() => document.querySelectorAll('.kb-chat-panel .kb-msg-assistant')[1].classList.contains('kb-msg-stopped')",
        timeout=30_000,
    )
    notebook.wait_for(".kb-chat-panel .kb-stop:disabled", timeout=30)
    final_text = reply.locator(".kb-body").text_content()
    page.wait_for_timeout(1500)  # the text must not grow any more
    samples = _samples(page, 2)
    page.evaluate("() => clearInterval(window.__kbSampler)")

    assert reply.locator(".kb-body").text_content() == final_text, "the reply kept growing after Stop"
    assert "kb-msg-streaming" not in reply.get_attribute("class")
    assert stop.is_disabled() and send.is_enabled()
    assert "stopped" in status.inner_text()
    streamed = _streamed_texts(samples)
    assert len(streamed) >= 8, f"tokens did not arrive one after another: {streamed}"
    _assert_grows(streamed)
    before_stop = _streamed_texts([s for s in samples if s["t"] < stopped_at])
    assert len(before_stop) >= 8, f"fewer than 8 growing texts before Stop was pressed: {before_stop}"
    tokens = _figures_tokens(reply)
    assert 8 <= tokens < 4000, f"{tokens} tokens: not a reply stopped mid-way under the 4000-token setting"
    assert "stopped" in reply.locator(".kb-figures").inner_text()
    assert notebook.dialogs == []

    shot = notebook.screenshot(f"chat-panel-{jupyter_app.app}.png", ".kb-chat-panel")
    assert shot.stat().st_size > 5_000
    phases["round 2 + stop"] = time.perf_counter() - t0 - sum(phases.values())
    print(f"{jupyter_app.app} (server start {jupyter_app.start_s:.1f} s):", {k: round(v, 1) for k, v in phases.items()})
