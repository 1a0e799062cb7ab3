"""A chat template that refuses a conversation: which message, what the template wants, and (only if asked) the
nearest conversation it accepts.

The template's own words come from its ``raise_exception`` message; the message is the first one whose prefix of the
conversation the template refuses. :func:`nearest_accepted` tries, in turn, the usual fixes a person would make:
system messages merged into the next user message, then consecutive messages of one role merged into one.
"""

from __future__ import annotations

import warnings

from ..exceptions import KanibookError
from .notes import TemplateNote

__all__ = ["refusal_error", "nearest_accepted"]


def _builds(engine, messages: list, functions) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine.build_prompt(messages, functions)
    except Exception:
        return False
    return True


def _reason(error: Exception) -> str:
    line = (str(error).strip().splitlines() or [type(error).__name__])[0].strip()
    return line or type(error).__name__


def refusal_error(engine, messages: list, functions, error: Exception) -> KanibookError:
    """One line: which message the template refuses and what it wants."""
    if not messages:
        return KanibookError("The prompt cannot be built: the conversation is empty; pass at least one message, e.g. [ChatMessage.user('Hi')].")
    reason = _reason(error)
    where = "this conversation"
    for k in range(1, len(messages) + 1):
        if not _builds(engine, messages[:k], functions):
            where = f"message #{k} ({messages[k - 1].role.value})"
            break
    return KanibookError(
        f"The chat template refuses {where}: {reason}{'' if reason.endswith('.') else '.'} Change the conversation, or pass fix=True to see the nearest "
        "conversation this template accepts."
    )


def _merge_system(messages: list) -> tuple[list, list[str]]:
    from kani import ChatMessage, ChatRole

    out, pending, done = [], [], []
    for m in messages:
        if m.role == ChatRole.SYSTEM:
            pending.append(m.text or "")
            continue
        if pending and m.role == ChatRole.USER:
            out.append(ChatMessage.user("\n\n".join([*pending, m.text or ""])))
            done.append("system message merged into the next user message")
            pending = []
            continue
        out.append(m)
    if pending:
        out.insert(0, ChatMessage.user("\n\n".join(pending)))
        done.append("system message made a user message")
    return out, done


def _merge_runs(messages: list) -> tuple[list, list[str]]:
    from kani import ChatMessage, ChatRole

    out, done = [], []
    for m in messages:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.role == m.role
            and m.role in (ChatRole.USER, ChatRole.ASSISTANT)
            and not prev.tool_calls
            and not m.tool_calls
        ):
            out[-1] = ChatMessage(role=m.role, content="\n\n".join([prev.text or "", m.text or ""]))
            done.append(f"consecutive {m.role.value} messages merged")
            continue
        out.append(m)
    return out, done


def nearest_accepted(engine, messages: list, functions) -> tuple[list, list[TemplateNote]] | None:
    """The nearest conversation the template accepts, and notes saying what was changed; None if no fix works."""
    current, done = list(messages), []
    for fix in (_merge_system, _merge_runs):
        current, changes = fix(current)
        done += changes
        if changes and _builds(engine, current, functions):
            notes = [TemplateNote("fixed", None, f"not the conversation given: {c} (fix=True)") for c in dict.fromkeys(done)]
            return current, notes
    return None
