"""Small builders of the notebooks the browser tests open (nbformat v4, the venv's ``python3`` kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat

__all__ = [
    "HOSTILE",
    "HOSTILE_ID",
    "chat_panel_cells",
    "hostile_cells",
    "hostile_view_cells",
    "widget_smoke_cells",
    "write_notebook",
]

# every payload sets window.__kb_pwned (or raises a dialog) if it ever runs as markup or script
HOSTILE = [
    '<img src=x onerror="window.__kb_pwned=1">',
    "<script>alert(1)</script>",
    "<script>window.__kb_pwned=1; alert(1)</script>",
    "</script><script>window.__kb_pwned=1</script>",
    "\"'><img src=x onerror=alert(1)>",
    '[click me](javascript:window.__kb_pwned=1) <a href="javascript:alert(1)">js link</a>',
    '<svg onload="window.__kb_pwned=1"></svg><iframe src="javascript:alert(1)"></iframe>',
    '<div style="position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:99999;background:red">cover</div>',
    "<style>body { display: none !important; }</style><title>pwned</title>",
    "right-to-left \u202eevil\u202c override",
    "NUL\x00 BEL\x07 ESC\x1b[31m DEL\x7f end",
]


def write_notebook(path: Path, cells: list[str]) -> Path:
    """Write a notebook of code cells to ``path``.

    :param path: Where to write the ``.ipynb`` file.
    :param cells: The cells' sources, in order.
    """
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nbformat.write(nb, str(path))
    return path


def widget_smoke_cells() -> list[str]:
    """A plain ipywidgets Button + HTML: proves the browser infrastructure without kanibook."""
    return [
        "import sys\nprint(sys.executable)",
        (
            "import ipywidgets as w\n"
            "button = w.Button(description='Click me')\n"
            "button.add_class('kbt-button')\n"
            "label = w.HTML('clicked 0')\n"
            "label.add_class('kbt-label')\n"
            "clicks = []\n"
            "def on_click(_):\n"
            "    clicks.append(1)\n"
            "    label.value = f'clicked {len(clicks)}'\n"
            "button.on_click(on_click)\n"
            "w.VBox([button, label])"
        ),
    ]


def chat_panel_cells() -> list[str]:
    """The embedded demo model in a chat panel, opened the way the tutorial does it."""
    return [
        "%load_ext kanibook",
        "import kanibook\npanel = kanibook.chat()\npanel",
    ]


# a kani engine that "answers" with the user's message and the hostile corpus, a few characters at a time, so the
# panel shows hostile model output both while it streams (half-written tags) and as the final Markdown
_HOSTILE_ENGINE = """
import asyncio
from kani import ChatMessage
from kani.engines.base import BaseEngine, Completion

HOSTILE = {hostile}

class HostileEngine(BaseEngine):
    max_context_size = 4096

    def prompt_len(self, messages, functions=None, **kwargs):
        return sum(len(m.text or "") for m in messages)

    def _reply(self, messages):
        return messages[-1].text + "\\n\\n" + "\\n\\n".join(HOSTILE)

    async def predict(self, messages, functions=None, **hyperparams):
        return Completion(ChatMessage.assistant(self._reply(messages)))

    async def stream(self, messages, functions=None, **hyperparams):
        text = self._reply(messages)
        for i in range(0, len(text), 7):
            yield text[i : i + 7]
            await asyncio.sleep(0.01)
        yield Completion(ChatMessage.assistant(text))
"""


def hostile_cells() -> tuple[list[str], dict[str, int]]:
    """Hostile strings through the chat panel (a hostile engine) and through ``kanibook.render.safe``.

    Returns the cells and the index of each named cell: ``panel``, ``text``, ``attr``, ``markdown``, ``visible``,
    ``json`` (a ``<script>`` that stores ``safe.json_for_script(HOSTILE)`` in ``window.__kb_json``) and ``control``
    (deliberately unescaped markup: proves that this page does run injected script, so its absence elsewhere means
    something).
    """
    cells = {
        "setup": "%load_ext kanibook\n" + _HOSTILE_ENGINE.format(hostile=ascii(HOSTILE)),
        "panel": "import kanibook\npanel = kanibook.chat(HostileEngine(), title='hostile')\npanel",
        "text": "from IPython.display import HTML, display\nfrom kanibook.render import safe\n"
        "display(HTML(''.join(f'<div class=\"kbt-text\">{safe.text(h)}</div>' for h in HOSTILE)))",
        "attr": "display(HTML(''.join(f'<span class=\"kbt-attr\" title=\"{safe.attr(h)}\">*</span>' for h in HOSTILE)))",
        "markdown": "display(HTML(''.join(f'<div class=\"kbt-md\">{safe.markdown(h)}</div>' for h in HOSTILE)))",
        "visible": "display(HTML(''.join(f'<div class=\"kbt-visible\">{safe.visible(h)}</div>' for h in HOSTILE)))",
        "json": "display(HTML(f'<script>window.__kb_json = {safe.json_for_script(HOSTILE)};</script>'))",
        "control": "display(HTML('<img src=x onerror=\"window.__kb_control=1\">'))",
    }
    return list(cells.values()), {name: i for i, name in enumerate(cells)}


# an element id that breaks out of its attribute unless it is escaped
HOSTILE_ID = 'kbt-id"><img src=x onerror="window.__kb_pwned=1">'


def hostile_view_cells() -> tuple[list[str], dict[str, int]]:
    """Hostile strings as messages, tokens, labels, model names and element ids of kanibook's inline views.

    Returns the cells and the index of each named cell: ``prompt`` (``show_prompt``), ``compare``
    (``compare_prompts`` with hostile labels), ``memory`` (the memory report with a hostile model name and note),
    ``estimate`` (the pre-load estimate with a hostile model name) and ``control`` (unescaped markup that must run).
    """
    cells = {
        "setup": "import dataclasses\nimport kanibook\nfrom kani import ChatMessage\n"
        f"HOSTILE = {HOSTILE!a}\nHOSTILE_ID = {HOSTILE_ID!r}\n"
        "engine = kanibook.load()\n"
        "messages = [ChatMessage.system(HOSTILE[0])] + [\n"
        "    ChatMessage.user(h) if i % 2 == 0 else ChatMessage.assistant(h) for i, h in enumerate(HOSTILE)\n]",
        "prompt": "kanibook.show_prompt(engine, messages=messages, element_id=HOSTILE_ID + '-prompt')",
        "compare": "kanibook.compare_prompts(engine, engine, messages=messages, labels=(HOSTILE[0], HOSTILE[3]))",
        "memory": "dataclasses.replace(kanibook.memory(engine), model_name=HOSTILE[0] + HOSTILE[-1], "
        "cuda_note=HOSTILE[2], element_id=HOSTILE_ID + '-memory')",
        "estimate": "dataclasses.replace(kanibook.estimate_memory(engine), model_name=HOSTILE[1] + HOSTILE[-2])",
        "control": "from IPython.display import HTML\nHTML('<img src=x onerror=\"window.__kb_control=1\">')",
    }
    return list(cells.values()), {name: i for i, name in enumerate(cells)}
