"""The templated prompt as the model receives it: token ids, who each token came from, the context it fills.

:func:`show_prompt` takes a ``Kani`` (what kani would send next, after dropping old messages to fit) or a
HuggingEngine plus messages, and returns a :class:`PromptView` that displays itself (HTML in a notebook, text in a
terminal) and exposes its data (``.token_ids``, ``.tokens``, ``.segments``, ``.total``, ``.context_size``).
:func:`compare_prompts` shows the same conversation through two pipelines or two models with a token-level diff.

The ids shown are exactly the ids ``engine.build_prompt(messages, functions)`` returns. Which message each token came
from is worked out for any template, by rendering prefixes of the conversation through the same pipeline and comparing
characters (see :mod:`kanibook._prompt_tokens`): the prompt is tokenized once, with offsets, so long conversations are
not re-tokenized prefix by prefix.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import uuid
from collections import UserDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from ._names import model_display_name
from ._prompt_tokens import SPECIAL, TEMPLATE  # token flag bits (that module imports nothing heavy at import time)
from .exceptions import KanibookError

__all__ = ["show_prompt", "compare_prompts", "PromptView", "PromptComparison", "Token", "Segment", "PlaceholderRun"]


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
    """A run of one repeated special token, e.g. an ``<image>`` placeholder expanded by the processor."""

    start: int
    count: int
    id: int
    text: str
    multimodal: bool


class PromptView:
    """The exact prompt a model receives, as tokens grouped by message, with the context it uses.

    Build it with :func:`show_prompt`. It displays itself in a notebook (``_repr_mimebundle_``) and in a terminal.
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
        title: str = "",
        element_id: str | None = None,
    ):
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
        self.placeholder_runs = _runs(token_ids, texts, flags, placeholder_ids)
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

    def counts(self) -> dict[str, int]:
        """Token count per segment label."""
        return {s.label: s.count for s in self.segments}

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from .render import tokens

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
        from .render import tokens

        if self._html is None:
            self._html = tokens.comparison_html(self, self.element_id)
        return {"text/plain": tokens.comparison_text(self), "text/html": self._html}

    def __repr__(self) -> str:
        return f"<PromptComparison {self.a.total} vs {self.b.total} tokens, {'same' if self.same else 'different'}>"


# ---------------------------------------------------------------- public functions


def show_prompt(target, messages=None, functions=None, *, max_new_tokens: int | None = None, element_id=None):
    """Show the exact prompt a model receives: its tokens, grouped by message, and the context it uses.

    :param target: A ``kani.Kani`` (its system prompt, always-included messages, chat history and functions: what it
        would send next, with the messages it drops to fit shown as dropped), or a HuggingEngine (e.g.
        ``kanibook.load()``) together with ``messages``.
    :param messages: The conversation (``ChatMessage`` list). With a ``Kani``: used in place of its chat history.
    :param functions: ``AIFunction`` list; default: the Kani's enabled functions (none for an engine).
    :param max_new_tokens: Room to keep for the reply; default: the Kani's ``desired_response_tokens``, or the
        engine's ``max_new_tokens``, or kani's default (a tenth of the context, at most 8192).
    :param element_id: The HTML element id (for deterministic output); default: a random one.
    """
    plan = _resolve(target, messages, functions, max_new_tokens)
    return _build_view(plan, element_id)


def compare_prompts(a, b, messages=None, functions=None, *, labels: tuple[str, str] | None = None, element_id=None):
    """The same conversation through two pipelines or two models, side by side, with a token-level diff.

    :param a: A HuggingEngine or ``Kani`` (its engine is used).
    :param b: Another one, e.g. the same model loaded with a hand-written ``prompt_pipeline=``.
    :param messages: The conversation; default: the first ``Kani``'s (system prompt, always-included, history).
    :param functions: ``AIFunction`` list; default: the first ``Kani``'s enabled functions.
    :param labels: Names for the two sides; default: the model folder and the kind of pipeline.
    :param element_id: The HTML element id (for deterministic output).
    """
    from kani import Kani

    kanis = [x for x in (a, b) if isinstance(x, Kani)]
    if messages is None:
        if not kanis:
            raise KanibookError("compare_prompts needs messages=[...] (or pass a Kani, whose conversation is used).")
        messages = kanis[0].always_included_messages + kanis[0].chat_history
    if functions is None and kanis:
        functions = kanis[0].get_enabled_functions()
    views = []
    for target in (a, b):
        engine = _engine_of(target)
        plan = _Plan(engine, engine.max_context_size, list(messages), functions, _default_reserve(engine))
        views.append(_build_view(plan, None))
    labels = labels or (_describe(_engine_of(a)), _describe(_engine_of(b)))
    if labels[0] == labels[1]:
        labels = (f"A: {labels[0]}", f"B: {labels[1]}")
    return PromptComparison(views[0], views[1], labels, element_id)


# ---------------------------------------------------------------- what is sent


def _engine_of(target):
    from kani import Kani
    from kani.engines.huggingface import HuggingEngine

    engine = target.engine if isinstance(target, Kani) else target
    if not isinstance(engine, HuggingEngine):
        raise KanibookError(
            f"The prompt view needs a local Hugging Face engine (kanibook.load(...)); got {type(engine).__name__}, "
            "whose prompt is built elsewhere."
        )
    return engine


def _default_reserve(engine) -> int:
    max_new = (getattr(engine, "hyperparams", None) or {}).get("max_new_tokens")
    ctx = engine.max_context_size or 0
    return int(max_new) if max_new else min(ctx // 10, 8192)


@dataclass
class _Plan:
    """What is sent: the engine, its context, the messages (after kani dropped any), functions, reply room."""

    engine: Any
    context: int | None
    messages: list
    functions: list | None
    reserve: int
    dropped: list = field(default_factory=list)
    note: str = ""
    prompt: Any = None  # what build_prompt returned for these messages, when kani already built it


def _resolve(target, messages, functions, max_new_tokens) -> _Plan:
    from kani import Kani

    engine = _engine_of(target)
    if max_new_tokens is not None and max_new_tokens < 0:
        raise KanibookError("max_new_tokens must be 0 or more.")
    if not isinstance(target, Kani):
        if not messages:
            raise KanibookError("Pass the conversation: show_prompt(engine, [ChatMessage.user('...'), ...]).")
        reserve = max_new_tokens if max_new_tokens is not None else _default_reserve(engine)
        return _Plan(engine, engine.max_context_size, list(messages), functions, reserve)
    ai = copy.copy(target)  # a shallow copy: kani's get_prompt reads it, nothing is changed on the caller's Kani
    if messages is not None:
        ai.chat_history = list(messages)
    if max_new_tokens is not None:
        ai.desired_response_tokens = max_new_tokens
    built = _reuse_prompts(ai, engine) if functions is None else {}
    fns = ai.get_enabled_functions() if functions is None else functions
    history = list(ai.chat_history)
    plan = _Plan(engine, ai.max_context_size, [], fns, ai.desired_response_tokens)
    try:
        sent = _run_sync(ai.get_prompt())
    except Exception as e:  # kani's PromptTooLong / MessageTooLong, or a template error
        plan.messages, plan.note = (
            ai.always_included_messages + history,
            f"kani cannot fit this conversation: {_first_line(e)}",
        )
        return plan
    kept = len(sent) - len(ai.always_included_messages)
    plan.messages, plan.dropped = list(sent), (history[: len(history) - kept] if kept < len(history) else [])
    plan.prompt = built.get(tuple(map(id, sent)))
    return plan


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _reuse_prompts(ai, engine) -> dict:
    """Keep what kani's token counting builds, so the prompt it settles on is not built twice.

    Only where neither the Kani's ``prompt_token_len`` nor the engine's ``prompt_len`` is overridden: the count is
    then exactly kani's (``build_prompt``, then the length ``_get_generate_args`` takes).
    """
    from kani import Kani
    from kani.engines.huggingface import HuggingEngine

    built: dict[tuple, Any] = {}
    if (
        type(ai).prompt_token_len is not Kani.prompt_token_len
        or type(engine).prompt_len is not HuggingEngine.prompt_len
    ):
        return built

    async def prompt_token_len(messages, functions=None, **kwargs):
        prompt = engine.build_prompt(messages, functions)
        built[tuple(map(id, messages))] = prompt
        if isinstance(prompt, str):
            return engine._processor_or_tokenizer(text=prompt, add_special_tokens=False, return_tensors="pt")[
                "input_ids"
            ].shape[1]
        return len(prompt[0]) if not isinstance(prompt, dict | UserDict) else prompt["input_ids"].shape[1]

    ai.prompt_token_len = prompt_token_len
    return built


def _run_sync(coro):
    """Run a coroutine to completion, also from inside a running event loop (a notebook's kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="kb-prompt") as pool:
        return pool.submit(asyncio.run, coro).result()


def _describe(engine) -> str:
    from kani.engines.huggingface.chat_template_pipeline import ChatTemplatePromptPipeline

    name = model_display_name(engine.model_id)
    kind = (
        "chat template" if isinstance(engine.pipeline, ChatTemplatePromptPipeline) else type(engine.pipeline).__name__
    )
    return f"{name} · {kind}"


# ---------------------------------------------------------------- tokens and segments


def _build_view(plan: _Plan, element_id) -> PromptView:
    from ._prompt_tokens import assign, segment, tokenize_prompt

    engine, msgs = plan.engine, plan.messages
    tp = tokenize_prompt(engine, msgs, plan.functions, plan.prompt)
    bounds, spans = segment(tp.text, msgs, tp.render, tp.eos_re, tp.special_re)
    slots, flags = assign(tp, bounds, spans)
    segments, token_segments = _segments(msgs, slots, flags)
    return PromptView(
        token_ids=tp.ids,
        texts=tp.texts,
        flags=flags,
        token_segments=token_segments,
        segments=segments,
        messages=msgs,
        context_size=plan.context,
        reply_tokens=plan.reserve,
        dropped=plan.dropped,
        note=plan.note,
        placeholder_ids=tp.placeholder_ids,
        title=_describe(engine),
        element_id=element_id,
    )


def _segments(msgs: list, slots: list[int], flags: list[int]) -> tuple[list[Segment], list[int]]:
    """Slots (0: template before the first message, k+1: message k, n+1: generation prompt) -> segments."""
    import numpy as np

    n = len(msgs)
    slot_arr = np.asarray(slots, dtype=np.int64)
    counts = np.bincount(slot_arr, minlength=n + 2).tolist()
    own = np.bincount(slot_arr, weights=(np.asarray(flags, dtype=np.int64) & TEMPLATE) == 0, minlength=n + 2)
    own = own.astype(np.int64).tolist()
    segments, index, pos = [], {}, 0
    for slot in range(n + 2):
        if slot in (0, n + 1) and not counts[slot]:
            continue
        index[slot] = len(segments)
        if slot == 0:
            segment = Segment("template", "template (before the first message)", pos, pos + counts[0])
        elif slot == n + 1:
            segment = Segment("template", "generation prompt", pos, pos + counts[slot])
        else:
            m = msgs[slot - 1]
            role = m.role.value
            label = f"#{slot} {role}" + (f" {m.name}" if m.name else "")
            segment = Segment(role, label, pos, pos + counts[slot], slot - 1, own[slot], _preview(m))
        segments.append(segment)
        pos += counts[slot]
    lookup = np.zeros(n + 2, dtype=np.int64)
    for slot, i in index.items():
        lookup[slot] = i
    return segments, lookup[slot_arr].tolist()


def _preview(message, limit: int = 80) -> str:
    bits = [p if isinstance(p, str) else f"[{type(p).__name__}]" for p in message.parts]
    bits += [f"[calls {tc.function.name}]" for tc in message.tool_calls or []]
    text = " ".join(b for b in bits if b).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


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
