"""Images and sounds from Python as kani-multimodal-core parts (``ImagePart``, ``AudioPart``).

:func:`as_part` accepts what a notebook holds::

    as_part(pil_image)                  # a PIL image
    as_part(array)                      # an image as a numpy array (H x W, H x W x 3 or 4; uint8, or floats in 0..1)
    as_part((samples, 16000))           # audio: a 1-D (or samples x channels) array and its sample rate
    as_part(samples, sample_rate=16000) # the same
    as_part("photo.png")                # an image file (anything Pillow opens)
    as_part("clip.wav")                 # a WAV file (read with the standard library: no ffmpeg needed)

:func:`user_parts` makes the query ``Kani.chat_round`` takes; :func:`user_message` a ``ChatMessage``. A file that
cannot be read, a URL (kanibook never downloads) or an object of another kind is refused with one
:class:`~kanibook.exceptions.MediaError` line that says what to do.
"""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path
from typing import Any

from ..exceptions import MediaError

__all__ = ["as_part", "user_parts", "user_message", "describe_part", "is_media_part", "media_names", "part_label"]

#: Where a message keeps its media's names (file or variable names): ``message.extra["kanibook"]["media"]``.
NOTE_KEY = "kanibook"

_AUDIO_SUFFIXES = {".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus", ".webm"}


def _core():
    from ..exceptions import require

    return require("kani.ext.multimodal_core", "multimodal", "Sending images or audio")


def is_media_part(obj: Any) -> bool:
    """Whether ``obj`` is a kani-multimodal-core part (image, audio, video)."""
    try:
        from kani.ext.multimodal_core.base import BaseMultimodalPart
    except ImportError:
        return False
    return isinstance(obj, BaseMultimodalPart)


def as_part(obj: Any, *, sample_rate: int | None = None):
    """One image or sound as a kani-multimodal-core part.

    :param obj: A PIL image, a numpy array, an ``(array, sample_rate)`` pair, a path to an image or WAV file, the
        bytes of one, or a part already (returned as is).
    :param sample_rate: For a bare numpy array: its sample rate, which makes it audio.
    :raises MediaError: for a file that cannot be read, a URL, or an object of another kind.
    """
    core = _core()
    if is_media_part(obj):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], int) and not isinstance(obj[1], bool):
        return audio_from_array(obj[0], obj[1])
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with kani-multimodal-core
        Image = None
    if Image is not None and isinstance(obj, Image.Image):
        return core.ImagePart(image=obj.copy())  # a copy: kani's ImagePart closes its image when collected
    if type(obj).__module__ == "numpy" and hasattr(obj, "ndim"):
        if sample_rate is not None:
            return audio_from_array(obj, sample_rate)
        return _image_from_array(obj)
    if isinstance(obj, (str, os.PathLike)):
        return _from_path(obj)
    if isinstance(obj, (bytes, bytearray)):
        return _from_bytes(bytes(obj), "the bytes given")
    raise MediaError(
        f"Cannot send a {type(obj).__name__} as media: pass a PIL image, a numpy array, (samples, sample_rate), "
        "or the path of an image or WAV file."
    )


def user_parts(text: str | None, *media: Any, sample_rate: int | None = None) -> list:
    """The query ``Kani.chat_round`` (and ``ChatSession.send``) take: the text, then each medium as a part.

    :param text: The message's text (may be empty).
    :param media: Images and sounds, in any form :func:`as_part` takes.
    :param sample_rate: The sample rate of bare numpy audio arrays.
    """
    parts: list = [text] if text else []
    parts.extend(as_part(m, sample_rate=sample_rate) for m in media)
    return parts


def user_message(text: str | None, *media: Any, sample_rate: int | None = None):
    """A user ``ChatMessage`` holding ``text`` and the media (see :func:`user_parts`)."""
    from kani import ChatMessage

    return ChatMessage.user(user_parts(text, *media, sample_rate=sample_rate))


def describe_part(part: Any) -> str:
    """A short plain label: ``"image 28×28"``, ``"audio 1.00 s at 16000 Hz"``."""
    core = _core()
    if isinstance(part, core.ImagePart):
        width, height = part.size
        return f"image {width}\u00d7{height}"
    if isinstance(part, core.AudioPart):
        return f"audio {part.duration:.2f} s at {part.sample_rate} Hz"
    return type(part).__name__


def media_names(message) -> list[str]:
    """The names (file or variable names) kept with a message's media, in order ("" where none)."""
    notes = message.extra.get(NOTE_KEY) if isinstance(getattr(message, "extra", None), dict) else None
    names = notes.get("media") if isinstance(notes, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []


def name_media(message, names: list[str]) -> None:
    """Keep the names of a message's media in ``message.extra`` (kani saves ``extra`` with the message)."""
    notes = dict(message.extra.get(NOTE_KEY) or {})
    notes["media"] = [str(n) for n in names]
    message.extra = {**message.extra, NOTE_KEY: notes}


def part_label(part: Any, name: str = "") -> str:
    """``"image 28×28: cat.png"`` for a media part, its type name for any other non-text part."""
    label = describe_part(part) if is_media_part(part) else type(part).__name__
    return f"{label}: {name}" if name else label


# ---- conversions ----


def audio_from_array(samples: Any, sample_rate: int):
    """An ``AudioPart`` from samples: floats in -1..1 or integers (16-bit scale); channels are averaged to mono.

    :param samples: A 1-D array, or samples x channels.
    :param sample_rate: Samples per second.
    """
    import numpy as np

    core = _core()
    try:
        rate = int(sample_rate)
        data = np.asarray(samples)
    except (TypeError, ValueError):
        raise MediaError("Audio must be a numeric array with an integer sample rate, e.g. (samples, 16000).") from None
    if rate <= 0 or data.ndim not in (1, 2) or data.size == 0 or not np.issubdtype(data.dtype, np.number):
        raise MediaError(
            f"Audio must be a non-empty 1-D array (or samples x channels) with a positive sample rate; got shape "
            f"{data.shape} at {sample_rate} Hz."
        )
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] <= 8 else data.mean(axis=0)
    if np.issubdtype(data.dtype, np.floating):
        data = np.clip(np.nan_to_num(data), -1.0, 1.0) * 32767.0
    return core.AudioPart(raw=np.asarray(data).astype("<i2").tobytes(), sample_rate=rate)


def _image_from_array(array: Any):
    import numpy as np
    from PIL import Image

    data = np.asarray(array)
    if data.ndim == 1:
        raise MediaError("A 1-D array is audio: pass (samples, sample_rate) or sample_rate=..., not the array alone.")
    if not (data.ndim == 2 or (data.ndim == 3 and data.shape[2] in (1, 3, 4))) or 0 in data.shape:
        raise MediaError(f"An image array must be H x W, or H x W x 1, 3 or 4 channels; got shape {data.shape}.")
    if np.issubdtype(data.dtype, np.floating):
        data = np.clip(np.nan_to_num(data), 0.0, 1.0) * 255.0
    data = np.clip(data, 0, 255).astype(np.uint8)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    return _core().ImagePart(image=Image.fromarray(data))


def _from_path(path: str | os.PathLike):
    text = os.fspath(path)
    if "://" in text[:12]:
        raise MediaError(
            f"{text[:80]!r} is a URL: kanibook does not download media; save the file and pass its path."
        )
    p = Path(text).expanduser()
    if not p.is_file():
        raise MediaError(f"No file at {text!r}: check the path (relative paths start at {os.getcwd()!r}).")
    if p.suffix.lower() in _AUDIO_SUFFIXES:
        raise MediaError(f"{p.name!r}: only WAV audio is read here; convert it to WAV (e.g. with ffmpeg) and retry.")
    try:
        data = p.read_bytes()
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise MediaError(f"Could not read {text!r} ({why}): check its permissions.") from None
    return _from_bytes(data, repr(p.name))


def _from_bytes(data: bytes, name: str):
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _audio_from_wav(data, name)
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise MediaError(
            f"{name} is neither an image Pillow can open nor a WAV file: pass a PNG/JPEG/... image or a WAV file."
        ) from None
    return _core().ImagePart(image=image)


def _audio_from_wav(data: bytes, name: str):
    import numpy as np

    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise MediaError(f"{name} is not a readable WAV file ({e}): export it as 16-bit PCM WAV and retry.") from None
    if width == 1:
        samples = (np.frombuffer(frames, np.uint8).astype(np.int16) - 128) * 256
    elif width == 2:
        samples = np.frombuffer(frames, "<i2")
    elif width == 4:
        samples = (np.frombuffer(frames, "<i4") >> 16).astype(np.int16)
    else:
        raise MediaError(f"{name} has {8 * width}-bit samples: export it as 16-bit PCM WAV and retry.")
    if samples.size == 0:
        raise MediaError(f"{name} holds no audio: pick a WAV file with sound in it.")
    samples = samples[: samples.size - samples.size % channels].reshape(-1, channels)
    mono = samples.astype(np.int32).mean(axis=1).astype("<i2")
    return _core().AudioPart(raw=mono.tobytes(), sample_rate=rate)
