"""What a chat template did to a conversation, as data: the one small type the view, the layout and the refusal
messages share (kept apart so that none of them imports another for it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TemplateNote"]


@dataclass(frozen=True)
class TemplateNote:
    """One thing the chat template did to the conversation that the messages alone do not show.

    :param kind: ``"dropped"`` (a message is not in the prompt), ``"merged"`` (its text is inside another message's
        turn), ``"bare"`` (its text stands alone, without a role marker: DeepSeek-V3's system text), ``"moved"`` (its
        text comes after a later message's), ``"repeated"`` (rendered more than once),
        ``"rewritten"`` (part of its text is not in the prompt), ``"added"`` (template text of its own, e.g. a
        default system prompt), ``"date"`` (today's date), ``"tools"`` (tool definitions), ``"fixed"`` (the
        conversation was changed so that the template accepts it).
    :param message_index: The message concerned (index in :attr:`PromptView.messages`), or None.
    :param text: One line for a person, e.g. ``"#1 system: merged into #2 user's turn"``.
    :param tokens: How many tokens it concerns, where that is meaningful (else 0).
    """

    kind: str
    message_index: int | None
    text: str
    tokens: int = 0
