"""kanibook's errors: one root type, and messages that say what to do next."""

from __future__ import annotations

__all__ = [
    "KanibookError",
    "ModelNotFoundError",
    "MissingDependencyError",
    "DemoModelError",
    "GenerationError",
    "BusyError",
    "BadTextError",
    "UnsavableTextError",
    "MediaError",
]


class KanibookError(Exception):
    """Root of every error kanibook raises on purpose. The message is one line that says what to do."""


class ModelNotFoundError(KanibookError):
    """A model id is neither a local folder, nor in the Hugging Face cache, nor reachable on the Hub."""


class MissingDependencyError(KanibookError, ImportError):
    """An optional dependency is missing; the message names the ``pip install`` that fixes it."""


class DemoModelError(KanibookError):
    """The embedded demo model could not be fetched, verified or converted."""


class GenerationError(KanibookError):
    """The model failed while generating; the chat history up to the user's message is kept."""


class BusyError(KanibookError):
    """A reply is still being generated; stop it or wait before sending another message."""


class BadTextError(KanibookError, ValueError):
    """A message holds a character a model cannot receive (a lone surrogate); the conversation is unchanged."""


class UnsavableTextError(KanibookError, ValueError):
    """The conversation cannot be written in the chosen format; the file at the path is left as it was."""


class MediaError(KanibookError, ValueError):
    """An image or sound cannot be read, or the model cannot take it; nothing was generated."""


def check_text(text: str, what: str = "The message") -> None:
    """Refuse text with a lone surrogate (half of a broken emoji: no tokenizer can encode it), saying where.

    :raises BadTextError: naming the character and its position.
    """
    from ._files import find_lone_surrogate

    at = find_lone_surrogate(text)
    if at is not None:
        raise BadTextError(
            f"{what} holds a lone surrogate U+{ord(text[at]):04X} at character {at} (half of a broken emoji, "
            "which no tokenizer can encode): remove it or paste the text again; nothing was sent."
        )


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency, or raise a :class:`MissingDependencyError` naming the fix.

    :param module: The module to import, e.g. ``"bitsandbytes"``.
    :param extra: The kanibook extra that installs it, e.g. ``"quant"``.
    :param purpose: What it is needed for, for the message.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs the {module!r} package: run  pip install 'kanibook[{extra}]'"
        ) from None
