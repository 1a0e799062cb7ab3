"""Refuse media a model cannot take, before anything is generated.

kani's ``HuggingEngine`` silently drops an image sent to a text-only model (the reply then answers a question about a
picture it never saw) and an audio part sent to a model whose processor has no audio feature extractor.
:func:`check_media` turns both into one :class:`~kanibook.exceptions.MediaError` line that says what to do.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..exceptions import MediaError

__all__ = ["check_media", "accepted_media", "without_refused_media", "media_in", "media_kinds", "processor_accepts"]


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


def accepted_media(engine: Any) -> set[str] | None:
    """The kinds of media an engine's model takes; None when unknown (engines other than kani's Hugging Face and
    llama.cpp ones, which are left to report for themselves). Wrapper engines are unwrapped."""
    from kani.engines.base import WrapperEngine

    while isinstance(engine, WrapperEngine):
        engine = engine.engine
    names = {c.__name__ for c in type(engine).__mro__}
    if "LlamaCppEngine" in names:
        return set()
    if "HuggingEngine" in names:
        return processor_accepts(engine._processor_or_tokenizer)
    return None


def check_media(engine: Any, messages: Iterable[Any]) -> None:
    """Raise :class:`MediaError` if ``messages`` hold a kind of media the engine's model cannot take.

    :param engine: A kani engine (see :func:`accepted_media` for which are checked).
    :param messages: ``ChatMessage`` objects, or kani queries (lists of parts).
    """
    kinds = media_kinds(media_in(messages))
    if not kinds:
        return
    accepted = accepted_media(engine)
    if accepted is not None:
        _refuse(kinds, engine, accepted)


def without_refused_media(engine: Any, messages: list) -> list:
    """``messages`` with the media parts the model cannot take removed (their text kept), for token counting only.

    kani counts tokens before generating and swallows the errors of that count; counting without the refused parts
    lets the clear :class:`MediaError` of :func:`check_media` come from the generation step instead.
    """
    accepted = accepted_media(engine)
    if accepted is None or not media_in(messages):
        return messages
    out = []
    for message in messages:
        refused = [p for p in media_in([message]) if not media_kinds([p]) <= accepted]
        if refused:
            kept = [p for p in message.parts if not any(p is r for r in refused)]
            if all(isinstance(p, str) for p in kept):
                message = message.copy_with(text="".join(kept))
            else:
                message = message.copy_with(parts=kept)
        out.append(message)
    return out


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


def _refuse(kinds: set[str], engine: Any, accepted: set[str]) -> None:
    missing = sorted(kinds - accepted)
    if not missing:
        return
    model = getattr(engine, "model_id", None) or type(engine).__name__
    model = str(model).rsplit("/", 1)[-1][:60]
    if not accepted:
        what = "it is a text-only model (no processor for images or audio)"
        hint = "load a multimodal model (e.g. a Gemma 3 or Qwen2-Audio) or send the text alone"
    else:
        what = f"its processor takes {' and '.join(sorted(accepted))} only"
        hint = f"remove the {' and '.join(missing)} or load a model that takes {'/'.join(missing)}"
    raise MediaError(
        f"The model {model!r} cannot take {' or '.join(missing)}: {what}; {hint}. Nothing was generated."
    )
