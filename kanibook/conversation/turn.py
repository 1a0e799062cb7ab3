"""How one turn of a :class:`~kanibook.conversation.session.ChatSession` runs: on the session's own event loop, interruptible.

:class:`_BackgroundLoop` is an asyncio loop in a daemon thread, one for the session's life (engines whose clients
belong to a loop, such as HTTP connection pools, keep working from one turn to the next). :class:`_Turn` is one user
message and its reply, run there; the caller's thread interrupts it with ``engine.stop()`` (kanibook engines) or by
cancelling it, and the partial reply is kept in the conversation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..exceptions import KanibookError

__all__ = ["TurnResult", "check_sendable"]


@dataclass(frozen=True)
class TurnResult:
    """The outcome of one :meth:`ChatSession.send`.

    :param text: The assistant's reply as kept in the conversation ("" if none).
    :param stopped: True if the reply was stopped (interrupt) before the model finished.
    :param stats: The turn's figures (:class:`~kanibook.TurnStats`) for kanibook engines; None for other engines.
    :param error: A one-line description of a generation error (the user's message is kept), else None.
    :param elapsed_s: Seconds the turn took, as seen by the caller.
    """

    text: str
    stopped: bool = False
    stats: Any = None
    error: str | None = None
    elapsed_s: float = 0.0


async def check_sendable(kani, query) -> None:
    """Before anything is sent: a model without a chat template, a template that refuses the message, a message that
    cannot fit the context. One line each (instead of kani's repeated warnings and its internal probes' errors);
    nothing is added to the conversation."""
    from kani import ChatMessage

    engine = kani.engine
    if getattr(engine, "has_chat_template", True) is False:
        from ..engine._template import NoChatTemplateError

        raise NoChatTemplateError()
    messages = [*kani.always_included_messages, ChatMessage.user(query)]
    functions = kani.get_enabled_functions() or None
    try:
        n = await kani.prompt_token_len(messages, functions)
    except KanibookError:
        raise
    except Exception as e:  # noqa: BLE001 - a template that refuses the message: named in one line
        if getattr(engine, "tokenizer", None) is None or not callable(getattr(engine, "build_prompt", None)):
            return  # an engine whose prompt is built elsewhere: its own error will say
        from ..prompt.refusal import refusal_error

        raise refusal_error(engine, messages, functions, e) from None
    context, room = kani.max_context_size, kani.desired_response_tokens
    if context and n > context - room:
        raise KanibookError(
            f"The message is too long: {n:,} tokens with the system prompt and the template's text, but the context "
            f"is {context:,} tokens and {room:,} are kept for the reply, so at most {context - room:,} fit. Shorten "
            "it or split it over several messages (or keep less room for the reply: desired_response_tokens=); "
            "nothing was sent."
        )


class _Turn:
    """One user message and its reply, run on the session's loop; interruptible from the caller's thread."""

    def __init__(self, kani, message: str | list, hyperparams: dict, loop: _BackgroundLoop):
        self.kani = kani
        self.message = message
        self.hyperparams = hyperparams
        self._loop = loop
        self.text = ""
        self.changed = threading.Event()
        self.stop_requested = False
        self._task: asyncio.Task | None = None
        self._cancel_before_start = False

    async def run(self) -> TurnResult:
        from kani import ChatMessage

        self._task = asyncio.current_task()
        kani, n_before = self.kani, len(self.kani.chat_history)
        try:
            if self._cancel_before_start:
                raise asyncio.CancelledError
            stream = kani.chat_round_stream(self.message, **self.hyperparams)
            async for piece in stream:
                self.text += piece
                self.changed.set()
                if self.stop_requested:
                    self._stop_engine()  # an interrupt that came before generation had started
            completion = await stream.completion()
            stats = getattr(completion, "stats", None)
            stopped = bool(getattr(stats, "stopped", False))
            if stopped:
                _mark_stopped(completion.message)
            return TurnResult(completion.message.text or "", stopped=stopped, stats=stats)
        except asyncio.CancelledError:  # an interrupt: keep the user's message and the partial reply
            if len(kani.chat_history) == n_before:
                await kani.add_to_history(ChatMessage.user(self.message))
            partial = self.text.strip()
            if partial:
                message = ChatMessage.assistant(partial)
                _mark_stopped(message)
                await kani.add_to_history(message)
            return TurnResult(partial, stopped=True)
        except Exception as e:  # noqa: BLE001 - the conversation up to the user's message is kept; the error is one line
            if len(kani.chat_history) == n_before:
                await kani.add_to_history(ChatMessage.user(self.message))
            return TurnResult("", error=_one_line(e))
        finally:
            self.changed.set()

    def _stop_engine(self) -> bool:
        engine = self.kani.engine
        if callable(getattr(engine, "stop", None)) and getattr(engine, "is_generating", False):
            engine.stop()  # a kanibook engine: ends after the current token, the stream ends normally
            return True
        return False

    def interrupt(self, force: bool) -> None:
        """Stop the turn: the engine's own stop when it has one and is generating, else (or ``force``) cancel."""
        self.stop_requested = True
        if force or not self._stop_engine():
            self._loop.call_soon(self._cancel)

    def _cancel(self) -> None:
        if self._task is None:
            self._cancel_before_start = True
        elif not self._task.done():
            self._task.cancel()


class _BackgroundLoop:
    """An asyncio event loop running in a daemon thread, started on first use.

    One loop for the session's whole life, so engines whose clients belong to a loop (HTTP connection pools) keep
    working from one turn to the next.
    """

    def __init__(self, name: str = "kanibook-session-loop"):
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main():
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=main, name=self._name, daemon=True)
                self._thread.start()
                ready.wait(10)
                self._loop = loop
            return self._loop

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure())

    def call_soon(self, callback: Callable[[], None]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback)

    def run(self, coro, timeout: float):
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()


def _mark_stopped(message) -> None:
    """Note on the message that it was cut short (the same mark the chat panel uses and shows)."""
    from .transcript import mark_stopped

    mark_stopped(message)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return text if isinstance(error, KanibookError) else f"{type(error).__name__}: {text}"


def _wait_quietly(future: concurrent.futures.Future, timeout: float) -> None:
    try:
        future.result(timeout)
    except BaseException:  # noqa: BLE001, S110 - only waiting for the turn to settle
        pass
