"""ONE teacher-forced scoring path: how probable a model finds every token of a given sequence.

A single forward pass over the ids (no sampling, no generation) gives, for every position ``i >= 1``, the model's
distribution over token ``i`` given tokens ``0..i-1``. From it this module keeps what the views and the quantization
lab need: the log-probability and rank of the actual token, the entropy, the top-k alternatives, and (when asked)
the whole log-softmax matrix in fp32, which the lab keeps for its KL divergences.

Everything runs on kanibook's model thread (see :mod:`kanibook.engine._model_thread`); the caller's thread waits.
Used by ``score_text`` (the prompt's side of the probabilities view) and by the quantization lab: the two must agree,
so neither computes log-probabilities another way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TokenScores", "score_ids", "score_tails", "scores_from_logits", "engine_score_ids", "engine_score_tails"]


@dataclass
class TokenScores:
    """Per-token scores of one sequence under one model.

    Lists are aligned with ``token_ids[1:]``: entry ``j`` is about token ``j + 1`` (the first token has no
    prediction).

    :param token_ids: The scored sequence.
    :param logprob: ``log p(token | everything before it)``, natural log.
    :param rank: 0 if the token was the model's top choice, 1 if second, ...
    :param entropy: Entropy of the distribution (nats).
    :param top_ids: The ``top_k`` most probable token ids at each position, most probable first.
    :param top_logprobs: Their log-probabilities.
    :param full_logprobs: The whole ``[len - 1, vocab]`` log-softmax in fp32 on the CPU (a torch tensor), only when
        ``keep_full=True`` was passed; else None.
    """

    token_ids: list[int]
    logprob: list[float] = field(default_factory=list)
    rank: list[int] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    top_ids: list[list[int]] = field(default_factory=list)
    top_logprobs: list[list[float]] = field(default_factory=list)
    full_logprobs: Any = None

    def __len__(self) -> int:
        return len(self.logprob)

    @property
    def perplexity(self) -> float:
        """``exp`` of the mean negative log-likelihood of the scored tokens."""
        import math

        return math.exp(-sum(self.logprob) / len(self.logprob)) if self.logprob else float("nan")


def score_ids(
    model,
    token_ids,
    *,
    top_k: int = 5,
    keep_full: bool = False,
    model_inputs: dict | None = None,
) -> TokenScores:
    """Score every token of ``token_ids`` (a list of ints or a 1-D/``[1, n]`` tensor) under ``model``, teacher-forced.

    :param model: A transformers causal LM (any device, any dtype: log-softmax is taken in fp32).
    :param top_k: How many alternatives to keep per position.
    :param keep_full: Keep the full fp32 log-softmax matrix (``vocab x len`` floats: 200 MB for 1,000 tokens of a
        50k vocabulary).
    :param model_inputs: Extra forward arguments (``attention_mask``, ``pixel_values``, ...).
    """
    from .engine._model_thread import model_thread

    return model_thread().run(_score, model, token_ids, top_k, keep_full, model_inputs or {})


def _score(model, token_ids, top_k: int, keep_full: bool, model_inputs: dict) -> TokenScores:
    import torch

    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(1, -1)
    if ids.shape[1] < 2:
        return TokenScores(token_ids=ids[0].tolist())
    device = getattr(model, "device", None) or next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), **model_inputs).logits[0, :-1]
    return scores_from_logits(ids[0].tolist(), logits, top_k=top_k, keep_full=keep_full)


def score_tails(model, sequences, last: int, *, pad_id: int = 0, max_tokens: int = 8192,
                on_batch=None) -> list[list[float]]:  # fmt: skip
    """The log-probabilities of the last ``last`` tokens of each sequence, teacher-forced, in batched forward passes.

    For many variants of one prompt that end with the same tokens (a reply scored under prompts with a part taken
    out): the sequences are left-padded into batches of at most ``max_tokens`` tokens, and only the logits that
    predict the last ``last`` tokens are computed. Each row's figures are :func:`scores_from_logits`'s, as for
    :func:`score_ids` (up to floating-point noise between a batched and a single forward pass).

    :param sequences: Lists of token ids, each longer than ``last``.
    :param pad_id: The id put in the (masked) padding.
    :param max_tokens: The most tokens (rows x the longest row) in one forward pass.
    :param on_batch: Called with the number of rows after each forward pass (a progress bar).
    """
    from .engine._model_thread import model_thread

    seqs = [list(s) for s in sequences]
    if last < 1 or any(len(s) <= last for s in seqs):
        raise ValueError("every sequence must be longer than the tail to score")
    out: list[list[float]] = []
    batch: list[list[int]] = []
    for seq in seqs:
        if batch and (len(batch) + 1) * max(len(seq), *map(len, batch)) > max_tokens:
            out += model_thread().run(_score_batch, model, batch, last, pad_id)
            if on_batch is not None:
                on_batch(len(batch))
            batch = []
        batch.append(seq)
    if batch:
        out += model_thread().run(_score_batch, model, batch, last, pad_id)
        if on_batch is not None:
            on_batch(len(batch))
    return out


def _score_batch(model, batch: list[list[int]], last: int, pad_id: int) -> list[list[float]]:
    import torch

    width = max(map(len, batch))
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, width - len(seq) :] = torch.as_tensor(seq)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    device = getattr(model, "device", None) or next(model.parameters()).device
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}
    with torch.inference_mode():
        try:
            logits = model(**inputs, logits_to_keep=last + 1).logits
        except TypeError:  # a model without logits_to_keep: all logits, the tail kept
            logits = model(**inputs).logits
        logits = logits[:, -(last + 1) : -1]
    return [scores_from_logits(seq[-(last + 1) :], logits[row], top_k=0).logprob for row, seq in enumerate(batch)]


def engine_score_ids(engine, token_ids, *, top_k: int = 5, keep_full: bool = False) -> TokenScores:
    """:func:`score_ids` for an engine: an engine that scores with its own logits (kanibook's llama.cpp engine, its
    ``score_ids``) does so, any other scores through its transformers model."""
    own = getattr(engine, "score_ids", None)
    if callable(own):
        return own(token_ids, top_k=top_k, keep_full=keep_full)
    return score_ids(engine.model, token_ids, top_k=top_k, keep_full=keep_full)


def engine_score_tails(engine, sequences, last: int, *, pad_id: int = 0, on_batch=None) -> list[list[float]]:
    """:func:`score_tails` for an engine: llama.cpp scores one sequence at a time with its own logits (its context
    holds one sequence), a transformers model in batches."""
    own = getattr(engine, "score_ids", None)
    if not callable(own):
        return score_tails(engine.model, sequences, last, pad_id=pad_id, on_batch=on_batch)
    seqs = [list(s) for s in sequences]
    if last < 1 or any(len(s) <= last for s in seqs):
        raise ValueError("every sequence must be longer than the tail to score")
    out = []
    for seq in seqs:
        out.append(own(seq, top_k=0).logprob[-last:])
        if on_batch is not None:
            on_batch(1)
    return out


def scores_from_logits(token_ids: list[int], logits, *, top_k: int = 5, keep_full: bool = False) -> TokenScores:
    """The scores of ``token_ids`` from the logits that predicted them (``[len - 1, vocab]``, any float dtype, a torch
    tensor or a numpy array): where a model's logits come from elsewhere than a transformers forward pass (llama.cpp's
    ``scores``), they are turned into figures here, the same way."""
    import torch

    scores = TokenScores(token_ids=list(token_ids))
    with torch.inference_mode():
        logp = torch.log_softmax(torch.as_tensor(logits).float(), dim=-1)
        target = torch.as_tensor(token_ids[1:], dtype=torch.long, device=logp.device)
        actual = logp.gather(-1, target[:, None])[:, 0]
        rank = (logp > actual[:, None]).sum(-1)
        entropy = -(logp.exp() * logp).nan_to_num().sum(-1)
        k = max(0, min(top_k, logp.shape[-1]))
        top = logp.topk(k, dim=-1) if k else None
    scores.logprob = actual.cpu().tolist()
    scores.rank = rank.cpu().tolist()
    scores.entropy = entropy.cpu().tolist()
    if top is not None:
        scores.top_ids = top.indices.cpu().tolist()
        scores.top_logprobs = top.values.cpu().tolist()
    if keep_full:
        scores.full_logprobs = logp.cpu()
    return scores
