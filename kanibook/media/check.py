"""Refuse media a model cannot take, before anything is generated.

kani's ``HuggingEngine`` silently drops an image sent to a text-only model (the reply then answers a question about a
picture it never saw) and an audio part sent to a model whose processor has no audio feature extractor.
:func:`check_media` turns both into one :class:`~kanibook.exceptions.MediaError` line that says what to do.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..exceptions import MediaError

__all__ = ["check_media", "media_in", "media_kinds"]


def media_in(messages: Iterable[Any]) -> list:
    """The kani-multimodal-core parts of ``messages`` (``ChatMessage`` objects or kani queries), in order."""
    from .parts import is_media_part

    found = []
    for message in messages:
        parts = getattr(message, "parts", message)
        if isinstance(parts, (list, tuple)):
            found.extend(p for p in parts if is_media_part(p))
    return found


def media_kinds(parts: Iterable[Any]) -> set[str]:
    """``{"image", "audio", "video"}`` (those present) for a list of parts."""
    kinds = set()
    for part in parts:
        name = type(part).__name__
        kinds.add({"ImagePart": "image", "AudioPart": "audio", "VideoPart": "video"}.get(name, name))
    return kinds


def check_media(engine: Any, messages: Iterable[Any]) -> None:
    """Raise :class:`MediaError` if ``messages`` hold a kind of media the engine's model cannot take.

    Only engines built on kani's ``HuggingEngine`` (what the processor can take is known) and kani's
    ``LlamaCppEngine`` (text only) are checked; other engines are left to report for themselves.

    :param engine: A kani engine (wrapper engines are unwrapped).
    :param messages: ``ChatMessage`` objects, or kani queries (lists of parts).
    """
    kinds = media_kinds(media_in(messages))
    if not kinds:
        return
    from kani.engines.base import WrapperEngine

    while isinstance(engine, WrapperEngine):
        engine = engine.engine
    names = {c.__name__ for c in type(engine).__mro__}
    if "LlamaCppEngine" in names:
        _refuse(kinds, engine, "llama.cpp runs text only here", set())
        return
    if "HuggingEngine" not in names:
        return
    accepted = processor_accepts(engine._processor_or_tokenizer)
    _refuse(kinds, engine, "", accepted)


def processor_accepts(processor: Any) -> set[str]:
    """The kinds of media a transformers processor (or tokenizer: none) takes."""
    try:
        from transformers import ProcessorMixin
    except ImportError:  # pragma: no cover
        return set()
    if not isinstance(processor, ProcessorMixin):
        return set()
    accepted = set()
    if getattr(processor, "image_processor", None) is not None:
        accepted.add("image")
    if getattr(processor, "feature_extractor", None) is not None or getattr(processor, "audio_processor", None):
        accepted.add("audio")
    if getattr(processor, "video_processor", None) is not None:
        accepted.add("video")
    return accepted


def _refuse(kinds: set[str], engine: Any, why: str, accepted: set[str]) -> None:
    missing = sorted(kinds - accepted)
    if not missing:
        return
    model = getattr(engine, "model_id", None) or type(engine).__name__
    model = str(model).rsplit("/", 1)[-1][:60]
    if not accepted:
        what = why or "it is a text-only model (no processor for images or audio)"
        hint = "load a multimodal model (e.g. a Gemma 3 or Qwen2-Audio) or send the text alone"
    else:
        what = f"its processor takes {' and '.join(sorted(accepted))} only"
        hint = f"remove the {' and '.join(missing)} or load a model that takes {'/'.join(missing)}"
    raise MediaError(
        f"The model {model!r} cannot take {' or '.join(missing)}: {what}; {hint}. Nothing was generated."
    )
