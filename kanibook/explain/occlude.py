"""What the reply rests on: the same reply, teacher-forced, with one part of the prompt taken out at a time.

By message (:func:`explain_reply`): each message before the reply is taken out in turn and the template rendered
again without it (so the prompt stays well-formed; where the template refuses the shorter conversation, the message
stays with an empty text); the template's own scaffolding is one more part (the messages as plain text). By token
(``detail=k``): windows of message ``k``'s own tokens are taken out of the real prompt's ids, within a budget of
forward passes. Every variant ends with the reply's own ids, so all of them are scored in batched forward passes
through :func:`kanibook.scoring.score_tails` (on the model thread), with the real prompt as the first row: a drop is
the reply's log-probability under the real prompt minus the same under the variant (positive: the part helped).
The real prompt's own scores come from :func:`kanibook.scoring.score_ids`, exactly as :func:`kanibook.score_text`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..exceptions import KanibookError
from .conversation import Reply, plain_text_ids, prompt_ids, resolve
from .progress import steps

__all__ = ["Part", "Explanation", "TokenDetail", "explain_reply"]


@dataclass
class Part:
    """One part of the prompt and what the reply loses without it.

    :param label: ``"#2 user"``-style (as the prompt view labels messages) or ``"template"``.
    :param role: The message's role, or ``"template"``.
    :param message_index: Its index in the conversation (None for the template).
    :param preview: The start of its text.
    :param tokens: How many tokens of the real prompt it is.
    :param drops: Per reply token: log p(token | real prompt) - log p(token | prompt without this part), nats.
    :param note: Why it could not be taken out (then ``drops`` is empty).
    """

    label: str
    role: str
    message_index: int | None
    preview: str
    tokens: int
    drops: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def drop(self) -> float:
        """The drop of the reply's total log-probability (nats); nan if the part could not be taken out."""
        return sum(self.drops) if self.drops else math.nan


@dataclass
class TokenDetail:
    """By token, inside one message: the drop each window of its tokens causes when taken out.

    :param message_index: The message.
    :param positions: Its own tokens' positions in the real prompt; ``texts``: their text.
    :param drops: Per token: the drop of the reply's log-probability when the window holding it is taken out.
    :param window: Tokens per window; ``passes``: forward passes used (rows scored).
    """

    message_index: int
    label: str
    positions: list[int]
    texts: list[str]
    drops: list[float]
    window: int
    passes: int
    budget: int


@dataclass
class Explanation:
    """What a reply rests on. Displays itself (bars per part, the reply's tokens coloured by the part they rest on
    most); ``parts`` and ``detail`` hold the figures.

    :param reply_texts: The reply's tokens' text; ``logprobs``: their log-probabilities under the real prompt
        (:func:`kanibook.score_text`'s figures).
    """

    reply: Reply
    reply_texts: list[str]
    logprobs: list[float]
    parts: list[Part]
    detail: TokenDetail | None = None

    @property
    def logprob(self) -> float:
        """The reply's total log-probability under the real prompt (nats)."""
        return sum(self.logprobs)

    def part(self, label_or_index) -> Part:
        """A part by its label (``"#2 user"``, ``"template"``) or by its message's index in the conversation."""
        for p in self.parts:
            if p.label == label_or_index or (p.message_index is not None and p.message_index == label_or_index):
                return p
        raise KanibookError(f"No part {label_or_index!r}: the parts are " + ", ".join(p.label for p in self.parts))

    def rests_on(self, threshold: float = 0.05) -> list[Part | None]:
        """For each reply token, the part whose absence lowers it most (None where none lowers it by ``threshold``
        nats)."""
        out: list[Part | None] = []
        usable = [p for p in self.parts if p.drops]
        for j in range(len(self.logprobs)):
            best = max(usable, key=lambda p: p.drops[j], default=None)
            out.append(best if best is not None and best.drops[j] >= threshold else None)
        return out

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from . import view

        return {"text/plain": view.explanation_text(self), "text/html": view.explanation_html(self)}

    def __repr__(self) -> str:
        return f"<Explanation {len(self.logprobs)} reply tokens, {len(self.parts)} parts>"


def explain_reply(target, index: int = -1, *, detail: int | None = None, budget: int = 64, messages=None,
                  progress: bool = True) -> Explanation:  # fmt: skip
    """Which part of the prompt a reply rests on: the drop of its log-probability without each message (and without
    the template's scaffolding), in total and per reply token.

    Teacher-forced through kanibook's one scoring path: nothing is generated, the reply is the one in the
    conversation. On a CPU it takes seconds (a progress bar shows for work of more than about a second).

    :param target: A ``kani.Kani``, the notebook's ``ChatSession``, a chat panel, or an engine with ``messages``.
    :param index: Which reply (among the conversation's replies; -1: the last).
    :param detail: Also by token inside one message: its index in the conversation (the view labels it
        ``#detail+1``). Windows of its tokens are taken out, at most ``budget`` forward passes.
    :param budget: The most forward passes (rows) the token detail may use.
    :param messages: The conversation, for an engine (or in place of a Kani's).
    :param progress: Show a progress bar when it takes more than a second.
    """
    from ..scoring import engine_score_ids, engine_score_tails

    reply = resolve(target, index, messages)
    if detail is not None:
        _check_detail(reply, detail, budget)
    parts, variants = _message_variants(reply)
    token_rows, detail_plan = ([], None) if detail is None else _token_variants(reply, detail, budget)
    last = reply.end - reply.start
    pad = _pad_id(reply.engine)
    rows = [reply.ids, *[v for v in variants if v is not None], *token_rows]
    work = len(reply.view.token_ids) + sum(map(len, rows))
    with steps("explain_reply", len(rows) + 1, progress, work) as bar:
        exact = engine_score_ids(reply.engine, reply.view.token_ids, top_k=0)  # what score_text scores
        bar.update()
        scored = engine_score_tails(reply.engine, rows, last, pad_id=pad, on_batch=bar.update)
    base_batch, it = scored[0], iter(scored[1:])
    for part, variant in zip(parts, variants):
        if variant is not None:
            part.drops = [b - v for b, v in zip(base_batch, next(it))]
    logprobs = exact.logprob[reply.start - 1 : reply.end - 1]
    texts = [reply.view.tokens[p].text for p in range(reply.start, reply.end)]
    explanation = Explanation(reply, texts, logprobs, parts)
    if detail_plan is not None:
        positions, windows, window = detail_plan
        drops = [0.0] * len(positions)
        for (a, b), row in zip(windows, it):
            drop = sum(x - y for x, y in zip(base_batch, row))
            for i in range(a, b):
                drops[i] = drop
        texts = [reply.view.tokens[p].text for p in positions]
        label = f"#{detail + 1} {reply.context[detail].role.value}"
        explanation.detail = TokenDetail(detail, label, positions, texts, drops, window, len(windows), budget)
    return explanation


def _check_detail(reply: Reply, detail, budget) -> None:
    if not isinstance(detail, int) or not 0 <= detail < len(reply.context):
        raise KanibookError(f"detail={detail!r}: pass the index of a message before the reply "
                            f"(0..{len(reply.context) - 1}; the view labels message k as #k+1).")  # fmt: skip
    if not isinstance(budget, int) or budget < 1:
        raise KanibookError(f"budget={budget!r}: pass how many forward passes the token detail may use (1 or more).")


def _message_variants(reply: Reply) -> tuple[list[Part], list[list[int] | None]]:
    """One part per message before the reply and one for the template, each with the ids of the prompt without it."""
    from kani import ChatMessage

    view, context = reply.view, reply.context
    parts, variants = [], []
    for k, message in enumerate(context):
        segments = view.segments_of(k)
        own = sum(s.content_tokens for s in segments)
        role = message.role.value
        preview = segments[0].preview if segments else (message.text or "")[:80]
        part = Part(f"#{k + 1} {role}", role, k, preview, own)
        rest = context[:k] + context[k + 1 :]
        ids = _with_reply(reply, rest)
        if ids is None:  # the template refuses the conversation without it: keep the turn, empty its text
            emptied = ChatMessage(role=message.role, content="", name=message.name)
            ids = _with_reply(reply, [*context[:k], emptied, *context[k + 1 :]])
        if ids is None:
            part.note = "the template refuses the conversation without this message"
        parts.append(part)
        variants.append(ids)
    scaffolding = sum(1 for t in view.tokens[: reply.start] if t.is_template)
    template = Part("template", "template", None, "the chat template's own tokens (roles, turn markers)", scaffolding)
    parts.append(template)
    variants.append(plain_text_ids(reply.engine, context) + reply.reply_ids)
    return parts, variants


def _with_reply(reply: Reply, context: list) -> list[int] | None:
    """The prompt of ``context`` followed by the reply, rendered by the template, cut after the reply's own text."""
    ids = prompt_ids(reply.engine, [*context, reply.message], reply.functions)
    if ids is None:
        return None
    tail = reply.tail
    if len(ids) > len(tail) and ids[-len(tail) :] == tail:
        return ids[: len(ids) - len(tail)] + reply.reply_ids
    prefix = prompt_ids(reply.engine, context, reply.functions)  # (a template that renders the reply differently)
    return None if prefix is None else prefix + reply.reply_ids


def _token_variants(reply: Reply, detail: int, budget: int):
    """Rows for the token detail: the real prompt with one window of the message's own tokens taken out."""
    positions = [t.position for s in reply.view.segments_of(detail) for t in reply.view.tokens[s.start : s.end]
                 if not t.is_template]  # fmt: skip
    if not positions:
        raise KanibookError(f"Message #{detail + 1} has no tokens of its own in the prompt: nothing to detail.")
    window = max(1, math.ceil(len(positions) / budget))
    windows = [(a, min(a + window, len(positions))) for a in range(0, len(positions), window)]
    ids = reply.ids
    rows = []
    for a, b in windows:
        out = set(positions[a:b])
        rows.append([x for p, x in enumerate(ids) if p not in out])
    return rows, (positions, windows, window)


def _pad_id(engine) -> int:
    tok = engine.tokenizer
    for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
        if isinstance(candidate, int) and candidate >= 0:
            return candidate
    return 0
