"""What llama.cpp considered at every token: the same :class:`~kanibook.probs.record.TokenProb` records the
transformers road and the OpenAI-logprobs road make, from llama.cpp's own logits.

- While generating: a logits processor placed first in llama.cpp's sampler chain sees each step's raw logits (the
  whole vocabulary, before penalties, temperature, top-k/p); the model's ``sample`` is wrapped for the run's duration
  (an instance attribute, removed afterwards) to learn the token chosen from them. Each record has the token's
  probability, rank, entropy and top-k alternatives under the raw distribution. The distribution llama.cpp's sampler
  chain draws from after temperature / top-p is not exposed by llama-cpp-python: when sampling, the reply's note says
  so (greedy decoding picks the raw top token, rank 0).
- Teacher-forced (``score_text``, the lab): :func:`score_ids` evaluates the ids in batches asking llama.cpp for the
  logits of every position (no ``logits_all`` needed at load), then resets the context so the next reply evaluates
  its prompt afresh.
"""

from __future__ import annotations

import numpy as np

from ..probs.record import Alternative, Distribution, ReplyProbs, TokenProb, _stats_numpy

__all__ = ["LlamaProbRecorder", "SAMPLED_NOTE", "score_ids"]

SAMPLED_NOTE = ("from llama.cpp's logits: the model's raw distribution at each token (llama.cpp does not expose the "
                "one it sampled from after temperature / top-p)")  # fmt: skip


class LlamaProbRecorder:
    """Fills ``probs`` on the model thread while llama.cpp generates (see the module's docstring).

    :param llama: The ``llama_cpp.Llama``.
    :param probs: The records to grow, live.
    """

    def __init__(self, llama, probs: ReplyProbs):
        self._llama, self.probs = llama, probs
        self._raw: np.ndarray | None = None
        self._bytes, self._text = b"", ""
        self._texts: dict[int, str] = {}

    def watch(self, input_ids, scores):
        """The first logits processor: keep an fp32 copy of the raw logits."""
        self._raw = np.array(scores, dtype=np.float32)
        return scores

    def attach(self) -> None:
        llama = self._llama
        sample = type(llama).sample.__get__(llama)

        def sample_and_record(*args, **kwargs):
            token = sample(*args, **kwargs)
            self._on_token(int(token))
            return token

        llama.sample = sample_and_record  # an instance attribute: the class is untouched

    def detach(self) -> None:
        self._llama.__dict__.pop("sample", None)

    def _on_token(self, token: int) -> None:
        raw, self._raw = self._raw, None
        if raw is None or _ends_turn(self._llama, token):  # an end-of-generation token is not part of the reply
            return
        prob, rank, entropy, ids, probs = _stats_numpy(raw, token, self.probs.top_k)
        alts = tuple(Alternative(i, self.text_of(i), q) for i, q in zip(ids, probs) if q > 0)
        self._bytes += self._llama.detokenize([token], special=False)
        text = self._bytes.decode("utf-8", errors="ignore")
        added, self._text = text[len(self._text) :], text
        record = TokenProb(len(self.probs.tokens), token, added, Distribution(prob, rank, max(0.0, entropy), alts))
        self.probs.tokens.append(record)

    def text_of(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self._llama.detokenize([token], special=True).decode("utf-8", errors="replace")
        return text


def _ends_turn(llama, token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llama._model.vocab, token))


def score_ids(llama, ids: list[int], top_k: int = 5, keep_full: bool = False):
    """Teacher-forced :class:`~kanibook.scoring.TokenScores` of ``ids`` from llama.cpp's logits (run it on the model
    thread). The context is reset afterwards: the next generation evaluates its prompt again."""
    from ..exceptions import KanibookError
    from ..scoring import scores_from_logits

    ids = [int(i) for i in ids]
    if len(ids) > llama.n_ctx():
        raise KanibookError(f"{len(ids)} tokens do not fit llama.cpp's context of {llama.n_ctx()}: score a shorter text "
                            "or load with max_context_size=...")  # fmt: skip
    if len(ids) < 2:
        return scores_from_logits(ids, np.zeros((0, llama.n_vocab()), dtype=np.float32), top_k=top_k)
    n_vocab, rows = llama.n_vocab(), []
    llama.reset()
    llama._ctx.kv_cache_seq_rm(-1, 0, -1)
    try:
        for start in range(0, len(ids) - 1, llama.n_batch):
            batch = ids[start : min(len(ids) - 1, start + llama.n_batch)]
            llama._batch.set_batch(batch=batch, n_past=start, logits_all=True)
            llama._ctx.decode(llama._batch)
            out = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(len(batch) * n_vocab,))
            rows.append(out.reshape(len(batch), n_vocab).copy())
    finally:
        llama.reset()
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
    return scores_from_logits(ids, np.concatenate(rows), top_k=top_k, keep_full=keep_full)
