"""Hostile strings in a real page (JupyterLab 4, headless Chromium): shown as text, never run, never out of their box.

The corpus (``_notebooks.HOSTILE``) goes through the chat panel (typed by the user, and streamed back by an engine
that answers with it) and through every function of ``kanibook.render.safe``. A control cell shows unescaped markup
on purpose: it must run, which proves that this page would have run the hostile strings had they not been escaped.
"""

from __future__ import annotations

import html

import pytest
from _notebooks import HOSTILE, HOSTILE_ID, hostile_cells, hostile_view_cells

from kanibook.render import safe

pytestmark = pytest.mark.browser

# everything a hostile string could smuggle into an output: elements that load or run things, event handlers,
# javascript: URLs, and boxes pinned over the page
_INJECTED_JS = """(outputs) => outputs.flatMap(root => {
  const banned = ['img', 'script', 'iframe', 'svg', 'object', 'embed', 'video', 'audio', 'form', 'title', 'meta',
                  'base', 'link'];
  const found = [];
  for (const el of [root, ...root.querySelectorAll('*')]) {
    const tag = el.tagName.toLowerCase();
    if (banned.includes(tag)) found.push(el.outerHTML.slice(0, 160));
    for (const a of el.attributes) {
      if (a.name.startsWith('on')) found.push(tag + '[' + a.name + ']');
      if (/^\\s*javascript:/i.test(a.value)) found.push(tag + '[' + a.name + '=javascript:...]');
    }
    if (getComputedStyle(el).position === 'fixed') found.push(tag + ' with position: fixed');
  }
  return found;
})"""

# the same, for elements added to the chat panel while it works (a streamed half-tag must never become an element)
_WATCH_PANEL_JS = """() => {
  window.__kbInjected = [];
  const banned = ['img', 'script', 'iframe', 'svg', 'object', 'embed', 'video', 'audio', 'form'];
  const check = (el) => {
    if (el.nodeType !== 1) return;
    for (const e of [el, ...el.querySelectorAll('*')]) {
      const tag = e.tagName.toLowerCase();
      if (banned.includes(tag)) window.__kbInjected.push('<' + tag + '>');
      for (const a of e.attributes) if (a.name.startsWith('on')) window.__kbInjected.push(tag + '[' + a.name + ']');
    }
  };
  window.__kbObserver = new MutationObserver(records => {
    for (const r of records) {
      if (r.type === 'attributes') check(r.target); else r.addedNodes.forEach(check);
    }
  });
  window.__kbObserver.observe(document.querySelector('.kb-chat-panel'), {childList: true, subtree: true, attributes: true});
}"""

# the page around the outputs is intact: the body shows, the notebook's toolbar is on top where it belongs
_PAGE_INTACT_JS = """() => {
  const bar = document.querySelector('.jp-NotebookPanel-toolbar');
  if (!bar || getComputedStyle(document.body).display === 'none') return 'no toolbar or hidden body';
  const r = bar.getBoundingClientRect();
  const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  if (!top || !bar.contains(top)) return 'toolbar covered by ' + (top ? top.outerHTML.slice(0, 120) : 'nothing');
  const nb = document.querySelector('.jp-Notebook').getBoundingClientRect();
  for (const out of document.querySelectorAll('.jp-Notebook .jp-OutputArea')) {
    const o = out.getBoundingClientRect();
    if (o.width && (o.left < nb.left - 1 || o.right > nb.right + 1)) return 'an output leaves the notebook';
  }
  return document.title.includes('pwned') ? 'title changed' : 'ok';
}"""

TYPED = (
    '<img src=x onerror="window.__kb_pwned=1"> </script><script>alert(1)</script> [x](javascript:alert(1)) \u202eevil'
)


def test_hostile_strings_stay_text(jupyter_lab, open_notebook):
    """The panel and kanibook's renderers show the hostile corpus as text; nothing runs, nothing escapes its box."""
    cells, index = hostile_cells()
    notebook = open_notebook(jupyter_lab, cells)
    page = notebook.page
    notebook.run_all()
    assert notebook.errors() == []
    page.wait_for_function("() => window.__kb_control === 1", timeout=15_000)  # unescaped markup does run here

    # the user types a hostile message; the engine streams it back together with the whole corpus
    panel = notebook.wait_for(".kb-chat-panel")
    page.evaluate(_WATCH_PANEL_JS)
    notebook.send_chat(TYPED, via="enter")
    page.wait_for_function(
        """() => { const r = document.querySelector('.kb-chat-panel .kb-msg-assistant');
                   return r && !r.classList.contains('kb-msg-streaming')
                     && document.querySelector('.kb-chat-panel .kb-stop').disabled; }""",
        timeout=60_000,
    )
    page.evaluate("() => window.__kbObserver.disconnect()")
    assert page.evaluate("() => window.__kbInjected") == []
    user_text = panel.locator(".kb-msg-user .kb-body").text_content().strip()
    assert user_text == safe.clean_chars(TYPED)
    reply_text = panel.locator(".kb-msg-assistant .kb-body").text_content()
    for visible_as_text in (
        'onerror="window.__kb_pwned=1"',
        "<script>alert(1)</script>",
        "</script>",
        "\u27e8U+202E\u27e9",
    ):
        assert visible_as_text in reply_text
    assert panel.locator(".kb-msg-error").count() == 0

    # kanibook.render.safe in HTML outputs
    texts = page.locator(".kbt-text").all()
    assert [t.text_content() for t in texts] == [safe.clean_chars(h) for h in HOSTILE]
    assert [a.get_attribute("title") for a in page.locator(".kbt-attr").all()] == [safe.clean_chars(h) for h in HOSTILE]
    visibles = [v.text_content() for v in page.locator(".kbt-visible").all()]
    assert visibles == [html.unescape(safe.visible(h)) for h in HOSTILE]
    markdown = " ".join(m.text_content() for m in page.locator(".kbt-md").all())
    assert "<script>alert(1)</script>" in markdown and 'onerror="window.__kb_pwned=1"' in markdown
    assert "\u202e" not in markdown and "\x00" not in markdown
    assert page.evaluate("() => window.__kb_json") == HOSTILE  # </script> inside the JSON did not end the script

    _assert_nothing_escaped(notebook, index, ("panel", "text", "attr", "markdown", "visible"))
    notebook.screenshot("hostile-panel-lab.png", ".kb-chat-panel")


def _assert_nothing_escaped(notebook, index: dict[str, int], names: tuple[str, ...]) -> None:
    """No script ran, no dialog opened, nothing was injected into the named cells' outputs, the page is intact."""
    for name in names:
        found = notebook.cell_outputs(index[name]).evaluate_all(_INJECTED_JS)
        assert found == [], f"{name}: injected {found}"
    assert notebook.page.evaluate("() => window.__kb_pwned") is None
    assert notebook.dialogs == []
    assert notebook.page.evaluate(_PAGE_INTACT_JS) == "ok"


@pytest.mark.slow
def test_hostile_strings_in_prompt_and_memory_views(jupyter_lab, open_notebook):
    """The token view, the prompt comparison, the memory report and the estimate show hostile text as text."""
    cells, index = hostile_view_cells()
    notebook = open_notebook(jupyter_lab, cells)
    page = notebook.page
    notebook.run_all()
    assert notebook.errors() == []
    page.wait_for_function("() => window.__kb_control === 1", timeout=15_000)  # unescaped markup does run here

    outputs = {name: " ".join(notebook.cell_outputs(index[name]).all_text_contents()) for name in index}
    # tokens are drawn with visible whitespace, so check pieces without spaces
    for name in ("prompt", "compare"):
        for piece in ("<img", "onerror=", "<script>", "</script>", "javascript:", "\u27e8U+202E\u27e9", "\u2400"):
            assert piece in outputs[name], f"{piece!r} not shown as text in the {name} view"
    assert HOSTILE[0] in outputs["compare"]  # a label, as text
    assert safe.clean_chars(HOSTILE[0] + HOSTILE[-1]) in outputs["memory"]
    assert safe.clean_chars(HOSTILE[2]) in outputs["memory"]
    assert safe.clean_chars(HOSTILE[1] + HOSTILE[-2]) in outputs["estimate"]
    for name in ("prompt", "compare", "memory", "estimate"):
        assert "\u202e" not in outputs[name] and "\x00" not in outputs[name]
    # the element ids came through their attribute whole
    for suffix in ("-prompt", "-memory"):
        assert page.evaluate("(id) => document.getElementById(id) !== null", HOSTILE_ID + suffix), suffix
    # hovering a token shows its position, id and text: tokens holding "<" and a quote reach the title intact
    titles = notebook.cell_outputs(index["prompt"]).locator("[title]").evaluate_all("els => els.map(e => e.title)")
    assert any('"<"' in t for t in titles) and any('\\"' in t for t in titles), titles[:40]

    _assert_nothing_escaped(notebook, index, ("prompt", "compare", "memory", "estimate"))
    notebook.screenshot("hostile-views-lab.png")
