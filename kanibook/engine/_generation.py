"""One generation on the model thread, streamed to the asyncio loop without ever blocking it, and stoppable.

``model.generate`` runs as a job on kanibook's one model thread (:mod:`._model_thread`, which also keeps torch's CPU
thread pools from slowing it). A streamer receives each new token id there, decodes the new text
incrementally and hands it to the event loop with ``call_soon_threadsafe``; the loop only ever awaits a queue, so
it stays free between tokens (widget clicks, other coroutines). A stopping criterion watches a
:class:`threading.Event`: :meth:`GenerationRun.stop` (or cancelling the consuming task) ends ``generate`` after the
token being computed, and the job has ended before the stream finishes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from ._model_thread import model_thread
from ._peak_memory import PeakMemoryTracker

__all__ = ["GenerationRun", "TurnStats"]

_END = object()


class _TailText(str):
    """Text the decoder released only at the end: it belongs to the last recorded token."""


@dataclass(frozen=True)
class TurnStats:
    """The figures of one model turn.

    :param prompt_tokens: Tokens the model received.
    :param completion_tokens: Tokens it generated (an end-of-sequence token not counted).
    :param time_to_first_token_s: Seconds from the start of ``generate`` to the first new token.
    :param tokens_per_second: Decoding rate after the first token (``(n - 1) / (t_last - t_first)``).
    :param total_s: Seconds from the start of ``generate`` to its end.
    :param peak_memory_bytes: Peak CUDA allocation (GPU) or peak process resident memory (CPU).
    :param memory_kind: ``"cuda"`` or ``"process"``: what ``peak_memory_bytes`` measures.
    :param stopped: True if the turn was stopped (Stop, cancel) before the model finished.
    :param tokens_after_stop: Tokens that still arrived after the stop was requested.
    :param stop_latency_s: Seconds from the stop request to the end of ``generate``.
    """

    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float | None
    tokens_per_second: float | None
    total_s: float
    peak_memory_bytes: int
    memory_kind: str
    stopped: bool = False
    tokens_after_stop: int = 0
    stop_latency_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _IncrementalDecoder:
    """Turns a growing list of token ids into text deltas, never splitting a multi-byte character.

    Decodes a short window before the new ids and emits only what it adds, so tokenizers that drop a leading
    space when decoding a lone token still produce the right text (the method text-generation-inference uses).
    """

    def __init__(self, tokenizer, decode_kwargs: dict):
        self._tokenizer = tokenizer
        self._kwargs = decode_kwargs
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        return self._delta(final=False)

    def flush(self) -> str:
        return self._delta(final=True)

    def _delta(self, final: bool) -> str:
        prefix_text = self._tokenizer.decode(self.ids[self._prefix : self._read], **self._kwargs)
        new_text = self._tokenizer.decode(self.ids[self._prefix :], **self._kwargs)
        if len(new_text) > len(prefix_text) and (final or not new_text.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self.ids)
            return new_text[len(prefix_text) :]
        return ""


class _LoopStreamer:
    """A transformers streamer (the ``put``/``end`` protocol) that forwards text to an asyncio queue."""

    def __init__(self, run: GenerationRun):
        self._run = run
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first passes the prompt
            self._prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self._run._on_token(int(token_id))

    def end(self) -> None:
        pass  # the worker signals the end itself, after generate() has returned


class _StopWhenRequested:
    """A stopping criterion that is true for every sequence once the run's stop event is set."""

    def __init__(self, event: threading.Event):
        self._event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self._event.is_set(), dtype=torch.bool, device=input_ids.device)


class GenerationRun:
    """One ``model.generate`` call on the model thread, consumed with ``async for text in run``.

    :param model: A transformers model.
    :param tokenizer: Its tokenizer (for decoding).
    :param inputs: The keyword inputs of ``generate`` (``input_ids``, ``attention_mask``, pixel values, ...).
    :param hyperparams: Generation arguments.
    :param eos_token_ids: Token ids that end the reply; they are not shown or counted.
    :param decode_kwargs: Arguments for ``tokenizer.decode``.
    :param device: The model's device (for the peak memory reading).
    :param probs: A :class:`kanibook.probs.record.ReplyProbs` to fill, token by token, with what the model
        considered (recorded on the model thread, appended here on the loop as the text arrives); None: not recorded.
    """

    def __init__(
        self, model, tokenizer, inputs, hyperparams: dict, eos_token_ids, decode_kwargs: dict | None, device, probs=None
    ):
        self._model = model
        self._inputs = inputs
        self._hyperparams = dict(hyperparams)
        self._eos = set(int(i) for i in eos_token_ids or ())
        self._decoder = _IncrementalDecoder(tokenizer, decode_kwargs or {})
        self._device = device
        self.prompt_tokens = int(inputs["input_ids"].shape[-1])
        self._stop_event = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._done: asyncio.Future | None = None  # the job on the model thread, as seen from the loop
        self.text = ""
        self.error: BaseException | None = None
        self.stats: TurnStats | None = None
        self.output_ids = None
        self._generated = 0
        self._t_start = self._t_first = self._t_last = self._t_stop = self._t_end = None
        self._tokens_after_stop = 0
        self._memory: PeakMemoryTracker | None = None
        #: The reply's per-token probabilities (None unless asked for); grows on the loop as tokens arrive.
        self.probs = probs
        self._recorder = None
        if probs is not None:
            from ..probs.record import ProbRecorder

            self._recorder = ProbRecorder(tokenizer, probs.top_k)

    # ---- the event-loop side ----

    def start(self) -> None:
        """Hand the generation to the model thread; must be called from the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._done = asyncio.wrap_future(model_thread().submit(self._work))

    def stop(self) -> None:
        """Ask the model to stop; it ends after the token being computed. Safe from any thread."""
        if not self._stop_event.is_set():
            self._t_stop = time.perf_counter()
            self._stop_event.set()

    @property
    def token_ids(self) -> list[int]:
        """The ids generated so far (end-of-sequence tokens left out), in order."""
        return list(self._decoder.ids)

    @property
    def stop_requested(self) -> bool:
        return self._stop_event.is_set()

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.done()

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        if self._done is None:
            self.start()
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # further calls end too
                raise StopAsyncIteration
            if isinstance(item, _TailText):
                last = self.probs.tokens[-1]
                self.probs.tokens[-1] = dataclasses.replace(last, text=last.text + item)
                continue
            if isinstance(item, str):
                return item
            self.probs.tokens.append(item)  # a token's record: it comes just before its text

    async def finish(self) -> None:
        """Stop if still running, and wait (without blocking the loop) until the job on the model thread has ended."""
        if self._done is None:
            return
        if not self._done.done():
            self.stop()
        await asyncio.shield(self._done)

    def raise_if_failed(self) -> None:
        if self.error is not None:
            from ..exceptions import GenerationError

            raise GenerationError(
                f"The model failed while generating ({type(self.error).__name__}: {self.error}); "
                "the conversation up to your message is kept."
            ) from self.error

    # ---- the worker side ----

    def _emit(self, item) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _on_token(self, token_id: int) -> None:
        now = time.perf_counter()
        if self._t_first is None:
            self._t_first = now
        self._t_last = now
        if self._stop_event.is_set():
            self._tokens_after_stop += 1
        self._memory.sample()
        if token_id in self._eos:
            return
        self._generated += 1
        piece = self._decoder.push(token_id)
        if self._recorder is not None:
            record = self._recorder.on_token(token_id, piece)
            if record is not None:
                self._emit(record)
        if piece:
            self.text += piece
            self._emit(piece)

    def _work(self) -> None:
        import torch
        from transformers import StoppingCriteriaList

        try:
            self._memory = PeakMemoryTracker(self._device)
            criteria = StoppingCriteriaList(self._hyperparams.pop("stopping_criteria", None) or [])
            criteria.append(_StopWhenRequested(self._stop_event))
            if self._recorder is not None:  # watches the logits before and after generate's processors
                self._recorder.attach(self._model)
            self._t_start = time.perf_counter()
            with torch.no_grad():
                self.output_ids = self._model.generate(
                    **self._inputs, streamer=_LoopStreamer(self), stopping_criteria=criteria, **self._hyperparams
                )
            tail = self._decoder.flush()
            if tail:
                if self._recorder is not None and self._recorder.count:  # the last token completed a character
                    self._emit(_TailText(tail))
                self.text += tail
                self._emit(tail)
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting side, never swallowed
            self.error = e
        finally:
            if self._recorder is not None:
                self._recorder.detach()
            self._t_end = time.perf_counter()
            self.stats = self._make_stats()
            self._emit(_END)

    def _make_stats(self) -> TurnStats:
        t_start = self._t_start or self._t_end
        rate = None
        if self._generated > 1 and self._t_last > self._t_first:
            rate = (self._generated - 1) / (self._t_last - self._t_first)
        return TurnStats(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self._generated,
            time_to_first_token_s=None if self._t_first is None else self._t_first - t_start,
            tokens_per_second=rate,
            total_s=self._t_end - t_start,
            peak_memory_bytes=self._memory.peak_bytes if self._memory else 0,
            memory_kind=self._memory.kind if self._memory else "process",
            stopped=self._stop_event.is_set(),
            tokens_after_stop=self._tokens_after_stop,
            stop_latency_s=None if self._t_stop is None else max(0.0, self._t_end - self._t_stop),
        )
