"""The chat panel's Why? in JupyterLab (headless Chromium): a click opens what the reply rests on right under the
reply, with hostile message texts inert; on both roads (transformers, and the embedded GGUF run by llama.cpp)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=\"window.__kb_pwned=1\"> <script>window.__kb_pwned=2</script> \"'></style>"
CELLS = [
    "%load_ext kanibook",
    "import kanibook\nfrom kani import ChatMessage, Kani\n"
    "history = [ChatMessage.user('My cat is called Zorblax. ' + HOSTILE), ChatMessage.assistant('Noted.'),\n"
    "           ChatMessage.user('What is my cat called?'), ChatMessage.assistant('Your cat is called Zorblax.')]\n"
    "panel = kanibook.chat(Kani(kanibook.load(BACKEND), chat_history=history))\npanel",
]


@pytest.mark.parametrize("backend", ["transformers", "llama.cpp"])
def test_why_opens_the_view_under_the_reply(jupyter_lab, open_notebook, backend):
    if backend == "llama.cpp":
        pytest.importorskip("llama_cpp", reason="needs llama-cpp-python")
    load = "" if backend == "transformers" else "backend='llama.cpp'"
    cells = [CELLS[0], f"HOSTILE = {HOSTILE!r}\n" + CELLS[1].replace("BACKEND", load)]
    notebook = open_notebook(jupyter_lab, cells)
    page = notebook.page
    notebook.run_all()
    assert notebook.errors() == []
    panel = notebook.wait_for(".kb-chat-panel", timeout=120)
    reply = panel.locator(".kb-msg-assistant").last
    reply.locator(".kb-why-button").click()  # like a person
    view = reply.locator(".kb-why-view .kb-why")
    view.wait_for(state="visible", timeout=120_000)
    body = reply.locator(".kb-body").bounding_box()
    box = view.bounding_box()
    assert box["y"] >= body["y"] + body["height"] - 1  # under the reply's text, inside the reply
    assert reply.locator(".kb-why-view").count() == 1
    assert view.locator(".kb-why-part").count() == 4  # #1 user, #2 assistant, #3 user, template
    assert view.locator(".kb-why-tok").count() >= 5
    notebook.screenshot(f"why-panel-{backend.replace('.', '')}.png", ".kb-chat-panel")
    title = view.locator(".kb-why-tok").nth(4).get_attribute("title")
    assert "drop without each part" in title and "#1 user" in title
    # hostile texts: shown as text, never as elements
    assert view.locator("img, script, style, iframe, svg").count() == 0
    assert "<img src=x" in view.inner_text()
    assert page.evaluate("() => window.__kb_pwned") is None
    reply.locator(".kb-why-button").click()  # a second click closes it
    page.wait_for_function("() => !document.querySelector('.kb-chat-panel .kb-why-view')", timeout=30_000)
