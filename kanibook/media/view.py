"""What a message's media look like in a notebook: thumbnails and audio players (:class:`MediaView`).

Also :func:`media_from_variables`, which turns the notebook variable names given to ``%%chat --image/--audio`` into
parts with captions.
"""

from __future__ import annotations

import io
import os
from typing import Any, Iterable

from ..exceptions import MediaError
from .parts import as_part, describe_part

__all__ = ["MediaView", "media_item", "media_from_variables"]

THUMBNAIL_SIDE = 160
#: Longer sounds get a label, not an embedded player (a data URI this size would weigh down the notebook).
MAX_PLAYER_BYTES = 4 * 2**20


def media_item(part: Any, caption: str = ""):
    """A part as a :class:`~kanibook.render.media.MediaItem`: a PNG thumbnail (at most 160 px a side) or a WAV file.

    :param part: An ``ImagePart`` or ``AudioPart``.
    :param caption: Where it came from (a variable or file name).
    """
    from ..render.media import MediaItem

    label = describe_part(part)
    if type(part).__name__ == "AudioPart":
        if len(part.raw) > MAX_PLAYER_BYTES:
            return MediaItem("audio", "audio/wav", b"", f"{label} (too long for a player here)", caption)
        return MediaItem("audio", "audio/wav", part.as_wav_bytes(), label, caption)
    image = part.image.copy()
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return MediaItem("image", "image/png", buffer.getvalue(), label, caption)


class MediaView:
    """A message's images and sounds, shown as captioned thumbnails and audio players.

    :param parts: ``ImagePart`` / ``AudioPart`` objects (other parts are skipped).
    :param captions: One caption per part (a variable or file name), or None.
    """

    def __init__(self, parts: Iterable[Any], captions: Iterable[str] | None = None):
        parts = list(parts)
        captions = list(captions) if captions is not None else [""] * len(parts)
        kept = [(p, c) for p, c in zip(parts, captions) if type(p).__name__ in ("ImagePart", "AudioPart")]
        self.items = [media_item(p, c) for p, c in kept]

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ..render.media import media_html, media_plain

        return {"text/plain": media_plain(self.items), "text/html": media_html(self.items)}


def media_from_variables(images: list[str], audios: list[str], namespace: dict) -> tuple[list, list[str]]:
    """The parts named by ``%%chat --image NAME`` / ``--audio NAME``, and their captions.

    :param images: Variable names holding images (a PIL image, an array, a path).
    :param audios: Variable names holding sounds (``(samples, rate)``, a WAV path, an ``AudioPart``).
    :param namespace: The notebook's variables.
    :raises MediaError: for a name that is not defined, or a value that is not the kind asked for.
    """
    parts, captions = [], []
    for kind, names in (("image", images), ("audio", audios)):
        for name in names:
            if name not in namespace:
                raise MediaError(f"--{kind} {name}: no variable {name!r} in the notebook; set {name} = ... first.")
            value = namespace[name]
            part = as_part(value)
            got = "audio" if type(part).__name__ == "AudioPart" else "image"
            if got != kind:
                raise MediaError(f"--{kind} {name}: {name!r} holds {describe_part(part)}; pass it with --{got}.")
            caption = name
            if isinstance(value, (str, os.PathLike)):
                caption += f" ({os.path.basename(os.fspath(value))})"
            parts.append(part)
            captions.append(caption)
    return parts, captions
