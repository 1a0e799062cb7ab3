"""The prompt view's objects: :class:`PromptView` (tokens grouped by message, the context they fill, what the template
did) and :class:`PromptComparison` (two prompts of one conversation with a token-level diff).

Build them with :func:`kanibook.show_prompt` / :func:`kanibook.compare_prompts` (:mod:`kanibook.prompt.show`).
"""

from __future__ import annotations

import difflib
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from .notes import TemplateNote
from .tokens import SPECIAL, TEMPLATE  # token flag bits (that module imports nothing heavy at import time)

__all__ = ["PromptView", "PromptComparison", "Token", "Segment", "PlaceholderRun", "TemplateNote"]


class Token(NamedTuple):
    """One token of the prompt.

    ``text`` is the prompt text the token covers (the tail pieces of a character split over several byte-level tokens
    cover ``""``); ``segment`` indexes :attr:`PromptView.segments`; ``is_template`` marks template scaffolding (role
    headers, end-of-turn markers, the generation prompt) as opposed to the message's own text.
    """

    position: int
    id: int
    text: str
    segment: int
    is_special: bool
    is_template: bool


@dataclass(frozen=True)
class Segment:
    """A run of tokens from one message, or template text that belongs to no message.

    :param role: ``"system"``, ``"user"``, ``"assistant"``, ``"function"``, or ``"template"``.
    :param start: The first token's position; ``end`` is one past the last.
    :param message_index: The message's index in :attr:`PromptView.messages` (None for template segments).
    :param content_tokens: How many of the tokens are the message's own text (the rest is template scaffolding).
    """

    role: str
    label: str
    start: int
    end: int
    message_index: int | None = None
    content_tokens: int = 0
    preview: str = ""

    @property
    def count(self) -> int:
        return self.end - self.start


class PlaceholderRun(NamedTuple):
    """A run of one repeated special token, e.g. an ``<image>`` placeholder expanded by the processor.

    ``media`` names what the processor made of that image or sound, e.g. ``"pixel_values 3×28×28"`` ("" if unknown).
    """

    start: int
    count: int
    id: int
    text: str
    multimodal: bool
    media: str = ""


class PromptView:
    """The exact prompt a model receives, as tokens grouped by message, with the context it uses.

    Build it with :func:`show_prompt`. It displays itself in a notebook (``_repr_mimebundle_``) and in a terminal.
    ``segments`` are runs of tokens in prompt order: a message whose text the template put inside another message's
    turn has several (:meth:`segments_of`); one the template dropped has an empty one. ``template_notes`` lists what
    the template did (:class:`TemplateNote`).
    """

    def __init__(
        self,
        *,
        token_ids: list[int],
        texts: list[str],
        flags: list[int],
        token_segments: list[int],
        segments: list[Segment],
        messages: list,
        context_size: int | None,
        reply_tokens: int,
        dropped: list | None = None,
        note: str = "",
        placeholder_ids: frozenset[int] = frozenset(),
        media_shapes: dict | None = None,
        title: str = "",
        element_id: str | None = None,
        template_notes: list[TemplateNote] | None = None,
    ):
        #: What the template did (dropped, merged, moved, rewrote a message; added text of its own).
        self.template_notes = list(template_notes or [])
        self.token_ids = token_ids
        self._texts, self._flags, self._seg = texts, flags, token_segments
        self.segments = segments
        #: The messages the prompt was built from (after kani dropped any to fit).
        self.messages = messages
        self.context_size = context_size
        #: Tokens kept free for the reply (``max_new_tokens``, or kani's ``desired_response_tokens``).
        self.reply_tokens = reply_tokens
        #: Messages of the chat history kani leaves out to fit the context (oldest first).
        self.dropped = list(dropped or [])
        self.note = note
        self.title = title
        self.element_id = element_id or f"kb-tokens-{uuid.uuid4().hex[:12]}"
        self.placeholder_runs = _with_media(_runs(token_ids, texts, flags, placeholder_ids), media_shapes or {})
        self._html: str | None = None

    @property
    def total(self) -> int:
        return len(self.token_ids)

    @property
    def free(self) -> int | None:
        """Tokens left after the prompt and the reply's room (negative: it does not fit)."""
        return None if self.context_size is None else self.context_size - self.total - self.reply_tokens

    @property
    def text(self) -> str:
        """The prompt text the tokens cover."""
        return "".join(self._texts)

    @cached_property
    def tokens(self) -> list[Token]:
        return [
            Token(i, t, x, s, bool(f & SPECIAL), bool(f & TEMPLATE))
            for i, (t, x, s, f) in enumerate(zip(self.token_ids, self._texts, self._seg, self._flags))
        ]

    def segments_of(self, message_index: int) -> list[Segment]:
        """The segments of one message (more than one where the template put its text inside another's turn)."""
        return [s for s in self.segments if s.message_index == message_index]

    def counts(self) -> dict[str, int]:
        """Token count per segment label."""
        return {s.label: s.count for s in self.segments}

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from ..render import tokens

        if self._html is None:
            self._html = tokens.prompt_html(self, self.element_id)
        return {"text/plain": tokens.prompt_text(self), "text/html": self._html}

    def __repr__(self) -> str:
        ctx = f" of {self.context_size}" if self.context_size else ""
        return f"<PromptView {self.total} tokens{ctx}, {len(self.messages)} messages, {len(self.dropped)} dropped>"


class PromptComparison:
    """The same conversation as two prompts, with a token-level diff. Build it with :func:`compare_prompts`."""

    def __init__(self, a: PromptView, b: PromptView, labels: tuple[str, str], element_id: str | None = None):
        self.a, self.b, self.labels = a, b, labels
        self.element_id = element_id or f"kb-tokens-{uuid.uuid4().hex[:12]}"
        key_a = [(x, bool(f & SPECIAL)) for x, f in zip(a._texts, a._flags)]
        key_b = [(x, bool(f & SPECIAL)) for x, f in zip(b._texts, b._flags)]
        matcher = difflib.SequenceMatcher(None, key_a, key_b, autojunk=len(key_a) * len(key_b) > 4_000_000)
        #: difflib opcodes over tokens (compared by text and specialness, so two vocabularies compare too).
        self.opcodes: list[tuple[str, int, int, int, int]] = matcher.get_opcodes()
        self._html: str | None = None

    @property
    def same(self) -> bool:
        return all(op[0] == "equal" for op in self.opcodes)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from ..render import tokens

        if self._html is None:
            self._html = tokens.comparison_html(self, self.element_id)
        return {"text/plain": tokens.comparison_text(self), "text/html": self._html}

    def __repr__(self) -> str:
        return f"<PromptComparison {self.a.total} vs {self.b.total} tokens, {'same' if self.same else 'different'}>"


def _runs(ids: list[int], texts: list[str], flags: list[int], placeholder_ids: frozenset[int]) -> list[PlaceholderRun]:
    """Runs of one repeated special token (placeholders a processor expanded, e.g. ``<image>`` x N)."""
    runs, i, n = [], 0, len(ids)
    while i < n:
        j = i + 1
        if flags[i] & SPECIAL or ids[i] in placeholder_ids:
            while j < n and ids[j] == ids[i]:
                j += 1
            multimodal = ids[i] in placeholder_ids
            if j - i >= (2 if multimodal else 8):
                runs.append(PlaceholderRun(i, j - i, ids[i], texts[i] or texts[j - 1], multimodal))
        i = j
    return runs


def _with_media(runs: list[PlaceholderRun], shapes: dict[str, tuple[int, ...]]) -> list[PlaceholderRun]:
    """Name each media run's processor input: the k-th run of a placeholder token is item k of the one input whose
    first dimension counts those runs (``pixel_values [2, 3, 28, 28]`` for two ``<image>`` runs)."""
    out, by_id = list(runs), {}
    for index, run in enumerate(runs):
        if run.multimodal:
            by_id.setdefault(run.id, []).append(index)
    for indexes in by_id.values():
        matches = [
            (name, shape) for name, shape in shapes.items()
            if shape and shape[0] == len(indexes) and not any(w in name for w in ("mask", "sizes", "lengths"))
        ]  # fmt: skip
        if len(matches) == 1:
            name, shape = matches[0]
            for index in indexes:
                dims = "\u00d7".join(str(d) for d in shape[1:])
                out[index] = out[index]._replace(media=f"{name} {dims}")
    return out
