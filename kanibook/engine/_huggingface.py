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
- ``stream(..., probabilities=True)`` (or a number of alternatives) records what the model considered at every
  token (``completion.probs``, live in ``engine.last_probs``; see :mod:`kanibook.probs`).
- ``audio_sample_rate`` / ``audio_sr`` (what kani's documentation says) mean kani's ``mm_audio_sample_rate``,
  instead of falling silently into the generation arguments; the processor is given the sampling rate too, and
  without one the audio feature extractor's own rate is used.
- Gemma 3's ``token_type_ids`` (which kani asks the processor not to return) reach ``generate``.
- An image sent to a text-only model, or audio to a model without an audio processor, is refused before generating
  (:class:`~kanibook.exceptions.MediaError`), instead of being dropped silently.
- A vision-language model's context size is found in its ``text_config``.
- A local folder never waits on the network; an unknown model id fails within seconds with a clear message; a folder
  whose ``config.json`` is not valid JSON is named with the position of the error, before anything loads.
- ``chat_template=`` (a Jinja string or a ``.jinja`` file) gives a model the template its files lack, checked before
  loading; a model without one (a base model) loads, says so (``engine.load_line``), scores and continues plain text,
  and refuses a chat in one line (:mod:`kanibook.engine._template`).
- With no dtype named, a model on a CPU loads in bf16 where the CPU computes it natively, else in fp32
  (:mod:`kanibook.engine._dtype`); the load line says which.
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
from ._gguf import gguf_model_path, is_gguf
from ._hub import check_model_available, hub_offline
from ._template import (NO_TEMPLATE_NOTE, NoChatTemplateError, has_chat_template, plain_text, read_chat_template,
                        set_chat_template)  # fmt: skip
from .._quiet_logs import fold_tracebacks
from ..exceptions import BusyError, KanibookError
from ..probs.record import new_reply_probs, remember, top_k_of
from ..quant.presets import load_kwargs_for

__all__ = ["KanibookEngine", "KanibookCompletion", "load"]

_TYPE_ID_KEYS = {"token_type_ids", "mm_token_type_ids"}  # kept only when the model's forward takes them


class KanibookCompletion(Completion):
    """A kani ``Completion`` that also carries the turn's figures as ``.stats``, its new ids as ``.token_ids`` (and
    ``.probs`` when recorded)."""

    def __init__(
        self,
        message: ChatMessage,
        prompt_tokens: int,
        completion_tokens: int,
        stats: TurnStats,
        probs=None,
        token_ids: list[int] | None = None,
    ):
        super().__init__(message, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self.stats = stats
        #: What the model considered at every token (:class:`kanibook.probs.record.ReplyProbs`) when the reply
        #: was generated with ``probabilities=True``; else None.
        self.probs = probs
        #: The generated token ids (end-of-sequence tokens left out), e.g. to find where two answers part.
        self.token_ids = list(token_ids or [])


class KanibookEngine(HuggingEngine):
    """kani's ``HuggingEngine``, streaming without blocking the event loop, stoppable, with per-turn figures.

    :param model_id: A Hugging Face model id or a local folder.
    :param max_context_size: The model's context size; inferred from its config (``text_config`` included).
    :param prompt_pipeline: A kani ``PromptPipeline``; default: the model's own chat template.
    :param audio_sample_rate: Sampling rate audio is resampled to (alias ``audio_sr``; kani's
        ``mm_audio_sample_rate``).
    :param chat_template: A chat template's text (Jinja), used in place of the tokenizer's own (e.g. for a base
        model that has none); :func:`load` also takes a ``.jinja`` file's path.
    :param dtype_note: Why the weights have their dtype (said in :attr:`load_line`).
    :param kwargs: Everything else kani's ``HuggingEngine`` takes, generation hyperparameters included.
    """

    def __init__(
        self,
        model_id: str | os.PathLike,
        max_context_size: int | None = None,
        prompt_pipeline=None,
        *,
        audio_sample_rate: int | None = None,
        chat_template: str | None = None,
        dtype_note: str | None = None,
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
        if chat_template is not None:
            set_chat_template(self._processor_or_tokenizer, chat_template)
        self.dtype_note = dtype_note
        if self.mm_audio_sample_rate is None:  # kani would hand audio over at its own rate, whatever the model expects
            extractor = getattr(self._processor_or_tokenizer, "feature_extractor", None)
            self.mm_audio_sample_rate = getattr(extractor, "sampling_rate", None)
        self._run: GenerationRun | None = None
        #: The figures of the most recent turn (also on each completion as ``.stats``).
        self.last_stats: TurnStats | None = None
        #: The text of the most recent turn so far (kept when a turn is stopped or cancelled).
        self.last_text: str = ""
        #: The per-token probabilities of the most recent turn generated with ``probabilities=True`` (growing
        #: while it streams); None when the last turn did not record them.
        self.last_probs = None
        #: This engine records per-token probabilities (``stream(..., probabilities=True)``).
        self.supports_probabilities = True

    @property
    def has_chat_template(self) -> bool:
        """Whether this model can chat: a chat template (its own or ``chat_template=``), or a hand-written pipeline."""
        return has_chat_template(self)

    @property
    def load_line(self) -> str:
        """One line about what was loaded: the model, its dtype and device, the context, and a missing template."""
        from .._names import model_display_name
        from ._dtype import describe_dtype

        dtype = describe_dtype(getattr(self.model, "dtype", "?"))
        why = f", {self.dtype_note}" if self.dtype_note else ""
        line = (f"{model_display_name(self.model_id)} ({type(self).__name__} on {self.device}, {dtype}{why}, "
                f"context {self.max_context_size} tokens)")  # fmt: skip
        return line if self.has_chat_template else f"{line}; {NO_TEMPLATE_NOTE}"

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
        """kani's ``build_prompt``, mended for multimodal models.

        - An audio model's processor is told the sampling rate.
        - The processor's own token type ids are kept (kani asks for none; Gemma 3 needs them to attend to an image's
          tokens bidirectionally), when the model's ``forward`` takes them.
        """
        from transformers import ProcessorMixin

        if not self.has_chat_template:
            raise NoChatTemplateError()
        processor = self._processor_or_tokenizer
        if self.pipeline is None or not isinstance(processor, ProcessorMixin):
            return super().build_prompt(messages, functions)
        audios, images, videos = self._collect_multimodal(messages)
        extra = {"sampling_rate": self.mm_audio_sample_rate} if audios and self.mm_audio_sample_rate else {}
        inputs = processor(
            text=self.pipeline(messages, functions),
            audio=audios,
            images=images,
            videos=videos,
            add_special_tokens=False,
            return_tensors="pt",
            **extra,
        )
        for key in _TYPE_ID_KEYS & set(inputs) - self._forward_params():
            del inputs[key]
        return inputs

    def _forward_params(self) -> set[str]:
        import inspect

        if not hasattr(self, "_forward_param_names"):
            self._forward_param_names = set(inspect.signature(self.model.forward).parameters)
        return self._forward_param_names

    async def stream(
        self,
        messages: list[ChatMessage],
        functions=None,
        *,
        decode_kwargs: dict | None = None,
        streamer_timeout: float | None = None,  # accepted for kani compatibility; the loop never blocks anyway
        **hyperparams,
    ) -> AsyncIterable[str | KanibookCompletion]:
        from ..media.check import check_media

        # here, not in build_prompt: kani's token counting swallows build_prompt's errors and retries shorter prompts
        check_media(self, messages)
        prompt = self.build_prompt(messages, functions)
        async for item in self._stream_prompt(prompt, decode_kwargs, hyperparams):
            yield item

    async def stream_from_ids(
        self, token_ids, *, decode_kwargs: dict | None = None, **hyperparams
    ) -> AsyncIterable[str | KanibookCompletion]:
        """Continue a token sequence (a prompt and the start of a reply, as ids) like :meth:`stream` does.

        What "what if" branches run (:mod:`kanibook.probs.branch`); ``probabilities=True`` records as in
        :meth:`stream`. Only the new text is streamed and put in the completion.

        :param token_ids: The ids to continue (a list of ints).
        :param hyperparams: Generation arguments.
        """
        import torch

        prompt = torch.tensor([list(token_ids)], dtype=torch.long)
        async for item in self._stream_prompt(prompt, decode_kwargs, hyperparams):
            yield item

    async def _stream_prompt(self, prompt, decode_kwargs, hyperparams):
        if self._run is not None:
            raise BusyError("A reply is still being generated: stop it (engine.stop()) or wait before sending another.")
        top_k = top_k_of(hyperparams.pop("probabilities", None))
        if top_k and (hyperparams.get("num_beams") or 1) > 1:
            raise KanibookError("probabilities are recorded for greedy decoding and sampling: leave out num_beams.")
        inputs, _, hyperparams = self._get_generate_args(prompt, **hyperparams)
        if "attention_mask" not in inputs:
            import torch

            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        eos_ids = self._get_eos_tokens(return_ids=True, **hyperparams)
        probs = new_reply_probs(inputs, hyperparams, top_k) if top_k else None
        run = GenerationRun(self.model, self.tokenizer, inputs, hyperparams, eos_ids, decode_kwargs, self.device, probs)
        self._run, self.last_text, self.last_probs = run, "", probs
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
        message = ChatMessage.assistant(run.text.strip())
        if probs is not None:
            remember(message, probs)  # kani puts this very message in the history: show_reply(kani) finds it
        yield KanibookCompletion(
            message,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            stats=stats,
            probs=probs,
            token_ids=run.token_ids,
        )

    async def prompt_len(self, messages, functions=None, **kwargs) -> int:
        """kani's count, of the prompt without media the model cannot take (refused with a clear error by stream)."""
        from ..media.check import without_refused_media

        if not self.has_chat_template:  # no warnings from kani's counting: stream() refuses the chat in one line
            return len(self.tokenizer(plain_text(messages), add_special_tokens=False)["input_ids"])
        if not messages and not functions:  # kani probes the empty conversation, which many templates refuse
            try:
                return await super().prompt_len(messages, functions, **kwargs)
            except Exception:  # noqa: BLE001 - nothing to count
                return 0
        return await super().prompt_len(without_refused_media(self, messages), functions, **kwargs)

    async def predict(self, messages, functions=None, *, decode_kwargs: dict | None = None, **hyperparams):
        completion = None
        async for item in self.stream(messages, functions, decode_kwargs=decode_kwargs, **hyperparams):
            if not isinstance(item, str):
                completion = item
        return completion


def load(
    model_id: str | os.PathLike | None = None,
    *,
    quant=None,
    quant_compute_dtype: str | None = None,
    gguf_file: str | None = None,
    backend: str = "transformers",
    chat_template: str | os.PathLike | None = None,
    **kwargs,
):
    """Load a local Hugging Face chat model as a kanibook engine (a kani ``HuggingEngine``) in one line.

    :param model_id: A Hugging Face model id, a local folder, or a ``.gguf`` file; None for the embedded demo model
        (offline). A GGUF file is converted once into kanibook's cache (see :mod:`kanibook.engine._gguf`).
    :param gguf_file: The GGUF file's name, for a folder or id that holds several.
    :param backend: ``"transformers"`` (kani's ``HuggingEngine``), or ``"llama.cpp"`` to run a GGUF file natively
        with kani's ``LlamaCppEngine`` (needs ``pip install 'kanibook[llamacpp]'``; ``quant`` does not apply: the
        file's own quantization is used).
    :param quant: A quantization preset (``"int8"``, ``"nf4"``, ``"nf4-dq"``, ``"fp4"``, ``"fp4-dq"``, or a dtype:
        ``"fp32"``, ``"bf16"``, ``"fp16"``) or a ``transformers.BitsAndBytesConfig``.
        With no quant (and no dtype in ``model_load_kwargs``), a model on a CPU loads in bf16 where the CPU computes it
        natively, else in fp32 (on a GPU: the model's own dtype); ``engine.load_line`` says which.
    :param quant_compute_dtype: The compute dtype of 4-bit presets (default ``"bfloat16"``).
    :param chat_template: A chat template (Jinja text, or a ``.jinja`` file's path) to use in place of the model's own,
        e.g. for a base model that has none; checked before anything loads. Used everywhere: chat, the prompt view,
        the lab's answers.
    :param kwargs: Passed to kani's ``HuggingEngine`` unchanged (see :class:`KanibookEngine`).
    """
    template = read_chat_template(chat_template) if chat_template is not None else None
    if backend in ("llama.cpp", "llamacpp", "llama-cpp"):
        if template is not None:
            kwargs["chat_template"] = template
        return _load_llamacpp(model_id, gguf_file, quant, kwargs)
    if backend != "transformers":
        raise KanibookError(f"Unknown backend {backend!r}: use 'transformers' or 'llama.cpp'.")
    if model_id is None:
        from ..demo_model import demo_model_path

        model_id = demo_model_path()
    elif gguf_file is not None or str(model_id).lower().endswith(".gguf") or is_gguf(model_id):
        model_id = gguf_model_path(model_id, gguf_file)
    check_config_json(model_id)
    quant_kwargs = load_kwargs_for(quant, quant_compute_dtype)
    if quant_kwargs:
        model_load_kwargs = dict(kwargs.pop("model_load_kwargs", None) or {})
        clash = sorted(set(quant_kwargs) & set(model_load_kwargs))
        if clash:
            raise KanibookError(f"Pass quant= or model_load_kwargs[{clash[0]!r}], not both.")
        kwargs["model_load_kwargs"] = {**model_load_kwargs, **quant_kwargs}
    else:
        kwargs["dtype_note"] = _default_dtype(kwargs)
    return KanibookEngine(model_id, chat_template=template, **kwargs)


def _default_dtype(kwargs: dict) -> str | None:
    """No dtype named: on a CPU, bf16 where it is native, else fp32 (put in ``model_load_kwargs``); -> the reason."""
    load_kwargs = dict(kwargs.get("model_load_kwargs") or {})
    if {"dtype", "torch_dtype", "quantization_config"} & set(load_kwargs):
        return None
    device = kwargs.get("device")
    if device is None:
        import torch

        if torch.cuda.is_available() or (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            return None  # an accelerator: the model's own dtype, as kani loads it
    elif not str(device).startswith("cpu"):
        return None
    import torch

    from ._dtype import default_cpu_dtype

    name, why = default_cpu_dtype()
    load_kwargs["dtype"] = getattr(torch, name)
    kwargs["model_load_kwargs"] = load_kwargs
    return f"the default: {why}; pass quant='fp32' or 'bf16' to choose"


def check_config_json(model_id) -> None:
    """A local folder's ``config.json`` that is not valid JSON: one line naming the file and the error's position."""
    import json

    path = os.path.join(os.fspath(model_id), "config.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
    except json.JSONDecodeError as e:
        raise KanibookError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): fix or replace that file; "
            "nothing was loaded."
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise KanibookError(f"Could not read {path} ({type(e).__name__}: {e}); nothing was loaded.") from None



def _load_llamacpp(model_id, gguf_file: str | None, quant, kwargs: dict):
    """A GGUF file (the embedded model's own when ``model_id`` is None) run natively by llama.cpp."""
    from ._gguf import _locate

    if quant is not None:
        raise KanibookError("quant= does not apply to backend='llama.cpp': the GGUF file's own quantization is used.")
    if model_id is None:
        from ..demo_model import demo_gguf_path

        model_id = demo_gguf_path()
    path = _locate(str(model_id), gguf_file)
    from ._llamacpp import KanibookLlamaCppEngine

    load_kwargs = {"n_threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    load_kwargs.update(kwargs.pop("model_load_kwargs", None) or {})
    return KanibookLlamaCppEngine(path, model_load_kwargs=load_kwargs, **kwargs)


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
