""""What if": continue a reply as if the model had picked another token at some step.

The reply's first ``token_index`` tokens are kept, then the chosen alternative, then the model continues from there
(greedy by default) with probabilities recorded. ``ChatPanel.branch`` and ``ChatSession.branch`` put the new reply
in the conversation in place of the old one; the old one stays in the new message's ``extra`` (see
:func:`kanibook.conversation.transcript.branches_of`), so exports include it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..exceptions import KanibookError
from .record import Alternative, ReplyProbs, TokenProb, remember

__all__ = ["Branch", "pick_alternative", "check_branch", "branch_reply", "replace_in_history", "check_reply_index"]


@dataclass
class Branch:
    """A branched reply.

    :param message: The new assistant ``ChatMessage`` (its ``extra`` keeps the original reply).
    :param probs: Its per-token records: the kept prefix, the chosen alternative, the continuation.
    :param token_index: Where it departs from the original.
    :param alternative: The token chosen there.
    :param original: The original reply's text.
    """

    message: Any
    probs: ReplyProbs
    token_index: int
    alternative: Alternative
    original: str


def pick_alternative(token: TokenProb, alternative: Any) -> Alternative:
    """An alternative of ``token``: by its place in the list (int), its text (str) or itself (:class:`Alternative`).

    :raises KanibookError: if there is no such alternative.
    """
    top = token.raw.top
    if isinstance(alternative, Alternative):
        return alternative
    if isinstance(alternative, bool) or not isinstance(alternative, (int, str)):
        raise KanibookError("alternative= takes its number in the list (0 = most probable), its text, or itself.")
    if isinstance(alternative, int):
        if not 0 <= alternative < len(top):
            raise KanibookError(f"Token #{token.index} has {len(top)} alternatives: pick 0 to {len(top) - 1}.")
        return top[alternative]
    for alt in top:
        if alt.text == alternative:
            return alt
    shown = ", ".join(repr(a.text) for a in top)
    raise KanibookError(f"{alternative!r} is not among token #{token.index}'s alternatives ({shown}).")


def check_branch(engine, probs: ReplyProbs, token_index: int, alternative: Any) -> tuple[TokenProb, Alternative]:
    """Refuse, with one line that says what to do, a branch that cannot run; else the token and the alternative."""
    if not callable(getattr(engine, "stream_from_ids", None)):
        raise KanibookError("'What if' branches need a kanibook engine (kanibook.load()), not an API engine.")
    if probs.prompt_ids is None:
        raise KanibookError("This reply's prompt is not text only (or unknown): it cannot be branched.")
    if isinstance(token_index, bool) or not isinstance(token_index, int) or not 0 <= token_index < len(probs):
        last = len(probs) - 1
        raise KanibookError(f"The reply has {len(probs)} recorded tokens: pick a token_index from 0 to {last}.")
    token = probs.tokens[token_index]
    return token, pick_alternative(token, alternative)


async def branch_reply(
    engine,
    probs: ReplyProbs,
    token_index: int,
    alternative: Any = 1,
    *,
    max_new_tokens: int | None = None,
    **hyperparams,
) -> tuple[str, ReplyProbs, Alternative]:
    """Regenerate a reply from ``token_index`` on, starting with an alternative token (greedy unless told).

    :param engine: The kanibook engine that generated the reply.
    :param probs: The reply's records (with its prompt ids).
    :param token_index: The token to replace (0 = the reply's first token).
    :param alternative: Which alternative (see :func:`pick_alternative`); default 1, the runner-up.
    :param max_new_tokens: The most tokens of the whole new reply (default: the original's limit, or 256).
    :param hyperparams: Generation arguments (default ``do_sample=False``).
    :returns: The new reply's text, its records, and the alternative chosen.
    """
    token, alt = check_branch(engine, probs, token_index, alternative)
    kept = probs.token_ids[:token_index] + [alt.token_id]
    limit = max_new_tokens or probs.hyperparams.get("max_new_tokens") or 256
    params = {"do_sample": False, **hyperparams, "max_new_tokens": max(1, int(limit) - len(kept))}
    params["probabilities"] = probs.top_k
    completion = None
    async for item in engine.stream_from_ids(probs.prompt_ids + kept, **params):
        if not isinstance(item, str):
            completion = item
    tokenizer = engine.tokenizer
    rest = completion.probs
    ids = kept + rest.token_ids
    text = tokenizer.decode(ids, skip_special_tokens=True)
    before = tokenizer.decode(kept[:-1], skip_special_tokens=True)
    alt_text = tokenizer.decode(kept, skip_special_tokens=True)[len(before) :]
    rank = next((i for i, a in enumerate(token.raw.top) if a.token_id == alt.token_id), token.raw.rank)
    chosen = TokenProb(token_index, alt.token_id, alt_text, dataclasses.replace(token.raw, prob=alt.prob, rank=rank))
    tokens = probs.tokens[:token_index] + [chosen]
    tokens += [dataclasses.replace(t, index=t.index + token_index + 1) for t in rest.tokens]
    kept_params = {**params, "max_new_tokens": int(limit)}  # the whole reply's limit, for a branch of this branch
    kept_params.pop("probabilities", None)
    note = f"branched at token #{token_index}"
    new = ReplyProbs(tokens, probs.top_k, probs.prompt_ids, "generate", note, kept_params)
    return text.strip(), new, alt


def replace_in_history(history: list, message_index: int, text: str, probs: ReplyProbs, token_index: int, alt) -> Any:
    """Put the branched reply at ``history[message_index]`` (what followed it is dropped: it answered the old reply).

    The old reply, and the messages dropped after it, are kept in the new message's ``extra`` (exports show them).
    :returns: The new ``ChatMessage``.
    """
    from kani import ChatMessage

    from ..conversation.transcript import mark_branched

    old = history[message_index]
    dropped = history[message_index + 1 :]
    message = ChatMessage.assistant(text)
    mark_branched(message, old, dropped, token_index, alt.text)
    remember(message, probs)
    del history[message_index:]
    history.append(message)
    return message


def check_reply_index(history: list, message_index: int) -> int:
    """``message_index`` (negative counts from the end) of an assistant reply in ``history``, made non-negative."""
    n = len(history)
    i = message_index + n if message_index < 0 else message_index
    if not 0 <= i < n or history[i].role.value != "assistant":
        replies = [j for j, m in enumerate(history) if m.role.value == "assistant"]
        raise KanibookError(f"Message {message_index} is not a reply: the replies are at {replies or 'none yet'}.")
    return i
