""":func:`show_prompt` and :func:`compare_prompts`: what is sent (a Kani's or an engine's conversation, or a model's
tokenizer alone), turned into a :class:`~kanibook.prompt.view.PromptView`.

The ids shown are exactly the ids ``engine.build_prompt(messages, functions)`` returns (for a model id or folder:
what ``HuggingEngine.build_prompt`` would return, from its tokenizer alone, see :mod:`kanibook.prompt.tokenizer_only`).
Which message each token came from is worked out for any template (:mod:`kanibook.prompt.segment`), and what the
template did to the conversation is listed (:mod:`kanibook.prompt.template_report`).
"""

from __future__ import annotations

import asyncio
import copy
from collections import UserDict
from dataclasses import dataclass, field
from typing import Any

from .._names import model_display_name
from ..exceptions import KanibookError
from ..engine._template import plain_text
from .plain import NO_TEMPLATE_NOTE
from .tokens import TEMPLATE
from .view import PromptComparison, PromptView, Segment

__all__ = ["show_prompt", "compare_prompts"]

# ---------------------------------------------------------------- public functions


def show_prompt(target, messages=None, functions=None, *, max_new_tokens: int | None = None, element_id=None,
                fix: bool = False):  # fmt: skip
    """Show the exact prompt a model receives: its tokens, grouped by message, and the context it uses.

    :param target: A ``kani.Kani`` (its system prompt, always-included messages, chat history and functions: what it
        would send next, with the messages it drops to fit shown as dropped), or an engine (``kanibook.load()``,
        either backend: llama.cpp's shows the ids llama.cpp evaluates) together with ``messages``, or a model (a
        Hugging Face id ``"org/name"`` or a local folder) together with ``messages``: then only its tokenizer, chat
        template and ``config.json`` are loaded, never its weights.
    :param messages: The conversation (``ChatMessage`` list). With a ``Kani``: used in place of its chat history. A
        string: that plain text's tokens, as the model reads it to continue it (no template). A model without a chat
        template (a base model) shows a conversation's texts that way, with a note.
    :param functions: ``AIFunction`` list; default: the Kani's enabled functions (none for an engine).
    :param max_new_tokens: Room to keep for the reply; default: the Kani's ``desired_response_tokens``, or the
        engine's ``max_new_tokens``, or kani's default (a tenth of the context, at most 8192).
    :param element_id: The HTML element id (for deterministic output); default: a random one.
    :param fix: If the chat template refuses the conversation, show the nearest one it accepts (system merged into
        the next user message, consecutive messages of one role merged), saying what was changed.
    """
    if isinstance(messages, str):
        return _plain(_engine_of(target), messages, None, element_id, max_new_tokens)
    plan = _resolve(target, messages, functions, max_new_tokens)
    if _without_template(plan.engine):
        return _plain(plan.engine, plain_text(plan.messages), NO_TEMPLATE_NOTE, element_id, max_new_tokens)
    return _build_view(plan, element_id, fix)


def compare_prompts(a, b, messages=None, functions=None, *, labels: tuple[str, str] | None = None, element_id=None,
                    fix: bool = False):  # fmt: skip
    """The same conversation through two pipelines or two models, side by side, with a token-level diff.

    :param a: A HuggingEngine, a ``Kani`` (its engine is used), or a model id or folder (its tokenizer and chat
        template only, no weights).
    :param b: Another one, e.g. the same model loaded with a hand-written ``prompt_pipeline=``, or another model.
    :param messages: The conversation; default: the first ``Kani``'s (system prompt, always-included, history).
    :param functions: ``AIFunction`` list; default: the first ``Kani``'s enabled functions.
    :param labels: Names for the two sides; default: the model folder and the kind of pipeline.
    :param element_id: The HTML element id (for deterministic output).
    :param fix: Show the nearest conversation each template accepts where it refuses the one given.
    """
    from kani import Kani

    kanis = [x for x in (a, b) if isinstance(x, Kani)]
    if messages is None:
        if not kanis:
            raise KanibookError("compare_prompts needs messages=[...] (or pass a Kani, whose conversation is used).")
        messages = kanis[0].always_included_messages + kanis[0].chat_history
    if functions is None and kanis:
        functions = kanis[0].get_enabled_functions()
    views, engines = [], [_engine_of(a), _engine_of(b)]
    for engine in engines:
        if _without_template(engine):
            views.append(_plain(engine, plain_text(list(messages)), NO_TEMPLATE_NOTE, None, None))
            continue
        plan = _Plan(engine, engine.max_context_size, list(messages), functions, _default_reserve(engine))
        views.append(_build_view(plan, None, fix))
    labels = labels or (_describe(engines[0]), _describe(engines[1]))
    if labels[0] == labels[1]:
        labels = (f"A: {labels[0]}", f"B: {labels[1]}")
    return PromptComparison(views[0], views[1], labels, element_id)


# ---------------------------------------------------------------- what is sent


def _without_template(engine) -> bool:
    """A model without a chat template (a base model): its prompt view is the plain text's."""
    from ..engine._template import has_chat_template

    known = getattr(engine, "has_chat_template", None)
    return not (known if isinstance(known, bool) else has_chat_template(engine))


def _plain(engine, text: str, note: str | None, element_id, max_new_tokens) -> PromptView:
    from .plain import PLAIN_NOTE, plain_view

    if not text:
        raise KanibookError("There is no text to show: pass a non-empty text or conversation.")
    reserve = max_new_tokens if max_new_tokens is not None else _default_reserve(engine)
    return plain_view(engine, text, note=note or PLAIN_NOTE, context=engine.max_context_size, reserve=reserve,
                      title=f"{model_display_name(engine.model_id)} · plain text", element_id=element_id)  # fmt: skip


def _engine_of(target):
    from kani import Kani
    from kani.engines.huggingface import HuggingEngine

    from .tokenizer_only import TokenizerEngine, is_model_reference, tokenizer_engine

    if is_model_reference(target):
        return tokenizer_engine(target)
    engine = target.engine if isinstance(target, Kani) else target
    if not isinstance(engine, HuggingEngine | TokenizerEngine) and not callable(getattr(engine, "prompt_ids", None)):
        raise KanibookError(
            f"The prompt view needs a local engine (kanibook.load(...), either backend) or a model id or folder; got "
            f"{type(engine).__name__}, whose prompt is built elsewhere (by a server)."
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
    notes: list = field(default_factory=list)  # TemplateNotes known before the prompt is built (a fixed conversation)
    title: str = ""


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

    from ..engine import KanibookEngine
    from ..media.check import without_refused_media

    built: dict[tuple, Any] = {}
    if type(ai).prompt_token_len is not Kani.prompt_token_len or type(engine).prompt_len not in (
        HuggingEngine.prompt_len,
        KanibookEngine.prompt_len,  # kani's count, without media the model refuses (stream refuses them clearly)
    ):
        return built

    async def prompt_token_len(messages, functions=None, **kwargs):
        counted = without_refused_media(engine, messages) if isinstance(engine, KanibookEngine) else messages
        prompt = engine.build_prompt(counted, functions)
        if counted is messages:  # a prompt with refused media left out is not what would be sent
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

    from .tokenizer_only import TokenizerEngine

    name = model_display_name(engine.model_id)
    if isinstance(engine, TokenizerEngine):
        name += " (tokenizer only)"
    kind = (
        "chat template" if isinstance(engine.pipeline, ChatTemplatePromptPipeline) else type(engine.pipeline).__name__
    )
    return f"{name} · {kind}"


# ---------------------------------------------------------------- tokens and segments


def _build_view(plan: _Plan, element_id, fix: bool = False) -> PromptView:
    from .layout import assign, build_layout
    from .template_report import template_notes
    from .tokens import tokenize_prompt

    if fix and plan.prompt is None:
        _apply_fix(plan)
    engine, msgs = plan.engine, plan.messages
    tp = tokenize_prompt(engine, msgs, plan.functions, plan.prompt)
    lay = build_layout(tp, msgs)
    slots, flags = assign(tp, lay, len(msgs))
    segments, token_segments = _segments(msgs, slots, flags)
    notes = plan.notes + template_notes(tp, msgs, lay, slots, flags, plan.functions)
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
        media_shapes=tp.media_shapes,
        title=plan.title or _describe(engine),
        element_id=element_id,
        template_notes=notes,
    )


def _apply_fix(plan: _Plan) -> None:
    """Where the template refuses the conversation, use the nearest one it accepts (and say what changed)."""
    from .refusal import _builds, nearest_accepted

    if not plan.messages or _builds(plan.engine, plan.messages, plan.functions):
        return
    found = nearest_accepted(plan.engine, plan.messages, plan.functions)
    if found is not None:
        plan.messages, notes = found
        plan.notes = [*plan.notes, *notes]


def _segments(msgs: list, slots: list[int], flags: list[int]) -> tuple[list[Segment], list[int]]:
    """Slots (0: template before the first message, k+1: message k, n+1: generation prompt) -> one segment per run of
    tokens with the same slot, in prompt order (a message whose text the template moved has a segment where it is)."""
    import numpy as np

    n = len(msgs)
    slot_arr = np.asarray(slots, dtype=np.int64)
    if not len(slot_arr):
        return [], []
    cuts = (np.flatnonzero(np.diff(slot_arr)) + 1).tolist()
    starts, ends = [0, *cuts], [*cuts, len(slot_arr)]
    own_cum = np.concatenate(([0], np.cumsum((np.asarray(flags, dtype=np.int64) & TEMPLATE) == 0))).tolist()
    segments, token_segments = [], np.empty(len(slot_arr), dtype=np.int64)
    for start, end in zip(starts, ends):
        slot = slots[start]
        token_segments[start:end] = len(segments)
        if slot == 0:
            segment = Segment("template", "template (before the messages)", start, end)
        elif slot == n + 1:
            segment = Segment("template", "generation prompt", start, end)
        else:
            m = msgs[slot - 1]
            role = m.role.value
            label = f"#{slot} {role}" + (f" {m.name}" if m.name else "")
            own = own_cum[end] - own_cum[start]
            segment = Segment(role, label, start, end, slot - 1, own, _preview(m))
        segments.append(segment)
    present = {s.message_index for s in segments}
    for k in range(n):  # a message with no token (an empty turn, or one the template dropped): an empty segment
        if k in present:
            continue
        at = next((i for i, s in enumerate(segments) if (s.message_index is not None and s.message_index > k)
                   or s.label == "generation prompt"), len(segments))  # fmt: skip
        pos = segments[at].start if at < len(segments) else len(slot_arr)
        m = msgs[k]
        label = f"#{k + 1} {m.role.value}" + (f" {m.name}" if m.name else "")
        segments.insert(at, Segment(m.role.value, label, pos, pos, k, 0, _preview(m)))
        token_segments[token_segments >= at] += 1
    return segments, token_segments.tolist()


def _preview(message, limit: int = 80) -> str:
    bits = [p if isinstance(p, str) else f"[{type(p).__name__}]" for p in message.parts]
    bits += [f"[calls {tc.function.name}]" for tc in message.tool_calls or []]
    text = " ".join(b for b in bits if b).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
