"""Recording, during ``generate``, what the model considered at every step: probabilities, ranks, entropy, top-k.

Two distributions per step:

- **raw**: the softmax of the model's logits, as the forward pass produced them (a logits processor placed first
  in ``generate``'s list sees them; ``generate``'s ``scores`` are already processed);
- **sampled**: the distribution ``generate`` actually picked from, after every logits processor (temperature,
  top-k, top-p, repetition penalty, ...): a logits processor placed last in the list sees it.

The chosen token arrives at the streamer right after the step, and :meth:`ProbRecorder.on_token` turns the step's
pending figures into a :class:`TokenProb`. Everything here runs on the model thread that runs ``generate``; the
per-step work is a few vector operations over the vocabulary and a top-k, done with numpy on a CPU (single-threaded:
torch's parallel small operations cost milliseconds each on a busy 2-core machine) and with torch on an accelerator
(see bench/bench_probs.py for its cost). To see the distribution after the sampling warpers, which ``generate``
appends after any processors passed to it, the model's ``_get_logits_processor`` is wrapped for the run's duration
(an instance attribute, removed afterwards).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Alternative", "Distribution", "TokenProb", "ReplyProbs", "ProbRecorder", "DEFAULT_TOP_K", "top_k_of",
    "new_reply_probs", "remember", "probs_of",
]  # fmt: skip

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class Alternative:
    """One of the most probable tokens at a step.

    :param token_id: The token's id.
    :param text: The token's text (decoded alone).
    :param prob: Its probability at that step.
    """

    token_id: int
    text: str
    prob: float


@dataclass(frozen=True)
class Distribution:
    """What one distribution said about a step.

    :param prob: The probability of the token that was chosen.
    :param rank: 0 if that token was the most probable, 1 if second, ...
    :param entropy: The distribution's entropy (nats): 0 when certain; nan where unknown (a server's top-k).
    :param top: The most probable tokens, most probable first.
    """

    prob: float
    rank: int
    entropy: float
    top: tuple[Alternative, ...]

    @property
    def logprob(self) -> float:
        return math.log(self.prob) if self.prob > 0 else float("-inf")


@dataclass(frozen=True)
class TokenProb:
    """One token of a reply (or of a scored text) and what the model considered there.

    :param index: The token's position in the reply (0 = first generated token).
    :param token_id: The token's id (-1 where a server's logprobs did not say).
    :param text: The text this token added (concatenated, the tokens give the reply's text; "" for the first
        bytes of a character split over several tokens).
    :param raw: The model's own distribution at this step.
    :param sampled: The distribution actually sampled from (after temperature, top-p, ...); None when it equals
        ``raw`` (greedy decoding without processors, or a teacher-forced score).
    """

    index: int
    token_id: int
    text: str
    raw: Distribution
    sampled: Distribution | None = None

    @property
    def prob(self) -> float:
        """The token's probability under the model's raw distribution."""
        return self.raw.prob

    @property
    def rank(self) -> int:
        return self.raw.rank

    @property
    def entropy(self) -> float:
        return self.raw.entropy

    @property
    def alternatives(self) -> tuple[Alternative, ...]:
        """The raw top-k (the chosen token among them when it was in the top-k)."""
        return self.raw.top

    @property
    def best_other(self) -> Alternative | None:
        """The most probable alternative that is not the chosen token (by id; by text where ids are unknown)."""
        if self.token_id >= 0:
            return next((a for a in self.raw.top if a.token_id != self.token_id), None)
        return next((a for a in self.raw.top if a.text != self.text), None)


@dataclass
class ReplyProbs:
    """The per-token records of one reply, in order; grows live while the reply streams.

    :param tokens: The records.
    :param top_k: How many alternatives each record keeps.
    :param prompt_ids: The prompt's token ids (what a "what if" branch continues after); None if unknown.
    :param source: ``"generate"`` (recorded while generating), ``"score"`` (teacher-forced) or ``"api"`` (a
        server's logprobs).
    :param note: A one-line remark for the view (e.g. why nothing was recorded).
    :param hyperparams: The generation arguments the reply was made with.
    """

    tokens: list[TokenProb] = field(default_factory=list)
    top_k: int = DEFAULT_TOP_K
    prompt_ids: list[int] | None = None
    source: str = "generate"
    note: str | None = None
    hyperparams: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self):
        return iter(self.tokens)

    def __getitem__(self, i):
        return self.tokens[i]

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)

    @property
    def token_ids(self) -> list[int]:
        return [t.token_id for t in self.tokens]

    @property
    def sampled(self) -> bool:
        """True if any step was drawn from a distribution other than the raw one."""
        return any(t.sampled is not None for t in self.tokens)

    def least_confident(self, n: int = 5) -> list[TokenProb]:
        """The ``n`` tokens the model was least sure of (lowest raw probability), least sure first."""
        return sorted(self.tokens, key=lambda t: t.raw.prob)[: max(0, n)]


_BY_MESSAGE: OrderedDict[int, tuple[Any, ReplyProbs]] = OrderedDict()
_REMEMBERED = 512


def remember(message, probs: ReplyProbs) -> None:
    """Note that ``message`` (a kani ``ChatMessage``) was generated with these probabilities (the newest 512 kept)."""
    _BY_MESSAGE[id(message)] = (message, probs)
    _BY_MESSAGE.move_to_end(id(message))
    while len(_BY_MESSAGE) > _REMEMBERED:
        _BY_MESSAGE.popitem(last=False)


def probs_of(message) -> ReplyProbs | None:
    """The probabilities recorded for ``message`` (see :func:`remember`), or None."""
    entry = _BY_MESSAGE.get(id(message))
    return entry[1] if entry is not None and entry[0] is message else None


def top_k_of(probs_arg) -> int:
    """``probabilities=`` as given (True, False, None or a top-k count) -> the top-k count (0: off)."""
    if probs_arg is None or probs_arg is False:
        return 0
    if probs_arg is True:
        return DEFAULT_TOP_K
    if isinstance(probs_arg, int) and probs_arg > 0:
        return int(probs_arg)
    from ..exceptions import KanibookError

    raise KanibookError(f"probabilities= takes True, False or a number of alternatives (>= 1), not {probs_arg!r}.")


def new_reply_probs(inputs: dict, hyperparams: dict, top_k: int) -> ReplyProbs:
    """An empty :class:`ReplyProbs` for a generation from ``inputs`` (the prompt ids kept when the prompt is text)."""
    ids = inputs.get("input_ids")
    text_only = ids is not None and ids.shape[0] == 1 and set(inputs) <= {"input_ids", "attention_mask"}
    kept = {k: v for k, v in hyperparams.items() if isinstance(v, (int, float, bool, str)) or v is None}
    return ReplyProbs(top_k=top_k, prompt_ids=ids[0].tolist() if text_only else None, hyperparams=kept)


class _Step:
    """A step's distributions, waiting for the chosen token (as tensors: reduced to floats once it is known)."""

    __slots__ = ("raw", "processed")

    def __init__(self, raw, processed):
        self.raw, self.processed = raw, processed


class _Watcher:
    """A logits processor that hands the scores it sees to the recorder (``first``: raw; else: processed)."""

    def __init__(self, recorder: ProbRecorder, first: bool):
        self._recorder, self._first = recorder, first

    def __call__(self, input_ids, scores):
        if self._first:
            self._recorder._raw = scores[0]
        else:
            self._recorder._on_processed(scores[0])
        return scores


class ProbRecorder:
    """Builds the :class:`TokenProb` of each generated token, on the thread that runs ``generate``.

    :meth:`attach` makes the model's ``generate`` put one watcher first in its list of logits processors (it sees
    the raw logits of the step, as an fp32 copy) and one last, after the sampling warpers (temperature, top-k,
    top-p, ...) that ``generate`` appends after any processors passed to it; :meth:`on_token` takes the token the
    streamer receives; :meth:`detach` restores the model.

    :param tokenizer: For the alternatives' texts.
    :param top_k: Alternatives kept per step.
    """

    def __init__(self, tokenizer, top_k: int = DEFAULT_TOP_K):
        self._tokenizer = tokenizer
        self.top_k = max(1, int(top_k))
        self._raw = None
        self._pending: _Step | None = None
        self._model = None
        self._texts: dict[int, str] = {}
        self.count = 0

    def attach(self, model) -> None:
        """Make ``model.generate`` run the two watchers (until :meth:`detach`)."""
        build = getattr(model, "_get_logits_processor", None)
        if build is None:
            from ..exceptions import KanibookError

            raise KanibookError(
                f"{type(model).__name__}.generate has no logits processors to watch: probabilities cannot be recorded."
            )
        first, last = _Watcher(self, True), _Watcher(self, False)

        def with_watchers(*args, **kwargs):
            processors = build(*args, **kwargs)
            processors.insert(0, first)
            processors.append(last)
            return processors

        model._get_logits_processor = with_watchers  # an instance attribute: the class is untouched
        self._model = model

    def detach(self) -> None:
        if self._model is not None:
            self._model.__dict__.pop("_get_logits_processor", None)
            self._model = None
        self._raw = self._pending = None

    def _on_processed(self, processed) -> None:
        raw = self._raw if self._raw is not None else processed
        self._raw = None
        if raw.device.type == "cpu":  # numpy: single-threaded, no OpenMP wake-ups for a few vector passes
            raw_v, processed_v = raw.float().numpy().copy(), processed.float().numpy()
            same = raw is processed or bool((raw_v == processed_v).all())
            self._pending = _Step(raw_v, None if same else processed_v.copy())
        else:
            import torch

            same = raw is processed or torch.equal(raw, processed)
            self._pending = _Step(raw.float().clone(), None if same else processed.float().clone())

    def on_token(self, token_id: int, text: str) -> TokenProb | None:
        """The chosen token of the pending step -> its record (None if no step is pending)."""
        step, self._pending = self._pending, None
        if step is None:
            return None
        raw = self._distribution(step.raw, token_id)
        sampled = self._distribution(step.processed, token_id) if step.processed is not None else None
        record = TokenProb(self.count, token_id, text, raw, sampled)
        self.count += 1
        return record

    def _distribution(self, logits, token_id: int) -> Distribution:
        if isinstance(logits, np.ndarray):
            prob, rank, entropy, ids, probs = _stats_numpy(logits, token_id, self.top_k)
        else:
            prob, rank, entropy, ids, probs = _stats_torch(logits, token_id, self.top_k)
        alts = tuple(Alternative(i, self.text_of(i), q) for i, q in zip(ids, probs) if q > 0)
        return Distribution(prob, rank, max(0.0, entropy), alts)

    def text_of(self, token_id: int) -> str:
        """A token's text decoded alone (cached)."""
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self._tokenizer.decode([token_id])
        return text


def _stats_numpy(v: np.ndarray, token_id: int, k: int) -> tuple[float, int, float, list[int], list[float]]:
    """Probability and rank of ``token_id``, entropy, and the top-k of ``softmax(v)`` (v: fp32 logits, -inf allowed)."""
    chosen = float(v[token_id])
    ids = None
    if not np.isfinite(v).all():  # top-p / top-k left few candidates: work on those alone
        ids = np.flatnonzero(v > -np.inf)
        v = v[ids]
    m = float(v.max())
    e = np.exp(v - m)
    z = float(e.sum())
    lse = m + math.log(z)
    entropy = lse - float(np.dot(e, v)) / z
    k = min(k, v.shape[-1])
    top = np.argpartition(v, -k)[-k:]
    top = top[np.argsort(-v[top], kind="stable")]
    probs = np.exp(v[top] - lse).tolist()
    top_ids = (ids[top] if ids is not None else top).tolist()
    return math.exp(chosen - lse), int((v > chosen).sum()), entropy, top_ids, probs


def _stats_torch(logits, token_id: int, k: int) -> tuple[float, int, float, list[int], list[float]]:
    """The same as :func:`_stats_numpy` on an accelerator's tensor."""
    import torch

    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp[token_id]
    entropy = -torch.special.xlogy(logp.exp(), logp.exp()).sum()
    top = logp.topk(min(k, logp.shape[-1]))
    rank = (logp > chosen).sum()
    return float(chosen.exp()), int(rank), float(entropy), top.indices.tolist(), top.values.exp().tolist()
