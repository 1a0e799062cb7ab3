"""A GGUF file run natively by llama.cpp (kani's ``LlamaCppEngine``), mended for notebooks like the Hugging Face one.

kani's ``LlamaCppEngine.stream`` iterates llama.cpp's token stream with a plain loop inside an async generator, so
the event loop is blocked between tokens (no Stop click can arrive), and it needs a prompt pipeline passed by hand.
:class:`KanibookLlamaCppEngine` keeps kani's class and:

- runs llama.cpp's stream as a job on kanibook's model thread and hands each piece to the event loop, so the loop
  stays free; :meth:`stop` ends the stream after the current token, keeping the partial text;
- carries the turn's :class:`~kanibook.TurnStats` on each completion (``.stats``) and as ``last_stats``;
- takes the chat template the GGUF file itself carries (through its Hugging Face tokenizer) when no pipeline is given;
- speaks both vocabularies, at load and per call: ``max_new_tokens``/``do_sample``/``min_new_tokens``/
  ``repetition_penalty`` (Hugging Face's) as well as llama.cpp's ``max_tokens``/``temperature``/``repeat_penalty``;
  an argument neither knows is refused in one line (at load: before the file is read);
- takes ``chat_template=`` like the transformers road; without any template it loads, and a chat is refused in one
  line (it still scores text and continues plain text: :meth:`stream_from_ids`);
- shows its inside like the transformers road: the prompt view gets the ids llama.cpp itself evaluates (its own
  tokenizer over the text of the template it applies), and ``probabilities=True`` records each token's
  probability, rank, entropy and alternatives from llama.cpp's logits (:mod:`._llamacpp_probs`), as does
  :meth:`score_ids` for ``score_text`` and ``explain_reply``; :meth:`greedy_text` gives ``template_what_if`` its
  greedy continuations. The logit lens needs hidden states, which llama.cpp does not expose: it says so.

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
from ..probs.record import ReplyProbs, remember, top_k_of
from ._generation import TurnStats
from ._llamacpp_probs import SAMPLED_NOTE, LlamaProbRecorder, score_ids
from ._model_thread import model_thread
from ._peak_memory import PeakMemoryTracker
from ._template import NO_TEMPLATE_NOTE, NoChatTemplateError, has_chat_template

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
    """A kani ``Completion`` that also carries the turn's figures as ``.stats`` (and ``.probs``, ``.token_ids`` when
    probabilities were recorded)."""

    def __init__(self, message: ChatMessage, prompt_tokens: int, completion_tokens: int, stats: TurnStats,
                 probs: ReplyProbs | None = None):  # fmt: skip
        super().__init__(message, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self.stats = stats
        self.probs = probs
        self.token_ids = probs.token_ids if probs is not None else None


class KanibookLlamaCppEngine(LlamaCppEngine):
    """kani's ``LlamaCppEngine`` on a local GGUF file: non-blocking, stoppable streaming with per-turn figures.

    :param model_path: The ``.gguf`` file.
    :param max_context_size: Context size (``n_ctx``); default: the file's training context, at most 8,192.
    :param prompt_pipeline: A kani prompt pipeline; default: the file's own chat template.
    :param model_load_kwargs: Passed to ``llama_cpp.Llama`` (e.g. ``n_gpu_layers=-1``, ``n_threads``).
    :param chat_template: A chat template's text used in place of the file's own (e.g. for a base model's file).
    :param hyperparams: Default generation arguments, in either vocabulary.
    """

    def __init__(self, model_path: str | os.PathLike, max_context_size: int = 0, prompt_pipeline=None, *,
                 model_load_kwargs: dict | None = None, chat_template: str | None = None,
                 **hyperparams: Any):  # fmt: skip
        from ._gguf import gguf_tokenizer

        hyperparams = _llama_vocabulary(hyperparams)  # refused before the file is read, and kept translated
        path = os.fspath(model_path)
        self.hf_tokenizer = gguf_tokenizer(path)  # the chat template and special tokens the file carries
        if chat_template is not None:
            self.hf_tokenizer.chat_template = chat_template
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
        #: The per-token probabilities of the last turn generated with ``probabilities=True`` (growing live).
        self.last_probs: ReplyProbs | None = None
        self.supports_probabilities = True

    # ---- what the views need: the tokenizer the file carries, the ids llama.cpp evaluates ----

    @property
    def tokenizer(self):
        """The file's tokenizer as a Hugging Face tokenizer (special tokens, texts); the ids come from llama.cpp."""
        return self.hf_tokenizer

    @property
    def _processor_or_tokenizer(self):
        return self.hf_tokenizer

    def prompt_ids(self, text: str) -> list[int]:
        """The ids llama.cpp evaluates for a prompt's text: its own tokenizer, exactly as kani's engine calls it."""
        return list(self.model.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for, as llama.cpp writes it (special tokens as their text)."""
        return self.model.detokenize([int(token_id)], special=True)

    @property
    def has_chat_template(self) -> bool:
        return has_chat_template(self)

    @property
    def load_line(self) -> str:
        from .._names import model_display_name

        line = (f"{model_display_name(self.model_id)} ({type(self).__name__}, llama.cpp on the file's own "
                f"quantization, context {self.max_context_size} tokens)")  # fmt: skip
        return line if self.has_chat_template else f"{line}; {NO_TEMPLATE_NOTE}"

    def build_prompt(self, messages, functions=None):
        if not self.has_chat_template:
            raise NoChatTemplateError()
        return super().build_prompt(messages, functions)

    async def prompt_len(self, messages, functions=None, **kwargs) -> int:
        if not self.has_chat_template:  # no warnings from kani's counting: stream() refuses the chat in one line
            from ._template import plain_text

            return len(self.model.tokenize(plain_text(messages).encode("utf-8"), add_bos=False, special=False))
        if not messages and not functions:  # kani probes the empty conversation, which many templates refuse
            try:
                return await super().prompt_len(messages, functions, **kwargs)
            except Exception:  # noqa: BLE001 - nothing to count
                return 0
        return await super().prompt_len(messages, functions, **kwargs)

    def score_ids(self, ids, *, top_k: int = 5, keep_full: bool = False):
        """Teacher-forced scores of ``ids`` from llama.cpp's logits (:class:`~kanibook.scoring.TokenScores`), on the
        model thread."""
        if self._stop_event is not None:
            raise BusyError("A reply is still being generated: stop it (engine.stop()) or wait before scoring.")
        return model_thread().run(score_ids, self.model, list(ids), top_k, keep_full)

    def greedy_text(self, ids, n: int) -> str:
        """The first ``n`` tokens llama.cpp generates greedily after ``ids`` (an end-of-turn token ends it and is
        shown), as text: what a template variant makes the model say (``template_what_if``)."""
        if self._stop_event is not None:
            raise BusyError("A reply is still being generated: stop it (engine.stop()) or wait before asking.")
        return model_thread().run(_greedy, self.model, [int(i) for i in ids], n)

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
        top_k = top_k_of(hyperparams.pop("probabilities", None))
        tokens, _, hp = self._get_generate_args(messages, functions, **_llama_vocabulary(hyperparams))
        async for item in self._stream_ids(list(tokens), hp, top_k):
            yield item

    async def stream_from_ids(self, token_ids, **hyperparams) -> AsyncIterable:
        """Continue a token sequence (e.g. a plain text's ids, for a model without a chat template) like
        :meth:`stream` does; ``probabilities=True`` records as there."""
        if self._stop_event is not None:
            raise BusyError("A reply is still being generated: stop it (engine.stop()) or wait before sending another.")
        top_k = top_k_of(hyperparams.pop("probabilities", None))
        hp = {**self.hyperparams, **_llama_vocabulary(hyperparams)}
        hp.setdefault("max_tokens", None)
        async for item in self._stream_ids([int(i) for i in token_ids], hp, top_k):
            yield item

    async def _stream_ids(self, tokens: list[int], hp: dict, top_k: int) -> AsyncIterable:
        n_prompt = len(tokens)
        stop = self._stop_event = threading.Event()
        turn = _Turn(n_prompt, stop)
        recorder = None
        if top_k:
            kept = {k: v for k, v in hp.items() if isinstance(v, (int, float, bool, str)) or v is None}
            sampling = (hp.get("temperature") if hp.get("temperature") is not None else 0.8) > 0
            probs = ReplyProbs(top_k=top_k, prompt_ids=list(tokens), hyperparams=kept,
                               note=SAMPLED_NOTE if sampling else None)  # fmt: skip
            recorder = LlamaProbRecorder(self.model, probs)
        self.last_probs = recorder.probs if recorder else None
        hp["logits_processor"] = _processors(self.model, turn, n_prompt, hp.pop("min_new_tokens", 0), hp, recorder)
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        job = model_thread().submit(self._run, tokens, hp, turn, lambda item: loop.call_soon_threadsafe(queue.put_nowait, item),
                                    recorder)  # fmt: skip
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
        message = ChatMessage.assistant(self.last_text.strip())
        probs = recorder.probs if recorder else None
        if probs is not None:
            remember(message, probs)  # kani puts this very message in the history: show_reply(kani) finds it
        yield LlamaCppCompletion(message, prompt_tokens=n_prompt, completion_tokens=turn.stats.completion_tokens,
                                 stats=turn.stats, probs=probs)  # fmt: skip

    def _run(self, tokens, hp: dict, turn: _Turn, emit, recorder: LlamaProbRecorder | None = None) -> None:
        """On the model thread: llama.cpp's token stream, each piece handed to the loop, until done or stopped."""
        memory = PeakMemoryTracker(None)
        if recorder is not None:
            recorder.attach()
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
            if recorder is not None:
                recorder.detach()
            turn.finish(memory)
            emit(_END)


def _greedy(llama, ids: list[int], n: int) -> str:
    from ._llamacpp_probs import _ends_turn

    out: list[int] = []
    if n > 0:
        for token in llama.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            out.append(int(token))
            if len(out) >= n or _ends_turn(llama, int(token)):
                break
    return llama.detokenize(out, special=True).decode("utf-8", errors="replace")


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


_RENAMED = {"max_new_tokens": "max_tokens", "repetition_penalty": "repeat_penalty"}
_OURS = {"min_new_tokens", "logits_processor"}  # handled here, not passed to create_completion


def _llama_vocabulary(hp: dict) -> dict:
    """Hugging Face's generation arguments in llama.cpp's words (both are accepted); an argument neither knows is
    refused in one line."""
    hp = dict(hp)
    for hf, llama in _RENAMED.items():
        if hf in hp:
            hp[llama] = hp.pop(hf)
    if hp.pop("do_sample", True) is False:
        hp["temperature"] = 0.0
    for unused in ("decode_kwargs", "streamer_timeout"):
        hp.pop(unused, None)
    unknown = sorted(set(hp) - _completion_arguments() - _OURS)
    if unknown:
        raise KanibookError(
            f"Unknown generation argument {unknown[0]!r} for llama.cpp: use max_new_tokens (or max_tokens), "
            "do_sample/temperature, top_p, top_k, min_new_tokens, repetition_penalty (or repeat_penalty), seed, stop "
            "(llama_cpp.Llama.create_completion's arguments)."
        )
    return hp


def _completion_arguments() -> set[str]:
    import inspect

    from llama_cpp import Llama

    return set(inspect.signature(Llama.create_completion).parameters) - {"self", "prompt", "stream"}


def _processors(model, turn: _Turn, n_prompt: int, min_new_tokens: int, hp: dict, recorder=None):
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

    watch = [recorder.watch] if recorder is not None else []  # first: the raw logits
    return LogitsProcessorList([*watch, count_and_hold, *(hp.pop("logits_processor", None) or [])])
