"""Any kani engine: kani's ``OpenAIEngine`` against an OpenAI-compatible server (``transformers serve``, vLLM, TGI).

:func:`openai_engine` is the one-line way in::

    engine = kanibook.openai_compat.openai_engine("http://127.0.0.1:8000/v1", tokenizer=kanibook.demo_model_path())

What it mends in kani 1.10's ``OpenAIEngine`` for local servers:

- Token counting works offline. kani counts with tiktoken, which downloads its encoding files on first use (a round
  then fails with "Could not find a valid prompt" where the internet is out of reach). Here prompts are counted with
  the served model's own Hugging Face tokenizer and chat template (the same count the server reports), or, with no
  tokenizer, estimated at about four characters per token.
- One engine works from several event loops (a notebook's kernel loop for the chat panel, the session's loop for
  ``%%chat``, ``asyncio.run`` in a script): the OpenAI client's connection pool belongs to the loop that first used it,
  so each loop gets its own client.
- The model id defaults to the one the server serves (``GET /v1/models``); no API key is needed.
- ``probabilities=True`` (as with :func:`kanibook.load`'s engines) asks the server for ``logprobs`` and records them
  live, token by token (:mod:`kanibook.probs.api`); a server that ignores the request leaves the reply with a note
  instead, and the engine stops claiming ``supports_probabilities``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import weakref
from pathlib import Path
from typing import Any

from .exceptions import KanibookError, require

__all__ = ["CharEstimateCounter", "HFTokenCounter", "LocalOpenAIEngine", "openai_engine"]  # noqa: F822 (lazy)

_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "function": "tool"}


class CharEstimateCounter:
    """A rough token counter for when no tokenizer is at hand: about four characters per token.

    :param chars_per_token: Characters counted as one token.
    """

    def __init__(self, chars_per_token: float = 4.0):
        self.chars_per_token = chars_per_token

    def encode(self, text: str) -> list[int]:
        """A list as long as the estimated number of tokens (kani only ever takes its length)."""
        return [0] * math.ceil(len(text or "") / self.chars_per_token)

    def count_prompt(self, messages, functions=None) -> int | None:
        return None  # no chat template: kani's per-message estimate is used


class HFTokenCounter:
    """Counts tokens with a Hugging Face tokenizer, whole prompts with its chat template when it has one.

    :param tokenizer: A ``transformers`` tokenizer, or a local folder (or Hub id in the local cache) to load one from.
    """

    def __init__(self, tokenizer: Any):
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = _load_tokenizer(tokenizer)
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text or "", add_special_tokens=False))

    def count_prompt(self, messages, functions=None) -> int | None:
        """The exact token count of the templated prompt, or None if the template cannot render these messages."""
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        conversation = [{"role": _ROLES.get(m.role.value, m.role.value), "content": m.text or ""} for m in messages]
        tools = [{"type": "function", "function": _function_spec(f)} for f in functions or ()] or None
        try:
            ids = self.tokenizer.apply_chat_template(
                conversation, tools=tools, tokenize=True, add_generation_prompt=True
            )
        except Exception:  # noqa: BLE001 - a template that rejects these roles: fall back to the per-message count
            return None
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)


def _function_spec(f) -> dict:
    return {"name": f.name, "description": f.desc, "parameters": f.json_schema}


def _load_tokenizer(source: str | os.PathLike):
    from transformers import AutoTokenizer

    from .engine._hub import hub_offline

    local = Path(source).is_dir()
    try:
        with hub_offline(local):
            return AutoTokenizer.from_pretrained(str(source), local_files_only=local)
    except Exception as e:  # noqa: BLE001 - missing files, bad folder, offline Hub: one actionable line
        raise KanibookError(
            f"Could not load a tokenizer from {str(source)!r} ({type(e).__name__}); pass the served model's local "
            "folder as tokenizer=, or tokenizer=None for a rough estimate."
        ) from None


def _engine_base():
    """kani's OpenAIEngine, or an error that names the install that provides it."""
    require("openai", "openai", "Talking to an OpenAI-compatible server")
    from kani.engines.openai import OpenAIEngine

    return OpenAIEngine


def __getattr__(name: str):
    # LocalOpenAIEngine subclasses kani's OpenAIEngine, which imports the openai package: built on first access
    if name == "LocalOpenAIEngine":
        return _engine_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _engine_class():
    cls = globals().get("LocalOpenAIEngine")
    if cls is None:
        cls = globals()["LocalOpenAIEngine"] = _make_engine_class()
    return cls


def _make_engine_class():
    base = _engine_base()

    class LocalOpenAIEngine(base):
        """kani's ``OpenAIEngine`` for local OpenAI-compatible servers: offline token counting, one client per loop.

        :param counter: What counts tokens: :class:`HFTokenCounter` or :class:`CharEstimateCounter`.
        :param kwargs: Everything kani's ``OpenAIEngine`` takes (``model``, ``api_base``, ``max_context_size``,
            generation hyperparameters such as ``max_tokens`` and ``temperature``).
        """

        supports_probabilities = True  # until a server answers a request for logprobs without them

        def __init__(self, *, counter: HFTokenCounter | CharEstimateCounter | None = None, **kwargs: Any):
            self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
            self._taps: dict = {}  # task -> what sees each streamed chunk (probabilities)
            self.last_probs = None
            self._base_client = None
            self._base_taken = False
            self.counter = counter or CharEstimateCounter()
            kwargs["tokenizer"] = self.counter  # kani's counting uses tokenizer.encode: never tiktoken
            super().__init__(**kwargs)

        # ---- one OpenAI client per event loop ----

        @property
        def client(self):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return self._base_client
            client = self._clients.get(loop)
            if client is None:
                if not self._base_taken:
                    client = self._base_client  # the first loop to talk uses the client given or built by kani
                    self._base_taken = True
                else:  # its connection pool belongs to that loop (maybe closed by now): a fresh pool for this one
                    from openai import DefaultAsyncHttpxClient

                    client = self._base_client.copy(http_client=DefaultAsyncHttpxClient())
                self._clients[loop] = client
            tap = self._taps.get(asyncio.current_task())
            return client if tap is None else _TappedClient(client, tap)

        @client.setter
        def client(self, value) -> None:
            self._base_client = value

        async def close(self) -> None:
            """Close the client of the running loop (clients of other loops close with their loops)."""
            client = self._clients.pop(asyncio.get_running_loop(), None)
            if client is not None:
                await client.close()

        # ---- probabilities from the server's logprobs ----

        async def stream(self, messages, functions=None, **hyperparams):
            """kani's stream; ``probabilities=True`` (or a top-k count) records the server's logprobs live."""
            from .probs.api import MAX_TOP_LOGPROBS, LogprobsCollector
            from .probs.record import ReplyProbs, remember, top_k_of

            top_k = min(top_k_of(hyperparams.pop("probabilities", None)), MAX_TOP_LOGPROBS)
            if not top_k:
                async for item in super().stream(messages, functions, **hyperparams):
                    yield item
                return
            kept = {k: v for k, v in hyperparams.items() if isinstance(v, (int, float, bool, str)) or v is None}
            self.last_probs = probs = ReplyProbs(top_k=top_k, source="api", hyperparams=kept)
            collector = LogprobsCollector(probs)
            task = asyncio.current_task()
            self._taps[task] = collector
            try:
                async for item in super().stream(messages, functions, logprobs=True, top_logprobs=top_k, **hyperparams):
                    if not isinstance(item, str):
                        if not collector.finish(item.message.text):
                            self.supports_probabilities = False  # from now on: "not available for this engine"
                        remember(item.message, probs)
                        item.probs = probs
                    yield item
            finally:
                self._taps.pop(task, None)

        async def predict(self, messages, functions=None, **hyperparams):
            if not hyperparams.get("probabilities"):
                hyperparams.pop("probabilities", None)
                return await super().predict(messages, functions, **hyperparams)
            completion = None
            async for item in self.stream(messages, functions, **hyperparams):
                if not isinstance(item, str):
                    completion = item
            return completion

        # ---- token counting without tiktoken ----

        def prompt_len(self, messages, functions=None, **kwargs) -> int:
            """Tokens in the prompt: exact with the model's chat template, else kani's per-message count."""
            exact = self.counter.count_prompt(messages, functions)
            if exact is not None:
                return exact
            if messages and (cached := self.get_cached_prompt_len(messages[:-1], functions, **kwargs)) is not None:
                return cached + self.message_len(messages[-1])
            return sum(self.message_len(m) for m in messages) + self.function_token_reserve(functions)

    LocalOpenAIEngine.__module__ = __name__
    return LocalOpenAIEngine


class _TappedClient:
    """An OpenAI client whose streamed chat completions show each chunk to ``tap`` on its way to kani."""

    def __init__(self, client, tap):
        self._client, self._tap = client, tap

    @property
    def chat(self):  # kani calls client.chat.completions.create(...)
        return self

    @property
    def completions(self):
        return self

    async def create(self, **kwargs):
        stream = await self._client.chat.completions.create(**kwargs)
        return _tapped(stream, self._tap) if kwargs.get("stream") else stream

    def __getattr__(self, name: str):
        return getattr(self._client, name)


async def _tapped(stream, tap):
    try:
        async for chunk in stream:
            tap(chunk)
            yield chunk
    finally:
        await stream.close()  # a stopped reply also ends the server's generation


def openai_engine(
    api_base: str,
    model: str | None = None,
    tokenizer: Any = None,
    *,
    api_key: str | None = None,
    max_context_size: int | None = None,
    timeout: float = 10.0,
    **kwargs: Any,
):
    """A kani engine that talks to an OpenAI-compatible server (``transformers serve``, vLLM, TGI, ...).

    :param api_base: The server's API root, e.g. ``"http://127.0.0.1:8000/v1"``.
    :param model: The model id to request; None: the one model the server lists at ``/v1/models``.
    :param tokenizer: What counts tokens offline: the served model's local folder, a ``transformers`` tokenizer, or
        None for an estimate of four characters per token.
    :param api_key: The server's API key; local servers need none (``OPENAI_API_KEY`` is used if set).
    :param max_context_size: The model's context size; default: read from the tokenizer folder's ``config.json``,
        else kani's default (2048, with a warning).
    :param timeout: Seconds to wait for ``/v1/models`` when ``model`` is None.
    :param kwargs: Passed to kani's ``OpenAIEngine`` (e.g. ``max_tokens=128``, ``temperature=0``).
    """
    api_base = api_base.rstrip("/")
    if model is None:
        model = _served_model(api_base, api_key, timeout)
    counter = CharEstimateCounter() if tokenizer is None else HFTokenCounter(tokenizer)
    if max_context_size is None and isinstance(tokenizer, (str, os.PathLike)):
        max_context_size = _context_size_from_folder(tokenizer)
    return _engine_class()(
        counter=counter,
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
        model=model,
        api_base=api_base,
        max_context_size=max_context_size,
        api_type=kwargs.pop("api_type", "chat_completions"),
        **kwargs,
    )


def _served_model(api_base: str, api_key: str | None, timeout: float) -> str:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{api_base}/models", headers=headers, timeout=timeout)
        response.raise_for_status()
        ids = [m["id"] for m in response.json().get("data", [])]
    except Exception as e:  # noqa: BLE001 - refused, timeout, not JSON: one actionable line
        raise KanibookError(
            f"Could not list the models at {api_base}/models ({type(e).__name__}); is the server running? "
            "Or pass model= explicitly."
        ) from None
    if len(ids) != 1:
        raise KanibookError(f"The server at {api_base} serves {len(ids)} models {ids[:5]}: pass model= to pick one.")
    return ids[0]


def _context_size_from_folder(folder: str | os.PathLike) -> int | None:
    config = Path(folder) / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for cfg in (data, data.get("text_config") or {}):
        for key in ("model_max_len", "max_position_embeddings"):
            if cfg.get(key):
                return int(cfg[key])
    return None
