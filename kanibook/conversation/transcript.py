"""Export a kani conversation: JSON that kani loads back (``Kani.load``), and a readable Markdown transcript.

The JSON is exactly kani's own save format (``kani.utils.saveload.SavedKani``: the always-included messages, the
system prompt among them, and the chat history), so ``Kani(engine).load(path)`` restores the conversation. kanibook
keeps its own notes about a message in ``message.extra["kanibook"]`` (e.g. ``{"stopped": true}`` for a reply cut
short by Stop, ``{"branches": [...]}`` for a "what if" reply: the reply it replaced); kani saves and loads ``extra``
with the message.

Images and sounds: the JSON embeds them (kani-multimodal-core's own format: a PNG or WAV data URI per part, so
``Kani.load`` gives them back); the Markdown transcript keeps a reference, ``[image 28×28: cat.png]`` (the kind,
size or duration, and the file or variable name kept in ``message.extra["kanibook"]["media"]``), not the data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._files import find_lone_surrogate, write_text_atomic
from ..exceptions import UnsavableTextError
from ..render import safe
from ..render.chat import pretty_arguments

__all__ = [
    "branches_of",
    "is_stopped",
    "mark_branched",
    "load_json",
    "mark_stopped",
    "message_text",
    "save_json",
    "save_markdown",
    "to_json",
    "to_markdown",
]

_EXTRA_KEY = "kanibook"


# ---- kanibook's notes on a message ----


def mark_stopped(message) -> None:
    """Note on a kani ``ChatMessage`` that it was cut short by Stop (kept in ``extra``, saved with it)."""
    notes = dict(message.extra.get(_EXTRA_KEY) or {})
    notes["stopped"] = True
    message.extra = {**message.extra, _EXTRA_KEY: notes}


def is_stopped(message) -> bool:
    """True if the message was cut short by Stop (see :func:`mark_stopped`)."""
    notes = message.extra.get(_EXTRA_KEY) if isinstance(message.extra, dict) else None
    return bool(isinstance(notes, dict) and notes.get("stopped"))


def mark_branched(message, original, dropped, token_index: int, alternative: str) -> None:
    """Note on a "what if" reply what it replaced: the original reply, and the messages that followed it.

    :param message: The new reply.
    :param original: The reply it replaces.
    :param dropped: The messages after the original (they answered it, so they left the conversation).
    :param token_index: The token where the new reply departs from the original.
    :param alternative: The text of the token chosen there.
    """
    notes = dict(message.extra.get(_EXTRA_KEY) or {})
    earlier = list(branches_of(original))  # a branch of a branch keeps the whole lineage
    earlier.append(
        {
            "token_index": int(token_index),
            "alternative": str(alternative),
            "original": message_text(original) if original.content is not None else "",
            "dropped": [
                {"role": m.role.value, "text": message_text(m) if m.content is not None else ""} for m in dropped
            ],
        }
    )
    notes["branches"] = earlier
    message.extra = {**message.extra, _EXTRA_KEY: notes}


def branches_of(message) -> list[dict]:
    """The replies this one replaced by "what if" branches (oldest first; see :func:`mark_branched`)."""
    notes = message.extra.get(_EXTRA_KEY) if isinstance(message.extra, dict) else None
    found = notes.get("branches") if isinstance(notes, dict) else None
    return list(found) if isinstance(found, list) else []


def message_text(message) -> str:
    """A message's text; images and sounds appear as a reference, ``[image 28×28: cat.png]`` (with the file name
    the panel kept, see :func:`kanibook.media.parts.media_names`), other non-text parts as ``[TypeName]``."""
    if all(isinstance(p, str) for p in message.parts):
        return "".join(message.parts)
    from ..media.parts import media_names, part_label

    names = iter(media_names(message))
    out = []
    for p in message.parts:
        if isinstance(p, str):
            out.append(p)
        else:
            name = next(names, "") if type(p).__name__ in ("ImagePart", "AudioPart", "VideoPart") else ""
            out.append(f"[{part_label(p, name)}]")
    return "".join(out)


# ---- JSON (kani's format) ----


def _saved(ai):
    from kani.utils.saveload import SavedKani

    return SavedKani(always_included_messages=ai.always_included_messages, chat_history=ai.chat_history)


def to_json(ai, *, indent: int | None = 2) -> str:
    """The conversation of a ``kani.Kani`` as JSON in kani's own save format.

    :param ai: The ``Kani`` whose system prompt, always-included messages and chat history are exported.
    :param indent: JSON indentation (None for one line).
    """
    _refuse_unencodable(ai)
    return _saved(ai).model_dump_json(fallback=repr, indent=indent)


def _refuse_unencodable(ai) -> None:
    """kani's JSON format (read back by pydantic) cannot hold a lone surrogate, escaped or not: say which message."""
    for i, message in enumerate([*ai.always_included_messages, *ai.chat_history], start=1):
        text = "".join(p for p in message.parts if isinstance(p, str))  # .text would coerce images to strings
        at = find_lone_surrogate(text)
        if at is not None:
            raise UnsavableTextError(
                f"Message #{i} ({message.role.value}) holds a lone surrogate U+{ord(text[at]):04X} at character {at} "
                "(half of a broken emoji), which kani's JSON format cannot hold: edit or remove that message, then "
                "save again (nothing was written)."
            )


def save_json(ai, path: str | os.PathLike) -> Path:
    """Write :func:`to_json` to ``path``; ``kani.Kani.load(path)`` reads it back.

    :param ai: The ``Kani`` to export.
    :param path: The file to write (replaced atomically: a failure leaves the old file intact).
    """
    return write_text_atomic(path, to_json(ai))


def load_json(path: str | os.PathLike):
    """Read an exported conversation: a ``SavedKani`` with ``always_included_messages`` and ``chat_history``.

    :param path: A file written by :func:`save_json` or by ``Kani.save(..., save_format="json")``.
    """
    from kani.utils.saveload import load

    return load(path)


# ---- Markdown ----


def _fence(body: str, info: str = "") -> str:
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{safe.clean_chars(body)}\n{fence}"


def _message_markdown(message) -> str:
    role = message.role.value
    title = {"user": "You", "assistant": "Assistant", "system": "System", "function": "Function"}.get(role, role)
    if message.name:
        title += f" · {safe.markdown_literal(message.name)}"
    blocks = [f"### {title}"]
    text = message_text(message) if message.content is not None else ""
    if role == "assistant":
        if text:
            blocks.append(safe.markdown_inert(text))
        for call in message.tool_calls or ():
            blocks.append(f"**Function call** {safe.markdown_literal(call.function.name)}")
            blocks.append(_fence(pretty_arguments(call.function.arguments), "json"))
        if is_stopped(message):
            blocks.append("*(stopped)*")
        for b in branches_of(message):
            picked = safe.markdown_literal(str(b.get("alternative", "")))
            blocks.append(
                f"*(branched at token \\#{int(b.get('token_index', 0))}, where the model was made to pick* "
                f"“{picked}”*; it replaced this reply:)*"
            )
            original = safe.markdown_inert(str(b.get("original", "")))
            blocks.append("\n".join("> " + line for line in original.split("\n")))
            if b.get("dropped"):
                blocks.append(f"*({len(b['dropped'])} later message(s) that followed the original were dropped)*")
    elif role == "function":
        label = "**Error**" if message.is_tool_call_error else "**Result**"
        blocks.append(label)
        blocks.append(_fence(text))
    else:
        blocks.append(safe.markdown_literal(text))
    return "\n\n".join(blocks)


def to_markdown(ai=None, *, messages: Iterable[Any] | None = None, title: str = "Chat transcript") -> str:
    """The conversation as Markdown: user and system text literal, replies as Markdown, function calls as code.

    Whatever program renders the file, raw HTML and links from the conversation stay inert (see
    :func:`kanibook.render.safe.markdown_inert`).

    :param ai: A ``Kani`` (its always-included messages and chat history are exported).
    :param messages: Or the messages themselves.
    :param title: The document's heading.
    """
    if messages is None:
        if ai is None:
            from ..exceptions import KanibookError

            raise KanibookError("Pass a Kani (to_markdown(ai)) or messages=[...] to export.")
        messages = [*ai.always_included_messages, *ai.chat_history]
    parts = [f"# {safe.markdown_literal(title)}"]
    parts.extend(_message_markdown(m) for m in messages)
    return "\n\n".join(parts) + "\n"


def save_markdown(ai, path: str | os.PathLike, *, title: str = "Chat transcript") -> Path:
    """Write :func:`to_markdown` to ``path``.

    :param ai: The ``Kani`` to export.
    :param path: The file to write (replaced atomically: a failure leaves the old file intact).
    :param title: The document's heading.
    """
    # A lone surrogate cannot be UTF-8: it is written as its escape (\\ud800), visibly, instead of failing.
    return write_text_atomic(path, to_markdown(ai, title=title), errors="backslashreplace")
