"""A GGUF file run natively by llama.cpp (kani's ``LlamaCppEngine``), mended for notebooks like the Hugging Face one.

kani's ``LlamaCppEngine.stream`` iterates llama.cpp's token stream with a plain loop inside an async generator, so
the event loop is blocked between tokens (no Stop click can arrive), and it needs a prompt pipeline passed by hand.
:class:`KanibookLlamaCppEngine` keeps kani's class and:

- runs llama.cpp's stream as a job on kanibook's model thread and hands each piece to the event loop, so the loop
  stays free; :meth:`stop` ends the stream after the current token, keeping the partial text;
- carries the turn's :class:`~kanibook.TurnStats` on each completion (``.stats``) and as ``last_stats``;
- takes the chat template the GGUF file itself carries (through its Hugging Face tokenizer) when no pipeline is given;
- speaks both vocabularies: ``max_new_tokens``/``do_sample``/``min_new_tokens`` (Hugging Face's) as well as
  llama.cpp's ``max_tokens``/``temperature``.

``kanibook.load("model.gguf", backend="llama.cpp")`` makes one. Needs ``llama-cpp-python``
(``pip install 'kanibook[llamacpp]'``, a source build of a few minutes).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, AsyncIterable

from kani.engines.base import Completion
from kani.models import ChatMessage

from ..exceptions import BusyError, KanibookError
from ._generation import TurnStats
from ._model_thread import model_thread
from ._peak_memory import PeakMemoryTracker

try:
    from kani.engines.llamacpp import LlamaCppEngine
except Exception:  # noqa: BLE001 - kani raises MissingModelDependencies (or ImportError) without llama-cpp-python
    raise KanibookError(
        "Running GGUF files natively needs llama-cpp-python: pip install 'kanibook[llamacpp]' "
        "(or load the file without backend='llama.cpp' to run it through transformers)."
    ) from None

__all__ = ["KanibookLlamaCppEngine", "LlamaCppCompletion"]

_END = object()


class LlamaCppCompletion(Completion):
    """A kani ``Completion`` that also carries the turn's figures as ``.stats``."""

    def __init__(self, message: ChatMessage, prompt_tokens: int, completion_tokens: int, stats: TurnStats):
        super().__init__(message, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self.stats = stats


class KanibookLlamaCppEngine(LlamaCppEngine):
    """kani's ``LlamaCppEngine`` on a local GGUF file: non-blocking, stoppable streaming with per-turn figures.

    :param model_path: The ``.gguf`` file.
    :param max_context_size: Context size (``n_ctx``); default: the file's training context, at most 8,192.
    :param prompt_pipeline: A kani prompt pipeline; default: the file's own chat template.
    :param model_load_kwargs: Passed to ``llama_cpp.Llama`` (e.g. ``n_gpu_layers=-1``, ``n_threads``).
    :param hyperparams: Default generation arguments.
    """

    def __init__(self, model_path: str | os.PathLike, max_context_size: int = 0, prompt_pipeline=None, *,
                 model_load_kwargs: dict | None = None, **hyperparams: Any):  # fmt: skip
        from ._gguf import gguf_tokenizer

        path = os.fspath(model_path)
        self.hf_tokenizer = gguf_tokenizer(path)  # the chat template and special tokens the file carries
        if prompt_pipeline is None:
            from kani.engines.huggingface.chat_template_pipeline import ChatTemplatePromptPipeline

            prompt_pipeline = ChatTemplatePromptPipeline(self.hf_tokenizer)
        load_kwargs = {"verbose": False, **(model_load_kwargs or {})}
        if not max_context_size:
            max_context_size = min(int(self.hf_tokenizer.model_max_length or 8192), 8192)
        super().__init__(model_path=path, max_context_size=max_context_size, prompt_pipeline=prompt_pipeline,
                         model_load_kwargs=load_kwargs, **hyperparams)  # fmt: skip
        self.model_id = path
        self._stop_event: threading.Event | None = None
        self.last_stats: TurnStats | None = None
        self.last_text = ""

    @property
    def is_generating(self) -> bool:
        return self._stop_event is not None

    def stop(self) -> None:
        """Stop the reply being generated after the current token; the partial text is kept."""
        if self._stop_event is not None:
            self._stop_event.set()

    async def predict(self, messages, functions=None, **hyperparams) -> LlamaCppCompletion:
        completion = None
        async for item in self.stream(messages, functions, **hyperparams):
            if not isinstance(item, str):
                completion = item
        return completion

    async def stream(self, messages: list[ChatMessage], functions=None, **hyperparams) -> AsyncIterable:
        if self._stop_event is not None:
            raise BusyError("A reply is still being generated: stop it (engine.stop()) or wait before sending another.")
        tokens, n_prompt, hp = self._get_generate_args(messages, functions, **_llama_vocabulary(hyperparams))
        stop = self._stop_event = threading.Event()
        turn = _Turn(n_prompt, stop)
        hp["logits_processor"] = _processors(self.model, turn, n_prompt, hp.pop("min_new_tokens", 0), hp)
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        job = model_thread().submit(self._run, tokens, hp, turn, lambda item: loop.call_soon_threadsafe(queue.put_nowait, item))
        self.last_text = ""
        try:
            while (item := await queue.get()) is not _END:
                self.last_text += item
                yield item
        finally:
            stop.set()  # a cancelled consumer stops the model too
            await asyncio.shield(asyncio.wrap_future(job))
            self._stop_event = None
            self.last_stats = turn.stats
        if turn.error is not None:
            from ..exceptions import GenerationError

            raise GenerationError(f"llama.cpp failed while generating ({type(turn.error).__name__}: {turn.error}); "
                                  "the conversation up to your message is kept.") from turn.error  # fmt: skip
        yield LlamaCppCompletion(ChatMessage.assistant(self.last_text.strip()), prompt_tokens=n_prompt,
                                 completion_tokens=turn.stats.completion_tokens, stats=turn.stats)  # fmt: skip

    def _run(self, tokens, hp: dict, turn: _Turn, emit) -> None:
        """On the model thread: llama.cpp's token stream, each piece handed to the loop, until done or stopped."""
        memory = PeakMemoryTracker(None)
        try:
            stream = self.model.create_completion(tokens, stream=True, **hp)
            for chunk in stream:
                turn.chunk(chunk["choices"][0].get("finish_reason"))
                memory.sample()
                text = chunk["choices"][0]["text"]
                if text:
                    emit(text)
                if turn.stop.is_set():
                    stream.close()  # llama.cpp stops after this token
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting side
            turn.error = e
        finally:
            turn.finish(memory)
            emit(_END)


class _Turn:
    """The figures of one llama.cpp turn, gathered on the model thread."""

    def __init__(self, prompt_tokens: int, stop: threading.Event):
        self.prompt_tokens, self.stop = prompt_tokens, stop
        self.start, self.first, self.last = time.perf_counter(), None, None
        self.sampled = 0  # sampling steps, counted by a logits processor: one per token, the end token included
        self.chunks = 0
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.stats: TurnStats | None = None

    def chunk(self, finish_reason: str | None) -> None:
        self.finish_reason = finish_reason
        if finish_reason is None:  # the closing chunk carries no new token
            self.last = time.perf_counter()
            self.first = self.first or self.last
            self.chunks += 1

    def finish(self, memory) -> None:
        end = time.perf_counter()
        count = self.sampled - (self.finish_reason == "stop")  # the end-of-sequence token is not part of the reply
        rate = (self.chunks - 1) / (self.last - self.first) if self.chunks > 1 and self.last > self.first else None
        self.stats = TurnStats(
            prompt_tokens=self.prompt_tokens, completion_tokens=count,
            time_to_first_token_s=None if self.first is None else self.first - self.start, tokens_per_second=rate,
            total_s=end - self.start, peak_memory_bytes=memory.peak_bytes, memory_kind=memory.kind,
            stopped=self.stop.is_set() and self.error is None,
        )  # fmt: skip


def _llama_vocabulary(hp: dict) -> dict:
    """Hugging Face's generation arguments in llama.cpp's words (both are accepted)."""
    hp = dict(hp)
    if "max_new_tokens" in hp:
        hp["max_tokens"] = hp.pop("max_new_tokens")
    if hp.pop("do_sample", True) is False:
        hp["temperature"] = 0.0
    for unused in ("decode_kwargs", "streamer_timeout"):
        hp.pop(unused, None)
    return hp


def _processors(model, turn: _Turn, n_prompt: int, min_new_tokens: int, hp: dict):
    """llama.cpp logits processors: count each sampling step, and (``min_new_tokens``) keep the end-of-sequence token
    out until that many tokens exist. A caller's own processors run after these."""
    import numpy as np
    from llama_cpp import LogitsProcessorList

    eos = model.token_eos()

    def count_and_hold(input_ids, scores):
        turn.sampled += 1
        if len(input_ids) - n_prompt < min_new_tokens:
            scores[eos] = -np.inf
        return scores

    return LogitsProcessorList([count_and_hold, *(hp.pop("logits_processor", None) or [])])
