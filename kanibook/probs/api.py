"""Probabilities from an OpenAI-compatible server's ``logprobs`` (streamed chat completions).

A server that honours ``logprobs=True, top_logprobs=k`` (llama.cpp's server, vLLM, OpenAI itself) sends, with each
piece of text, each token's log-probability and its ``k`` most probable alternatives. :class:`LogprobsCollector`
turns them into the same :class:`~.record.TokenProb` records a local model's generation makes, live, as the chunks
arrive. What a server does not send is left out, and the reply's note says so: token ids (``-1``), the entropy
(``nan``: the top ``k`` alone do not give it) and the distribution after sampling (servers report one distribution).
A server that ignores the request (``transformers serve``) sends text without logprobs: the reply then carries no
records and a note that says probabilities are not available for this engine.
"""

from __future__ import annotations

import math
from typing import Any

from .record import Alternative, Distribution, ReplyProbs, TokenProb

__all__ = ["MAX_TOP_LOGPROBS", "NO_LOGPROBS", "LogprobsCollector", "token_from_logprob"]

MAX_TOP_LOGPROBS = 20  # the most alternatives the OpenAI API lets a request ask for
NO_LOGPROBS = "probabilities: not available for this engine (the server sent no logprobs)"
_FROM_SERVER = "from the server's logprobs: its top {k} per token, no token ids, no entropy"


def token_from_logprob(index: int, entry: Any, top_k: int) -> TokenProb:
    """One entry of ``choices[0].logprobs.content`` (``token``, ``logprob``, ``top_logprobs``) -> its record."""
    chosen = float(entry.logprob)
    given = [a for a in entry.top_logprobs or () if a.logprob is not None]
    top = sorted(given, key=lambda a: -float(a.logprob))[:top_k]
    alternatives = tuple(Alternative(-1, str(a.token), math.exp(float(a.logprob))) for a in top)
    rank = sum(1 for a in top if float(a.logprob) > chosen)  # k when the chosen token is not among the top k
    return TokenProb(index, -1, str(entry.token), Distribution(math.exp(chosen), rank, math.nan, alternatives))


class LogprobsCollector:
    """Fills a :class:`ReplyProbs` from the chunks of one streamed chat completion.

    :param probs: The records to grow (``source="api"``).
    """

    def __init__(self, probs: ReplyProbs):
        self.probs = probs
        probs.note = _FROM_SERVER.format(k=probs.top_k)

    def __call__(self, chunk: Any) -> None:
        """Take one chunk (an ``openai`` ``ChatCompletionChunk``) on its way to kani."""
        choice = next((c for c in getattr(chunk, "choices", None) or () if c.index == 0), None)
        logprobs = getattr(choice, "logprobs", None)
        for entry in getattr(logprobs, "content", None) or ():
            if entry.logprob is not None:  # (a server may leave a token without one)
                self.probs.tokens.append(token_from_logprob(len(self.probs.tokens), entry, self.probs.top_k))

    def finish(self, reply_text: str | None) -> bool:
        """The reply is complete: False (and the note says so) if the server sent its text without any logprobs."""
        served = bool(self.probs.tokens) or not reply_text
        if not served:
            self.probs.note = NO_LOGPROBS
        return served
