"""The one place where text becomes HTML. Every string that reaches a page goes through a function here.

- :func:`text` for plain text in element content (model output while it streams, user messages, file names, ...);
- :func:`attr` for text inside a quoted attribute value (``title="..."``, ``data-*``);
- :func:`markdown` for a finished reply rendered as Markdown: raw HTML in the source is shown as text, then the
  result is sanitized with an allow-list (no script, no event handlers, no ``javascript:`` links);
- :func:`json_for_script` for data embedded in a ``<script>`` element;
- :func:`data_uri` for an image or sound embedded in ``src="..."`` (base64 of bytes kanibook encoded itself);
- :func:`visible` for tokens: whitespace and control characters drawn as visible symbols;
- :func:`css` for a ``style="..."`` attribute: only properties that JupyterLab's and Notebook 7's sanitizer keeps
  on an untrusted notebook's HTML (:data:`UNTRUSTED_CSS`), values checked (no ``url()``, ``var()``, quotes that
  end the attribute);
- :func:`markdown_literal` and :func:`markdown_inert` for text written into a Markdown *file* (transcripts), which
  some other program will render: literal text, or Markdown whose raw HTML and links cannot act.

All of them neutralize what could change the page outside its box: control characters (NUL included) and Unicode
direction overrides are replaced by visible markers.
"""

from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from typing import Any

__all__ = [
    "text", "attr", "markdown", "json_for_script", "visible", "clean_chars", "markdown_literal", "markdown_inert",
    "data_uri", "css", "UNTRUSTED_CSS",
]  # fmt: skip

# C0/C1 controls except tab and newline, plus the bidirectional embedding/override/isolate controls
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
# Control Pictures block for C0 (U+2400 + code), a named marker for the rest
_PICTURES = {i: chr(0x2400 + i) for i in range(0x20)} | {0x7F: "\u2421"}


def _marker(match: re.Match) -> str:
    code = ord(match.group())
    return _PICTURES.get(code, f"\u27e8U+{code:04X}\u27e9")


def clean_chars(s: str) -> str:
    """Replace control characters and direction overrides with visible markers (no HTML escaping)."""
    return _CONTROL.sub(_marker, str(s))


def text(s: Any) -> str:
    """Plain text -> HTML element content. Quotes are escaped too, so the result is also attribute-safe."""
    return html.escape(clean_chars(s), quote=True)


def attr(s: Any) -> str:
    """Text -> the inside of a double- or single-quoted HTML attribute value."""
    return html.escape(clean_chars(s), quote=True).replace("\n", "&#10;")


_WHITESPACE = {" ": "\u00b7", "\n": "\u21b5\n", "\t": "\u2192", "\r": "\u240d"}


def visible(token: str) -> str:
    """A token's text with whitespace and control characters drawn visibly, then escaped as element content."""
    shown = "".join(_WHITESPACE.get(ch, ch) for ch in clean_chars(token))
    return html.escape(shown, quote=True)


# The inline-style properties JupyterLab 4 and Notebook 7 keep when they sanitize an untrusted output (the
# allowedStyles of packages/apputils/src/sanitizer.ts, with sanitize-html). They drop every <style> element, and a
# property whose value does not match their pattern; notable absences: var(), flex-*, position:sticky,
# overflow-wrap:anywhere, text-decoration-* longhands, font-variant-numeric, and the colour keyword "inherit".
UNTRUSTED_CSS = frozenset(
    """backface-visibility background background-attachment background-clip background-color background-image
    background-origin background-position background-repeat background-size border border-bottom border-bottom-color
    border-bottom-left-radius border-bottom-right-radius border-bottom-style border-bottom-width border-collapse
    border-color border-left border-left-color border-left-style border-left-width border-radius border-right
    border-right-color border-right-style border-right-width border-spacing border-style border-top border-top-color
    border-top-left-radius border-top-right-radius border-top-style border-top-width border-width bottom box
    box-shadow box-sizing caption-side clear clip color cursor direction display display-inside display-outside
    elevation empty-cells float font font-family font-size font-stretch font-style font-variant font-weight height
    left letter-spacing line-height list-style list-style-image list-style-position list-style-type margin
    margin-bottom margin-left margin-right margin-top max-height max-width min-height min-width opacity outline
    outline-color outline-style outline-width overflow overflow-wrap overflow-x overflow-y padding padding-bottom
    padding-left padding-right padding-top page-break-after page-break-before page-break-inside pause-after
    perspective pitch pitch-range position quotes resize richness right speak speak-header speak-numeral
    speak-punctuation speech-rate stress table-layout text-align text-decoration text-indent text-overflow
    text-shadow text-transform text-wrap top unicode-bidi vertical-align visibility volume white-space width
    word-break word-spacing word-wrap z-index zoom""".split()
)
# values those patterns reject although browsers take them (checked here so a view cannot silently lose a style)
_CSS_REJECTED = re.compile(r"var\(|url\(|calc\(|!important|\binherit\b|\bsticky\b|\banywhere\b|(?<![\d.])\.\d")
_CSS_VALUE = re.compile(r"[#%.,()\w\s/'-]+")


def css(**properties: Any) -> str:
    """Keyword arguments (``_`` for ``-``) -> the inside of a ``style="..."`` attribute that survives untrusted.

    Raises ``ValueError`` for a property the notebook sanitizers drop or a value they would reject, so every view
    reads the same trusted or not. ``None`` values are left out.

    >>> css(border_left="3px solid #2471a3", padding="2px 6px")
    'border-left:3px solid #2471a3;padding:2px 6px'
    """
    out = []
    for key, value in properties.items():
        if value is None:
            continue
        name, value = key.replace("_", "-"), str(value).strip()
        if name not in UNTRUSTED_CSS:
            raise ValueError(f"untrusted notebooks drop the CSS property {name!r}")
        if not _CSS_VALUE.fullmatch(value) or _CSS_REJECTED.search(value):
            raise ValueError(f"untrusted notebooks drop {name}: {value!r}")
        out.append(f"{name}:{value}")
    return attr(";".join(out))


_ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td", "span",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}, "code": {"class"}}


@lru_cache(maxsize=1)
def _markdown_renderer():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").enable("strikethrough")


def markdown(source: Any) -> str:
    """Markdown -> sanitized HTML. Raw HTML in the source appears as text; links are http(s)/mailto only."""
    import nh3

    rendered = _markdown_renderer().render(clean_chars(source))
    return nh3.clean(
        rendered,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


_DATA_MIMES = frozenset({"image/png", "image/jpeg", "audio/wav"})


def data_uri(mime: str, data: bytes) -> str:
    """Bytes -> a ``data:`` URI for ``src="..."``: only image/png, image/jpeg and audio/wav, base64 (no quote, no
    angle bracket, no ``javascript:`` can appear in it).

    :param mime: One of image/png, image/jpeg, audio/wav.
    :param data: The file's bytes (encoded by kanibook: a thumbnail it drew, a WAV it wrote).
    """
    import base64

    if mime not in _DATA_MIMES:
        raise ValueError(f"data_uri takes only {sorted(_DATA_MIMES)}, not {mime!r}")
    return f"data:{mime};base64,{base64.b64encode(bytes(data)).decode('ascii')}"


def json_for_script(data: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``</script>``, ``<!--`` or line separators can end or break it."""
    dumped = json.dumps(data, ensure_ascii=False)
    return (
        dumped.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


# CommonMark lets a backslash escape any ASCII punctuation character
_MD_PUNCTUATION = re.compile(r"([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")


def markdown_literal(s: Any) -> str:
    """Text -> Markdown source that renders as exactly that text (every punctuation mark backslash-escaped).

    Line breaks are kept as hard breaks, so no renderer can turn the text into HTML, links or formatting.
    """
    lines = _MD_PUNCTUATION.sub(r"\\\1", clean_chars(s)).split("\n")
    return "\\\n".join(lines)


def markdown_inert(s: Any) -> str:
    """Markdown -> Markdown source with its formatting kept but raw HTML, autolinks and links made inert.

    ``<`` and ``&`` become entities (raw HTML shows as text); backslashes and square brackets are escaped (no link
    or image can form, so no ``javascript:`` URL can be followed), whatever renderer reads the file.
    """
    out = clean_chars(s).replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;")
    return out.replace("[", "\\[").replace("]", "\\]")
