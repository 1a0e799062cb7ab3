"""The kanibook engine: kani's ``HuggingEngine`` with non-blocking, stoppable streaming and per-turn figures.

:func:`load` is the one-line way in::

    engine = kanibook.load()                    # the embedded demo model, offline
    engine = kanibook.load("org/model", quant="nf4")

Everything kani's ``HuggingEngine`` accepts passes through unchanged (``prompt_pipeline``, ``model_cls``,
``tokenizer_cls``, ``eos_token_id=[...]``, ``max_context_size``, ``model_load_kwargs``, ``device``, generation
hyperparameters). What kanibook adds or mends:

- ``stream()`` runs ``generate`` on kanibook's one model thread and never blocks the event loop;
  :meth:`KanibookEngine.stop`, or cancelling the consuming task, ends ``generate`` within one token, and the stream
  ends once the job has. A stopped turn keeps its partial text. Torch work in the notebook's own cells does not slow
  it (see :mod:`kanibook.engine._model_thread`).
- Every completion carries :class:`~kanibook.TurnStats` (``completion.stats``, also ``engine.last_stats``).
- ``audio_sample_rate`` / ``audio_sr`` (what kani's documentation says) mean kani's ``mm_audio_sample_rate``,
  instead of falling silently into the generation arguments; the processor is given the sampling rate too.
- A vision-language model's context size is found in its ``text_config``.
- A local folder never waits on the network; an unknown model id fails within seconds with a clear message.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, AsyncIterable

from kani.engines.base import Completion
from kani.models import ChatMessage

with warnings.catch_warnings():  # kani's optional audio support imports pydub, which warns about ffmpeg at import
    warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
    from kani.engines.huggingface import HuggingEngine

from ._generation import GenerationRun, TurnStats
from ._hub import check_model_available, hub_offline
from .._quiet_logs import fold_tracebacks
from ..exceptions import BusyError, KanibookError
from ..quant.presets import load_kwargs_for

__all__ = ["KanibookEngine", "KanibookCompletion", "load"]


class KanibookCompletion(Completion):
    """A kani ``Completion`` that also carries the turn's figures as ``.stats`` and its new ids as ``.token_ids``."""

    def __init__(
        self,
        message: ChatMessage,
        prompt_tokens: int,
        completion_tokens: int,
        stats: TurnStats,
        token_ids: list[int] | None = None,
    ):
        super().__init__(message, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self.stats = stats
        #: The generated token ids (end-of-sequence tokens left out), e.g. to find where two answers part.
        self.token_ids = list(token_ids or [])


class KanibookEngine(HuggingEngine):
    """kani's ``HuggingEngine``, streaming without blocking the event loop, stoppable, with per-turn figures.

    :param model_id: A Hugging Face model id or a local folder.
    :param max_context_size: The model's context size; inferred from its config (``text_config`` included).
    :param prompt_pipeline: A kani ``PromptPipeline``; default: the model's own chat template.
    :param audio_sample_rate: Sampling rate audio is resampled to (alias ``audio_sr``; kani's
        ``mm_audio_sample_rate``).
    :param kwargs: Everything else kani's ``HuggingEngine`` takes, generation hyperparameters included.
    """

    def __init__(
        self,
        model_id: str | os.PathLike,
        max_context_size: int | None = None,
        prompt_pipeline=None,
        *,
        audio_sample_rate: int | None = None,
        **kwargs: Any,
    ):
        model_id = str(model_id)
        fold_tracebacks("kani")  # kani's warnings with a traceback become one line (see _quiet_logs)
        kwargs["mm_audio_sample_rate"] = _one_sample_rate(
            audio_sample_rate, kwargs.pop("audio_sr", None), kwargs.pop("mm_audio_sample_rate", None)
        )
        offline = check_model_available(model_id)
        with hub_offline(offline):
            if max_context_size is None:
                max_context_size = _context_size_from_config(model_id, kwargs.get("model_load_kwargs"))
            super().__init__(model_id, max_context_size, prompt_pipeline, **kwargs)
        self._run: GenerationRun | None = None
        #: The figures of the most recent turn (also on each completion as ``.stats``).
        self.last_stats: TurnStats | None = None
        #: The text of the most recent turn so far (kept when a turn is stopped or cancelled).
        self.last_text: str = ""

    # ---- control ----

    @property
    def is_generating(self) -> bool:
        return self._run is not None

    def stop(self) -> None:
        """Stop the reply being generated: ``generate`` ends after the current token; the partial text is kept."""
        if self._run is not None:
            self._run.stop()

    # ---- kani interface ----

    def build_prompt(self, messages, functions=None):
        """kani's ``build_prompt``, except that an audio model's processor is told the sampling rate."""
        from kani import _optional
        from transformers import ProcessorMixin

        if not (
            self.mm_audio_sample_rate
            and _optional.has_multimodal_core
            and isinstance(self._processor_or_tokenizer, ProcessorMixin)
            and self.pipeline is not None
        ):
            return super().build_prompt(messages, functions)
        audios, images, videos = self._collect_multimodal(messages)
        return self._processor_or_tokenizer(
            text=self.pipeline(messages, functions),
            audio=audios,
            images=images,
            videos=videos,
            add_special_tokens=False,
            return_tensors="pt",
            return_mm_token_type_ids=False,
            sampling_rate=self.mm_audio_sample_rate,
        )

    async def stream(
        self,
        messages: list[ChatMessage],
        functions=None,
        *,
        decode_kwargs: dict | None = None,
        streamer_timeout: float | None = None,  # accepted for kani compatibility; the loop never blocks anyway
        **hyperparams,
    ) -> AsyncIterable[str | KanibookCompletion]:
        if self._run is not None:
            raise BusyError("A reply is still being generated: stop it (engine.stop()) or wait before sending another.")
        prompt = self.build_prompt(messages, functions)
        inputs, _, hyperparams = self._get_generate_args(prompt, **hyperparams)
        eos_ids = self._get_eos_tokens(return_ids=True, **hyperparams)
        run = GenerationRun(self.model, self.tokenizer, inputs, hyperparams, eos_ids, decode_kwargs, self.device)
        self._run, self.last_text = run, ""
        try:
            async for piece in run:
                self.last_text = run.text
                yield piece
        finally:
            await run.finish()
            self._run = None
            self.last_text, self.last_stats = run.text, run.stats
        run.raise_if_failed()
        stats = run.stats
        yield KanibookCompletion(
            ChatMessage.assistant(run.text.strip()),
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            stats=stats,
            token_ids=run.token_ids,
        )

    async def predict(self, messages, functions=None, *, decode_kwargs: dict | None = None, **hyperparams):
        completion = None
        async for item in self.stream(messages, functions, decode_kwargs=decode_kwargs, **hyperparams):
            if not isinstance(item, str):
                completion = item
        return completion


def load(model_id: str | os.PathLike | None = None, *, quant=None, quant_compute_dtype: str | None = None, **kwargs):
    """Load a local Hugging Face chat model as a kanibook engine (a kani ``HuggingEngine``) in one line.

    :param model_id: A Hugging Face model id or a local folder; None for the embedded demo model (offline).
    :param quant: A quantization preset (``"int8"``, ``"nf4"``, ``"nf4-dq"``, ``"fp4"``, ``"fp4-dq"``, or a dtype:
        ``"fp32"``, ``"bf16"``, ``"fp16"``) or a ``transformers.BitsAndBytesConfig``.
    :param quant_compute_dtype: The compute dtype of 4-bit presets (default ``"bfloat16"``).
    :param kwargs: Passed to kani's ``HuggingEngine`` unchanged (see :class:`KanibookEngine`).
    """
    if model_id is None:
        from ..demo_model import demo_model_path

        model_id = demo_model_path()
    quant_kwargs = load_kwargs_for(quant, quant_compute_dtype)
    if quant_kwargs:
        model_load_kwargs = dict(kwargs.pop("model_load_kwargs", None) or {})
        clash = sorted(set(quant_kwargs) & set(model_load_kwargs))
        if clash:
            raise KanibookError(f"Pass quant= or model_load_kwargs[{clash[0]!r}], not both.")
        kwargs["model_load_kwargs"] = {**model_load_kwargs, **quant_kwargs}
    return KanibookEngine(model_id, **kwargs)


def _one_sample_rate(*rates: int | None) -> int | None:
    given = {r for r in rates if r is not None}
    if len(given) > 1:
        raise KanibookError(f"Conflicting audio sample rates {sorted(given)}: pass audio_sample_rate once.")
    return given.pop() if given else None


def _context_size_from_config(model_id: str, model_load_kwargs: dict | None) -> int | None:
    """kani reads the context size from the top level of the config only; multimodal models keep it in text_config."""
    from transformers import AutoConfig

    token = (model_load_kwargs or {}).get("token")
    try:
        config = AutoConfig.from_pretrained(model_id, token=token)
    except Exception:
        return None  # let kani's own loading report the problem
    for cfg in (config, getattr(config, "text_config", None)):
        for key in ("model_max_len", "max_position_embeddings"):
            value = getattr(cfg, key, None) if cfg is not None else None
            if value:
                return int(value)
    return None
