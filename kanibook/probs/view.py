"""The probabilities views: :func:`show_reply` (a generated reply) and :func:`score_text` (any conversation).

::

    completion = await engine.predict(messages, probabilities=True)
    kanibook.show_reply(completion)           # or a Kani, a chat panel, a ChatSession
    kanibook.score_text(engine, messages)     # how surprising the model finds every token of a conversation

Both are objects with ``_repr_mimebundle_``: coloured tokens with their alternatives on hover in a notebook, a text
form (unsure tokens bracketed with their probability, the least confident listed) in a terminal.
"""

from __future__ import annotations

import math
from typing import Any

from ..exceptions import KanibookError
from ..render import probs as render
from ..render import safe
from .record import Alternative, Distribution, ReplyProbs, TokenProb, probs_of

__all__ = ["ReplyView", "ScoredView", "show_reply", "score_text", "reply_text", "find_probs"]

_UNSURE = 0.3  # the text form brackets tokens below this probability


def _plain_token(t: TokenProb) -> str:
    text = safe.clean_chars(t.text)
    return f"[{text}|{100 * t.raw.prob:.0f}%]" if t.raw.prob < _UNSURE else text


def _least_lines(tokens) -> list[str]:
    lines = []
    for t in tokens:
        best = t.best_other
        other = f"  best other {render._quoted(best.text)} {render._pct(best.prob)}" if best else ""
        lines.append(f"  #{t.index} {render._quoted(t.text)} {render._pct(t.raw.prob)}{other}")
    return lines


def reply_text(probs: ReplyProbs, title: str = "Reply", least: int = 5) -> str:
    """The text form: the reply with unsure tokens as ``[text|p%]``, then the least confident tokens."""
    lines = [f"{safe.clean_chars(title)} · {len(probs)} tokens"]
    if probs.note:
        lines.append(safe.clean_chars(probs.note))
    lines.append("".join(_plain_token(t) for t in probs.tokens))
    if least and len(probs):
        lines.append("least confident:")
        lines += _least_lines(probs.least_confident(least))
    return "\n".join(lines)


class ReplyView:
    """A reply's tokens coloured by probability (``_repr_mimebundle_``), its :class:`ReplyProbs` as ``.probs``.

    :param probs: The records.
    :param title: The heading.
    :param least: How many least-confident tokens to list.
    """

    def __init__(self, probs: ReplyProbs, *, title: str = "Reply", least: int = 5):
        self.probs, self.title, self.least = probs, title, least

    @property
    def tokens(self) -> list[TokenProb]:
        return self.probs.tokens

    def html(self, streaming: bool = False) -> str:
        return render.reply_html(self.probs, title=self.title, least=self.least, streaming=streaming)

    def text(self) -> str:
        return reply_text(self.probs, self.title, self.least)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": self.html()}

    def __repr__(self) -> str:
        return f"<ReplyView {len(self.probs)} tokens>"


def find_probs(target: Any) -> ReplyProbs:
    """The probabilities of a reply: from :class:`ReplyProbs`, a completion, a ``ChatMessage``, a ``Kani``, a chat
    panel or a ``ChatSession`` (their last reply)."""
    if isinstance(target, ReplyProbs):
        return target
    found = getattr(target, "probs", None)
    if isinstance(found, ReplyProbs):  # a KanibookCompletion
        return found
    kani = getattr(target, "kani", None) or target  # a panel or a session hold a Kani
    history = getattr(kani, "chat_history", None)
    if history is not None:
        replies = [m for m in history if m.role.value == "assistant"]
        if not replies:
            raise KanibookError("No reply yet: send a message with probabilities on, then show it.")
        found = probs_of(replies[-1])
    elif hasattr(target, "role") and hasattr(target, "extra"):  # a ChatMessage
        found = probs_of(target)
    else:
        raise KanibookError(
            f"show_reply() takes a completion, a Kani, a chat panel or a ChatSession, not {type(target).__name__}."
        )
    if found is None:
        raise KanibookError(
            "This reply was generated without probabilities: turn them on (probabilities=True, %%chat --probs, or "
            "the panel's 'probabilities' box) and generate it again."
        )
    return found


def show_reply(target: Any, *, least: int = 5, title: str = "Reply") -> ReplyView:
    """What the model considered at every token of a reply: tokens coloured by probability, alternatives on hover.

    :param target: A completion of ``engine.predict(..., probabilities=True)``, a ``Kani``, a chat panel or a
        ``ChatSession`` (their last reply), or a :class:`ReplyProbs`.
    :param least: How many least-confident tokens to list.
    :param title: The heading.
    """
    return ReplyView(find_probs(target), title=title, least=least)


# ---- the prompt's side ----


class ScoredView:
    """Teacher-forced probabilities of a conversation's tokens, over the prompt view's message segments.

    :param tokens: One :class:`TokenProb` per token from the second on (``index`` is the token's position).
    :param segments: The prompt view's segments.
    :param scores: The :class:`~kanibook.scoring.TokenScores` they come from.
    :param own: The positions of the messages' own tokens (not the template's markers or default text); None: all.
    """

    def __init__(self, tokens: list[TokenProb], segments, scores, *, least: int = 5, own=None):
        self.tokens, self.segments, self.scores, self.least = tokens, list(segments), scores, least
        self.own_positions = frozenset(t.index for t in tokens) if own is None else frozenset(own)

    @property
    def perplexity(self) -> float:
        """exp(−mean ln p) over every scored token, the template's included."""
        return self.scores.perplexity

    @property
    def own_tokens(self) -> list[TokenProb]:
        """The messages' own tokens: what the conversation says, without the template's markers and default text."""
        return [t for t in self.tokens if t.index in self.own_positions]

    @property
    def own_perplexity(self) -> float:
        """exp(−mean ln p) over :attr:`own_tokens` only (what a lesson about the conversation's text measures)."""
        own = self.own_tokens
        if not own:
            return float("nan")
        return math.exp(-sum(math.log(max(t.raw.prob, 1e-300)) for t in own) / len(own))

    def _groups(self):
        by_pos = {t.index: t for t in self.tokens}
        for seg in self.segments:
            yield seg, [by_pos[p] for p in range(seg.start, seg.end) if p in by_pos]

    def _least(self) -> list[TokenProb]:
        """The least probable of the messages' own tokens (the template's are not what the conversation says)."""
        return sorted(self.own_tokens or self.tokens, key=lambda t: t.raw.prob)[: self.least]

    def _title(self) -> str:
        return (f"Scored conversation · {len(self.tokens) + 1} tokens · perplexity {self.perplexity:.2f} "
                f"(the messages' own {len(self.own_tokens)} tokens: {self.own_perplexity:.2f})")  # fmt: skip

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        groups = [(seg.role, seg.label, toks) for seg, toks in self._groups()]
        html = render.scored_html(groups, title=self._title(), least=self._least())
        lines = [self._title()]
        for seg, toks in self._groups():
            lines.append(f"-- {seg.role} · {safe.clean_chars(seg.label)}")
            lines.append("".join(_plain_token(t) for t in toks))
        lines.append("least confident:")
        lines += _least_lines(self._least())
        return {"text/plain": "\n".join(lines), "text/html": html}

    def __repr__(self) -> str:
        return f"<ScoredView {len(self.tokens)} tokens, perplexity {self.perplexity:.2f}>"


def score_text(engine, messages=None, *, top_k: int = 5, least: int = 5) -> ScoredView:
    """How probable the model finds every token of a conversation, teacher-forced (one forward pass).

    Uses kanibook's one scoring path (:func:`kanibook.scoring.score_ids`, on the model thread) over the exact prompt
    the model receives (:func:`kanibook.show_prompt`), shown with the same colours as :func:`show_reply`. A llama.cpp
    engine scores the ids llama.cpp evaluates, from its own logits (the figures are made the same way:
    :func:`kanibook.scoring.scores_from_logits`).

    :param engine: A kanibook / kani ``HuggingEngine``, kanibook's llama.cpp engine (or a ``Kani``: its engine and
        messages).
    :param messages: The conversation (``ChatMessage`` list); with a ``Kani``, default: its messages.
    :param top_k: Alternatives kept per token.
    :param least: How many least-confident tokens to list.
    """
    from ..prompt import show_prompt
    from ..scoring import score_ids

    kani = None
    if hasattr(engine, "chat_history") and hasattr(engine, "engine"):
        kani, engine = engine, engine.engine
        if messages is None:
            messages = [*kani.always_included_messages, *kani.chat_history]
    if messages is None:
        raise KanibookError("score_text(engine, messages): pass the conversation to score.")
    model = getattr(engine, "model", None)
    if model is None:
        raise KanibookError("score_text needs a local model (a kanibook / HuggingEngine), not an API engine.")
    view = show_prompt(engine, list(messages))
    ids = [t.id for t in view.tokens]
    own = getattr(engine, "score_ids", None)  # llama.cpp: its own logits
    scores = own(ids, top_k=top_k) if callable(own) else score_ids(model, ids, top_k=top_k)
    tokenizer = engine.tokenizer
    texts: dict[int, str] = {}

    def text_of(i: int) -> str:
        if i not in texts:
            texts[i] = tokenizer.decode([i])
        return texts[i]

    tokens = []
    for j, tok in enumerate(view.tokens[1:]):
        pairs = zip(scores.top_ids[j], scores.top_logprobs[j])
        top = tuple(Alternative(i, text_of(i), math.exp(lp)) for i, lp in pairs)
        dist = Distribution(math.exp(scores.logprob[j]), scores.rank[j], max(0.0, scores.entropy[j]), top)
        tokens.append(TokenProb(tok.position, tok.id, tok.text, dist))
    own = [t.position for t in view.tokens[1:] if not t.is_template]
    return ScoredView(tokens, view.segments, scores, least=least, own=own)
