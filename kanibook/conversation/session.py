"""The notebook's current conversation: one kani engine, one ``kani.Kani``, and turns that survive interruption.

:class:`ChatSession` is what ``%%chat`` and ``%kani`` work on (:func:`current_session`); it is also usable directly::

    session = kanibook.ChatSession(system_prompt="You are terse.")
    result = session.send("What is the capital of France?", on_text=print)

It works with any kani engine (a kanibook engine, kani's ``OpenAIEngine`` against a local server, ...) or an existing
``Kani``. With nothing loaded, the embedded demo model is loaded on first use.

:meth:`ChatSession.send` blocks the calling thread, so it can be used from a magic while the kernel's own event
loop is busy running that magic: the turn runs on the session's own event loop in a background thread, the caller
waits in short steps (so Ctrl-C / the notebook's stop button reaches it) and receives the growing text on its own
thread. An interrupt stops generation cleanly (``engine.stop()`` for kanibook engines, cancellation otherwise) and the
partial reply is kept in the conversation; an error keeps the user's message and comes back as one line.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .._quiet_logs import fold_tracebacks
from .turn import TurnResult, _BackgroundLoop, _Turn, _wait_quietly, check_sendable
from ..engine._model_thread import release_cpu_threads
from ..exceptions import BusyError, KanibookError, check_text

__all__ = ["ChatSession", "TurnResult", "current_session", "set_current_session"]


class ChatSession:
    """A conversation held for a notebook: an engine, a ``kani.Kani`` over it, and interrupt-safe turns.

    :param target: A kani engine, an existing ``kani.Kani``, or None (the demo model is loaded on first use).
    :param system_prompt: The system prompt (ignored when ``target`` is a ``Kani``: its own is kept).
    :param kani_kwargs: Passed to ``kani.Kani`` when the session builds one (e.g. ``desired_response_tokens``).
    """

    def __init__(self, target: Any = None, *, system_prompt: str | None = None, **kani_kwargs: Any):
        self._kani = None
        self._owned_engine = None  # an engine the session loaded itself (closed when replaced)
        self._system_prompt = (system_prompt or "").strip() or None
        self._kani_kwargs = kani_kwargs
        self._loop = _BackgroundLoop()
        self._turn: _Turn | None = None
        if target is not None:
            self.use(target)

    # ---- the model ----

    @property
    def loaded(self) -> bool:
        """Whether an engine is in place (False until the first load or use)."""
        return self._kani is not None

    @property
    def kani(self):
        """The session's ``kani.Kani`` (the demo model is loaded first if nothing was)."""
        if self._kani is None:
            self.load()
        return self._kani

    @property
    def engine(self):
        """The session's kani engine (the demo model is loaded first if nothing was)."""
        return self.kani.engine

    def load(
        self,
        model_id: str | os.PathLike | None = None,
        *,
        quant: str | None = None,
        device: str | None = None,
        api_base: str | None = None,
        tokenizer: Any = None,
        **kwargs: Any,
    ):
        """Load a model and make it the session's engine; the conversation so far is kept.

        :param model_id: A Hugging Face id or local folder; None for the embedded demo model. With ``api_base``, the
            model id to request from the server (None: the one it serves).
        :param quant: A quantization preset (see :func:`kanibook.load`).
        :param device: The device to run on (``"cpu"``, ``"cuda"``, ...); default: kani's choice.
        :param api_base: An OpenAI-compatible server's API root (``http://127.0.0.1:8000/v1``) instead of a local model.
        :param tokenizer: With ``api_base``: the served model's local folder, for offline token counting.
        :param kwargs: Passed to :func:`kanibook.load` (or to :func:`kanibook.openai_compat.openai_engine`).
        :returns: The new engine.
        """
        self._refuse_while_replying()
        _import_kani()
        if api_base is not None:
            if quant is not None or device is not None:
                raise KanibookError("quant= and device= are the server's business: set them where it is started.")
            from ..openai_compat import openai_engine

            engine = openai_engine(api_base, None if model_id is None else str(model_id), tokenizer, **kwargs)
        else:
            from ..engine import load

            if device is not None:
                kwargs["device"] = device
            engine = load(model_id, quant=quant, **kwargs)
        previous = self._owned_engine
        self._install(engine)
        self._owned_engine = engine
        if previous is not None and previous is not engine:
            self._close_engine(previous)
        return engine

    def use(self, target: Any):
        """Make an existing kani engine or ``kani.Kani`` the session's (the session does not close it).

        :param target: A kani engine (a new ``Kani`` is built over it, the history kept) or a ``kani.Kani``
            (adopted as is, with its history and system prompt).
        :returns: The session's ``Kani``.
        """
        self._refuse_while_replying()
        Kani = _import_kani().Kani
        from kani.engines.base import BaseEngine

        previous = self._owned_engine
        if isinstance(target, Kani):
            self._kani = target
            self._system_prompt = target.system_prompt
        elif isinstance(target, BaseEngine):
            self._install(target)
        else:
            raise KanibookError(
                f"ChatSession.use() takes a kani engine or a kani.Kani, not {type(target).__name__}: "
                "for a model id, use session.load(model_id)."
            )
        self._owned_engine = None
        if previous is not None and previous is not self._kani.engine:
            self._close_engine(previous)
        return self._kani

    def _refuse_while_replying(self) -> None:
        if self._turn is not None:
            raise BusyError("A reply is being generated: stop it (session.stop()) or wait before changing the model.")

    def _install(self, engine) -> None:
        Kani = _import_kani().Kani
        fold_tracebacks("kani")  # kani's own warnings reach the cell as one line, not a traceback
        history = list(self._kani.chat_history) if self._kani is not None else []
        self._kani = Kani(engine, system_prompt=self._system_prompt, chat_history=history, **self._kani_kwargs)

    def _close_engine(self, engine) -> None:
        try:
            self._loop.run(engine.close(), timeout=30)
        except Exception:  # noqa: BLE001, S110 - closing is best effort; it must not lose the new engine
            pass

    # ---- the conversation ----

    @property
    def system_prompt(self) -> str | None:
        return self._system_prompt

    @system_prompt.setter
    def system_prompt(self, text: str | None) -> None:
        from kani import ChatMessage, ChatRole

        text = (text or "").strip() or None
        if self._kani is not None:
            kept = list(self._kani.always_included_messages)
            old = self._kani.system_prompt
            if kept and old is not None and kept[0].role == ChatRole.SYSTEM and kept[0].text == old:
                kept = kept[1:]
            self._kani.always_included_messages = ([ChatMessage.system(text)] if text else []) + kept
            self._kani.system_prompt = text
        self._system_prompt = text

    @property
    def history(self) -> list:
        """The conversation's messages (kani's ``chat_history``: no system prompt); empty before any model."""
        return self._kani.chat_history if self._kani is not None else []

    @property
    def messages(self) -> list:
        """Everything the model is shown: the system prompt and other always-included messages, then the history."""
        if self._kani is None:
            return []
        return list(self._kani.always_included_messages) + list(self._kani.chat_history)

    def reset(self) -> None:
        """Forget the conversation (the system prompt and the model stay)."""
        if self._kani is not None:
            self._kani.chat_history = []

    def save_history(self, path: str | os.PathLike) -> str:
        """Write the conversation as JSON that ``Kani.load`` (and :meth:`load_history`) reads back.

        :param path: The file to write (replaced atomically; on any error the old file is left intact).
        :returns: The path written.
        :raises UnsavableTextError: if a message holds a lone surrogate (nothing is written).
        """
        _import_kani()
        from . import transcript

        path = os.fspath(path)
        try:  # a temporary file renamed into place: a failure leaves the file at path as it was
            transcript.save_json(self._kani or _EmptyChat(self._system_prompt), path)
        except OSError as e:
            raise KanibookError(f"Could not write {path!r} ({e.strerror or e}): pick a writable path.") from None
        return path

    def load_history(self, path: str | os.PathLike) -> None:
        """Replace the conversation (and system prompt) with one saved by :meth:`save_history` or ``Kani.save``."""
        from kani import ChatRole

        try:
            self.kani.load(os.fspath(path))
        except (OSError, ValueError) as e:
            raise KanibookError(f"Could not read a kani chat from {os.fspath(path)!r} ({type(e).__name__}).") from None
        first = self._kani.always_included_messages[:1]
        self._kani.system_prompt = first[0].text if first and first[0].role == ChatRole.SYSTEM else None
        self._system_prompt = self._kani.system_prompt

    # ---- turns ----

    def generation_kwargs(self, max_new_tokens: int | None = None, temperature: float | None = None) -> dict:
        """Generation arguments in the engine's own vocabulary (``max_new_tokens`` / ``max_tokens``, sampling).

        :param max_new_tokens: The most tokens to generate.
        :param temperature: Sampling temperature; 0 means greedy.
        """
        from kani.engines.base import WrapperEngine

        engine = self.engine
        while isinstance(engine, WrapperEngine):  # the wrapped engine decides the vocabulary
            engine = engine.engine
        hugging = any(c.__name__ == "HuggingEngine" for c in type(engine).__mro__)
        kwargs: dict[str, Any] = {}
        if max_new_tokens is not None:
            kwargs["max_new_tokens" if hugging else "max_tokens"] = int(max_new_tokens)
        if temperature is not None:
            if hugging and temperature <= 0:
                kwargs["do_sample"] = False
            elif hugging:
                kwargs.update(do_sample=True, temperature=float(temperature))
            else:
                kwargs["temperature"] = float(temperature)
        return kwargs

    @property
    def is_generating(self) -> bool:
        return self._turn is not None

    def check_ready(self) -> None:
        """Raise :class:`~kanibook.exceptions.BusyError` if a reply for this conversation is being generated.

        (E.g. the chat panel is replying: waiting for it from a magic would block the very loop that must finish it.)
        """
        kani = self.kani
        if self._turn is not None or kani.lock.locked() or getattr(kani.engine, "is_generating", False):
            raise BusyError(
                "A reply is still being generated for this conversation (the chat panel?): stop it or wait, then send."
            )

    def check_sendable(self, message: str, media: Any = None) -> None:
        """Raise a one-line :class:`~kanibook.exceptions.KanibookError` if ``message`` cannot be sent: the model has no
        chat template, the template refuses it, or it cannot fit the context with room for the reply."""
        self._loop.run(check_sendable(self.kani, _query(message, media)), 120)

    def send(
        self,
        message: str,
        *,
        media: Any = None,
        on_text: Callable[[str], None] | None = None,
        min_interval: float = 0.05,
        **hyperparams: Any,
    ) -> TurnResult:
        """Send a user message and wait for the reply, streaming its text to ``on_text``; interrupt-safe.

        :param message: The user's message.
        :param media: Images and sounds sent with it: one or a list, each a PIL image, a numpy array, ``(samples,
            sample_rate)``, the path of an image or WAV file, or a kani-multimodal-core part (see
            :func:`kanibook.media.as_part`). Media the model cannot take, or cannot be read, raise
            :class:`~kanibook.exceptions.MediaError` before anything is sent (the conversation is unchanged).
        :param on_text: Called on the calling thread with the reply's text so far (stripped), at most once per
            ``min_interval`` seconds and once more at the end. An exception from it (KeyboardInterrupt included)
            stops the turn like an interrupt does.
        :param min_interval: The least time between two ``on_text`` calls (0.05 s: at most 20 per second).
        :param hyperparams: Generation arguments for the engine (see :meth:`generation_kwargs`).
        :returns: A :class:`TurnResult`; KeyboardInterrupt stops generation and returns the partial reply.
        """
        check_text(message)
        query = _query(message, media)
        self.check_ready()
        kani = self.kani
        _check_media(kani, query)
        self._loop.run(check_sendable(kani, query), 120)  # no template, refused, too long: one line, nothing sent
        turn = self._turn = _Turn(kani, query, hyperparams, self._loop)
        start = time.perf_counter()
        release_cpu_threads()  # this thread's torch pool would slow the model thread (see engine/_model_thread)
        future = self._loop.submit(turn.run())
        future.add_done_callback(lambda _: self._turn_ended(turn))
        shown, last_shown, interrupts = "", 0.0, 0
        try:
            while True:
                try:
                    turn.changed.wait(0.05)  # short steps: a SIGINT is delivered between them
                    turn.changed.clear()
                    done = future.done()
                    text = turn.text.strip()
                    now = time.perf_counter()
                    if on_text is not None and text != shown and (done or now - last_shown >= min_interval):
                        shown, last_shown = text, now
                        on_text(text)
                    if done:
                        break
                except KeyboardInterrupt:
                    interrupts += 1
                    if interrupts > 2:  # asked three times: stop waiting (the turn is cancelled)
                        raise
                    turn.interrupt(force=interrupts > 1)
        except BaseException:
            turn.interrupt(force=True)
            _wait_quietly(future, 5)
            raise
        self._turn_ended(turn)
        result: TurnResult = future.result()
        if on_text is not None and result.text != shown and not result.error:
            on_text(result.text)
        return TurnResult(result.text, result.stopped, result.stats, result.error, time.perf_counter() - start)

    def branch(self, message_index: int, token_index: int, alternative: Any = 1, **hyperparams: Any):
        """"What if": regenerate a reply from one of its tokens on, as if the model had picked an alternative there.

        The reply must have been generated with probabilities (``send(..., probabilities=True)``, ``%%chat --probs``).
        The conversation keeps the new reply in place of the old one (messages after it are dropped: they answered
        the old one); the old reply stays in the new message's ``extra`` and in exports.

        :param message_index: The reply's index in :attr:`history` (negative counts from the end: -1 = the last).
        :param token_index: The token to replace (0 = the reply's first).
        :param alternative: Its number in the token's alternatives (0 = most probable; default 1), or its text.
        :param hyperparams: Generation arguments (default: greedy).
        :returns: A :class:`~kanibook.probs.branch.Branch`.
        """
        from ..probs.branch import Branch, branch_reply, check_reply_index, replace_in_history
        from ..probs.view import find_probs

        self.check_ready()
        history = self.kani.chat_history
        i = check_reply_index(history, message_index)
        probs = find_probs(history[i])
        original = history[i].text or ""
        future = self._loop.submit(branch_reply(self.engine, probs, token_index, alternative, **hyperparams))
        text, new_probs, alt = future.result()
        message = replace_in_history(history, i, text, new_probs, token_index, alt)
        return Branch(message, new_probs, token_index, alt, original)

    def _turn_ended(self, turn: _Turn) -> None:
        if self._turn is turn:
            self._turn = None

    def stop(self) -> None:
        """Stop the reply being generated by :meth:`send` (from another thread); the partial reply is kept."""
        turn = self._turn
        if turn is not None:
            turn.interrupt(force=False)

    def close(self) -> None:
        """Close an engine the session loaded itself and end the session's background loop."""
        if self._owned_engine is not None:
            self._close_engine(self._owned_engine)
            self._owned_engine = None
        self._loop.close()

    def __repr__(self) -> str:
        engine = type(self._kani.engine).__name__ if self._kani is not None else "not loaded"
        return f"ChatSession(engine={engine}, messages={len(self.history)}, system_prompt={self._system_prompt!r})"


class _EmptyChat:
    """What :func:`kanibook.conversation.transcript.save_json` needs, for a session with no model yet."""

    def __init__(self, system_prompt: str | None):
        from kani import ChatMessage

        self.always_included_messages = [ChatMessage.system(system_prompt)] if system_prompt else []
        self.chat_history = []


def _query(message: str, media: Any) -> str | list:
    """The text alone, or the text and each medium as parts (read and checked here, before anything is sent)."""
    items = list(media) if isinstance(media, list) else [] if media is None else [media]  # a tuple is (samples, rate)
    if not items:
        return message
    from ..media import user_parts

    return user_parts(message, *items)


def _check_media(kani, query) -> None:
    """Refuse media the model cannot take (in the new message or earlier ones) before the turn starts."""
    from ..media import check_media

    check_media(kani.engine, [*kani.always_included_messages, *kani.chat_history, query])


def _import_kani():
    import kani  # its pydub warning is filtered in kanibook/__init__.py

    return kani


_current: ChatSession | None = None
_current_lock = threading.Lock()


def current_session() -> ChatSession:
    """The notebook's current session (created, without a model, on first call)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = ChatSession()
        return _current


def set_current_session(session: ChatSession | None) -> ChatSession | None:
    """Make ``session`` the current one (None: a fresh one on next use); returns the previous one."""
    global _current
    with _current_lock:
        previous, _current = _current, session
    return previous
