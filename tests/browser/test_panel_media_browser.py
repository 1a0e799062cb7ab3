"""The chat panel's Attach button in a real browser: an uploaded image shows as a thumbnail, goes with the next
message, and a reply streams after it; a hostile file name stays text.

The kernel builds the tiny random-weight LLaVA of tests/unit/conftest.py (its replies are noise: the test checks
what the page shows, never what the model says).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from _notebooks import HOSTILE

pytestmark = pytest.mark.browser

UNIT_TESTS = Path(__file__).resolve().parents[1] / "unit"


def _cells() -> list[str]:
    return [
        "%load_ext kanibook",
        (
            "import sys, tempfile\n"
            f"sys.path.insert(0, {str(UNIT_TESTS)!r})\n"
            "from conftest import build_tiny_llava\n"
            "from transformers import AutoModelForImageTextToText\n"
            "import kanibook\n"
            "folder = build_tiny_llava(tempfile.mkdtemp())\n"
            "engine = kanibook.load(folder, model_cls=AutoModelForImageTextToText)\n"
            "panel = kanibook.chat(engine, max_new_tokens=6, hyperparams={'min_new_tokens': 6})\n"
            "panel"
        ),
    ]


def _png(colour: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (28, 28), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(page, panel, name: str, data: bytes) -> None:
    """Click Attach and pick a file in the browser's file chooser, as a person does."""
    with page.expect_file_chooser(timeout=30_000) as chooser:
        panel.locator(".kb-upload").click()
    chooser.value.set_files([{"name": name, "mimeType": "image/png", "buffer": data}])


@pytest.mark.slow
def test_uploaded_image_shows_and_a_reply_streams_after_it(jupyter_app, open_notebook):
    notebook = open_notebook(jupyter_app, _cells())
    page = notebook.page
    notebook.run_all()
    assert notebook.errors() == []
    panel = notebook.wait_for(".kb-chat-panel", timeout=120)
    page.evaluate("() => { window.__kb_pwned = undefined; }")

    # a hostile file name first: it is shown as text in the pending attachments, nothing runs
    hostile_name = HOSTILE[0] + ".png"
    _upload(page, panel, hostile_name, _png("blue"))
    notebook.wait_for(".kb-chat-panel .kb-attachments img", timeout=30)
    assert hostile_name in panel.locator(".kb-attachments figcaption").inner_text()  # shown as text
    panel.locator(".kb-attachments-clear").click()
    notebook.wait_for(".kb-chat-panel .kb-attachments img", timeout=30, state="detached")

    # a real upload: a thumbnail, then the message with it, then a reply
    _upload(page, panel, "red.png", _png("red"))
    thumb = notebook.wait_for(".kb-chat-panel .kb-attachments img", timeout=30)
    assert thumb.get_attribute("src").startswith("data:image/png;base64,")
    assert "red.png" in panel.locator(".kb-attachments figcaption").inner_text()
    notebook.send_chat("What is in this picture?", via="button")
    user = panel.locator(".kb-msg-user").last
    notebook.wait_for(".kb-chat-panel .kb-msg-user .kb-msg-media img", timeout=30)
    assert "[image 28\u00d728: red.png]" in user.locator(".kb-body").inner_text()
    assert panel.locator(".kb-attachments img").count() == 0  # the attachment went with the message
    page.wait_for_function(
        """() => { const r = document.querySelectorAll('.kb-chat-panel .kb-msg-assistant');
                   return r.length === 1 && !r[0].classList.contains('kb-msg-streaming')
                     && document.querySelector('.kb-chat-panel .kb-stop').disabled; }""",
        timeout=90_000,
    )
    reply = panel.locator(".kb-msg-assistant").last
    assert "tokens" in reply.locator(".kb-figures").inner_text()
    order = page.evaluate(
        """() => { const msgs = [...document.querySelectorAll('.kb-chat-panel .kb-msg')];
                   return msgs.map(m => m.classList.contains('kb-msg-user') ? 'user' : 'assistant'); }"""
    )
    assert order == ["user", "assistant"]  # the reply comes after the message with the image
    assert page.evaluate("() => window.__kb_pwned") is None and notebook.dialogs == []
    assert "error" not in panel.locator(".kb-status").inner_text()
