"""Checks shared by the multimodal tests: a recorder of ``model.generate`` calls and an audit of media HTML."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

from PIL import Image

from kanibook.render.media import CSS
from kanibook.render.safe import UNTRUSTED_CSS

__all__ = ["Recorder", "media_audit", "decode_png"]


class Recorder:
    """Wraps ``model.generate`` (the real one still runs) and keeps the keyword arguments of each call."""

    def __init__(self, model):
        self.model, self.calls, self._real = model, [], model.generate

    def __enter__(self):
        def recording(*args, **kwargs):
            self.calls.append(kwargs)
            return self._real(*args, **kwargs)

        self.model.generate = recording
        return self

    def __exit__(self, *exc):
        del self.model.generate


def media_audit(html: str) -> list[str]:
    """Problems in a media strip: only its own tags; src only a PNG/WAV data URI; no handlers, no raw controls."""
    problems = []

    class Check(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag not in {"style", "div", "figure", "figcaption", "img", "audio"}:
                problems.append(f"<{tag}>")
            for name, value in attrs:
                if name == "src":
                    if not re.fullmatch(r"data:(image/png|audio/wav);base64,[A-Za-z0-9+/=]+", value or ""):
                        problems.append(f"src {value[:40]!r}")
                elif name == "style":  # only what an untrusted notebook keeps, plain values
                    for decl in filter(None, (value or "").split(";")):
                        prop, _, val = decl.partition(":")
                        if prop not in UNTRUSTED_CSS or not re.fullmatch(r"[#%.\w\s-]+", val):
                            problems.append(f"style {decl!r} on <{tag}>")
                elif name not in {"class", "alt", "title", "controls", "preload"}:
                    problems.append(f"{name}= on <{tag}>")

        def handle_data(self, data):
            if self.lasttag == "style" and data != CSS:
                problems.append("style content")

    Check(convert_charrefs=True).feed(html)
    if re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", html):
        problems.append("raw control characters")
    return problems


def decode_png(html: str):
    data = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    return Image.open(io.BytesIO(base64.b64decode(data)))
