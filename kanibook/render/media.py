"""Images and sounds of a message as HTML: a thumbnail (``<img>`` from a data URI) or an audio player, captioned.

Pure: it takes what :mod:`kanibook.media.view` prepared (kind, encoded bytes, label, caption) and returns markup;
the bytes become ``data:`` URIs through :func:`kanibook.render.safe.data_uri`, captions through
:func:`kanibook.render.safe.text`, so a hostile file name or caption stays text.
"""

from __future__ import annotations

from typing import NamedTuple

from . import safe

__all__ = ["MediaItem", "media_html", "media_plain", "CSS"]

# the look is on the elements (safe.css), so a saved notebook opened untrusted (<style> removed) shows the same row
# of captioned thumbnails; the <style> only adds what inline styles untrusted cannot (crisp pixels of tiny images)
CSS = ".kb-media-item img{image-rendering:pixelated}"
_ROW = safe.css(margin="4px 0")
_ITEM = safe.css(display="inline-block", vertical_align="top", margin="0 8px 4px 0", font_size="smaller")
_IMG = safe.css(display="block", max_width="160px", max_height="160px", border="1px solid #ccc")
_CAPTION = safe.css(opacity="0.75", max_width="240px", overflow_wrap="break-word")


class MediaItem(NamedTuple):
    """One medium ready to show.

    :param kind: ``"image"`` or ``"audio"``.
    :param mime: The encoded bytes' type (image/png, image/jpeg, audio/wav).
    :param data: The encoded bytes (a thumbnail, a WAV file); empty: the label alone, no player.
    :param label: What it is, e.g. ``"image 28×28"``.
    :param caption: Where it came from (a variable or file name), or "".
    """

    kind: str
    mime: str
    data: bytes
    label: str
    caption: str = ""


def media_plain(items: list[MediaItem]) -> str:
    """One line per medium: ``[image 28×28: cat.png]``."""
    return "\n".join(f"[{it.label}{': ' + safe.clean_chars(it.caption) if it.caption else ''}]" for it in items)


def media_html(items: list[MediaItem], *, with_css: bool = True) -> str:
    """The media as a row of captioned thumbnails and audio players.

    :param items: What to show.
    :param with_css: Include the ``<style>`` element (once per output).
    """
    cells = []
    for it in items:
        src = safe.attr(safe.data_uri(it.mime, it.data))
        title = safe.attr(f"{it.label} {it.caption}".strip())
        if not it.data:
            body = ""
        elif it.kind == "image":
            body = f'<img src="{src}" alt="{safe.attr(it.label)}" title="{title}" style="{_IMG}">'
        else:
            body = f'<audio controls preload="metadata" src="{src}" title="{title}"></audio>'
        caption = safe.text(it.label + (f" \u00b7 {it.caption}" if it.caption else ""))
        cells.append(f'<figure class="kb-media-item kb-media-{safe.attr(it.kind)}" style="{_ITEM}">{body}'
                     f'<figcaption style="{_CAPTION}">{caption}</figcaption></figure>')  # fmt: skip
    style = f"<style>{CSS}</style>" if with_css else ""
    return f'{style}<div class="kb-media" style="{_ROW}">{"".join(cells)}</div>'
