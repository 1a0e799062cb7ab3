"""The chat panel: talk to any kani engine in a notebook, watch the reply stream, stop it, see the turn's figures.

::

    panel = kanibook.chat()                 # the embedded demo model
    panel = kanibook.chat("org/model")      # any local / cached Hugging Face chat model
    panel = kanibook.chat(engine)           # any kani engine (OpenAI-compatible servers included)
    panel = kanibook.chat(my_kani)          # an existing kani.Kani: its history, system prompt and functions

The panel talks to kani only (``Kani.full_round_stream``), so function calling works and any engine does. It uses
kanibook's extras when an engine has them: ``engine.stop()`` (a Stop within one token), ``completion.stats`` (the
figures under each reply), ``engine.max_context_size`` and ``prompt_len`` (the context meter). An engine without
``stop()`` is stopped by cancelling the round; its partial reply is kept all the same.

The reply runs as an asyncio task on the kernel's running loop, so the loop stays free while tokens arrive (a Stop
click is handled at once); body updates are throttled (at most ``max_updates_per_second``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from ..conversation import transcript
from .._names import model_display_name
from .._quiet_logs import fold_tracebacks
from ..exceptions import BusyError, KanibookError, check_text
from ..render import chat as render
from ._message_view import MessageView
from ._attachments import AttachmentBar, media_message, show_media  # media (issue 11)
from ._panel_conversation import PanelConversation
from ._panel_probs import PanelProbs
from ._panel_why import PanelWhy  # the "Why?" action on replies (issue 21)
from ._panel_widgets import PanelWidgets

__all__ = ["ChatPanel", "chat"]

_BUSY = "busy: a reply is being generated; press Stop or wait for it"


class ChatPanel(PanelWhy, PanelProbs, PanelConversation, PanelWidgets):
    """A chat panel around a ``kani.Kani`` (``.widget`` is the ipywidgets tree; the panel displays itself).

    Python API (also what the buttons call): :meth:`send`, :meth:`stop`, :meth:`regenerate`, :meth:`branch`,
    :meth:`clear`, :attr:`probabilities` (the "probabilities" box),
    :meth:`wait`, :meth:`set_system_prompt`, :meth:`export_json`, :meth:`export_markdown`; :attr:`kani`,
    :attr:`messages` (the message views, in display order), :attr:`status`.

    :param ai: The ``kani.Kani`` to talk to (its chat history is shown and extended).
    :param hyperparams: Extra generation keyword arguments for every round (they override the settings widgets).
    :param max_new_tokens: Initial "max new tokens" setting.
    :param temperature: Initial temperature setting.
    :param top_p: Initial top-p setting.
    :param do_sample: Initial sampling setting (off: greedy).
    :param max_updates_per_second: The most updates of a streaming reply per second.
    :param export_dir: Where the export buttons write files (default: the current directory).
    :param title: The panel's heading.
    """

    def __init__(
        self,
        ai,
        *,
        hyperparams: dict | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 0.95,
        do_sample: bool = False,
        max_updates_per_second: float = 20.0,
        export_dir: str | os.PathLike | None = None,
        title: str | None = None,
    ):
        fold_tracebacks("kani")  # kani's own warnings reach the cell as one line, not a traceback
        self.kani = ai
        self.engine = ai.engine
        #: Generation keyword arguments added to every round (over the settings' values).
        self.hyperparams: dict[str, Any] = dict(hyperparams or {})
        self.max_updates_per_second = max_updates_per_second
        self.export_dir = Path(export_dir) if export_dir is not None else None
        #: Prompt tokens of the next round as last measured for the context meter (None: unknown).
        self.context_tokens: int | None = None
        self._owns_system_message = bool(
            ai.system_prompt and ai.always_included_messages and ai.always_included_messages[0].role.value == "system"
        )
        self._task: asyncio.Task | None = None
        self._side_tasks: set[asyncio.Task] = set()
        self._stop_requested = False
        heading = title if title is not None else f"Chat · {engine_name(self.engine)}"
        super().__init__(
            heading,
            ai.system_prompt or "",
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            do_sample=do_sample,
        )
        # ---- media (issue 11): images / WAV files for the next message, under the input (widgets/_attachments.py)
        self.attachments = AttachmentBar(on_error=self._set_status)
        self.widget.children = (*self.widget.children[:4], self.attachments.widget, *self.widget.children[4:])
        # ---- end media
        self._branch_handler = self._on_branch_click
        self._wire()
        self._render_all()
        self._schedule(self.refresh_context())

    def _repr_mimebundle_(self, **kwargs):
        """The live widget, plus a short text and a static HTML picture for viewers without widgets."""
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = repr(self)
        messages = [*self.kani.always_included_messages, *self.kani.chat_history]
        bundle["text/html"] = render.snapshot(messages, title=self._heading)
        return bundle

    def __repr__(self) -> str:
        return f"<ChatPanel {type(self.engine).__name__}: {len(self.kani.chat_history)} messages, {self.status}>"

    def _wire(self) -> None:
        self.send_button.on_click(self._on_send_click)
        self.input.on_msg(self._on_input_msg)  # Enter in a Text widget sends {"event": "submit"}
        self.stop_button.on_click(lambda _: self.stop())
        self.regenerate_button.on_click(lambda _: self._guarded(self.regenerate))
        self.clear_button.on_click(lambda _: self._guarded(self.clear))
        self.system_prompt.observe(lambda change: self.set_system_prompt(change["new"]), "value")
        self.export_json_button.on_click(lambda _: self._guarded(self._export_click, "json"))
        self.export_markdown_button.on_click(lambda _: self._guarded(self._export_click, "md"))

    def _render_all(self) -> None:
        self._show_messages(self.kani.always_included_messages, self.kani.chat_history)
        for view in self.messages:  # media (issue 11)
            show_media(view)

    @property
    def busy(self) -> bool:
        """True while a reply is being generated."""
        return self._task is not None and not self._task.done()

    def _refuse_if_busy(self) -> None:
        if self.busy:
            self._set_status(_BUSY)
            raise BusyError("A reply is still being generated: stop it (panel.stop()) or await panel.wait() first.")

    # ---- the Python API ----

    def send(self, text: str) -> asyncio.Task:
        """Send a user message and stream the reply; returns the round's asyncio task (``await panel.wait()``).

        :param text: The user's message.
        :raises BusyError: if a reply is still being generated (the status line says so too).
        """
        text = str(text)
        if not text.strip():
            raise KanibookError("The message is empty: type something to send.")
        check_text(text)
        self._refuse_if_busy()
        _require_loop()
        if getattr(self.engine, "has_chat_template", True) is False:  # a base model: one line, nothing sent
            from ..engine._template import NoChatTemplateError

            raise NoChatTemplateError()

        # The message enters the history now, not when the round's task first runs: a Stop in the same event-loop
        # tick (which cancels a task that never started) must not lose it.
        user = media_message(self.attachments, text, self.kani)  # media (issue 11): checked, then the bar empties
        self.kani.chat_history.append(user)
        show_media(self._add_view(MessageView.from_message(user)))  # media (issue 11): thumbnails / players
        return self._start(self._round())

    def stop(self) -> None:
        """Stop the reply being generated; the partial reply is kept (marked stopped). Does nothing when idle."""
        if not self.busy:
            return
        self._stop_requested = True
        self._set_status("stopping…")
        engine_stop = getattr(self.engine, "stop", None)
        if callable(engine_stop) and getattr(self.engine, "is_generating", True):
            engine_stop()  # kanibook: generate ends after the current token, the stream ends normally
        else:
            self._task.cancel()  # any other engine (or nothing generating yet): cancel the round

    def regenerate(self) -> asyncio.Task:
        """Drop the reply to the last user message (and its function calls) and generate it again."""
        self._refuse_if_busy()
        history = self.kani.chat_history
        users = [i for i, m in enumerate(history) if m.role.value == "user"]
        if not users:
            raise KanibookError("Nothing to regenerate: send a message first.")
        del history[users[-1] + 1 :]
        views = [i for i, v in enumerate(self.messages) if v.role == "user" and i >= self._n_prefix]
        if views:
            self._drop_views(views[-1] + 1)
        return self._start(self._round())

    async def wait(self) -> None:
        """Wait until the panel is idle (the current reply and the context meter's update are done)."""
        while True:
            pending = [t for t in (self._task, *self._side_tasks) if t is not None and not t.done()]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        """Stop any reply and close every widget of the panel."""
        self.stop()
        for task in self._side_tasks:
            task.cancel()
        self._close_widgets()

    # ---- callbacks ----

    def _guarded(self, action, *args) -> None:
        """Run a button's action; a refusal or mistake goes to the status line, not a traceback."""
        try:
            action(*args)
        except KanibookError as e:
            if self._status != _BUSY:
                self._set_status(str(e))

    def _on_send_click(self, _=None) -> None:
        text = self.input.value
        if not text.strip():
            return
        try:
            self.send(text)
        except KanibookError as e:
            if self._status != _BUSY:
                self._set_status(str(e))
            return  # the text stays in the box
        self.input.value = ""

    def _on_input_msg(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and content.get("event") == "submit":
            self._on_send_click()

    # ---- the round ----

    def _schedule(self, coro) -> None:
        """Run a side coroutine on the running loop (skipped, and closed, where no loop runs)."""
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _start(self, coro) -> asyncio.Task:
        try:
            loop = _require_loop()
        except KanibookError:
            coro.close()
            raise
        self._stop_requested = False
        self._show_busy(True)
        self._set_status("generating…")
        self._task = loop.create_task(coro)
        self._task.add_done_callback(self._on_round_done)
        return self._task

    def _on_round_done(self, task: asyncio.Task) -> None:
        """Leave the controls idle however the round ended (even when cancelled before it started)."""
        self._show_busy(False)
        history = self.kani.chat_history
        if task.cancelled() and self._stop_requested and history and history[-1].role.value == "user":
            # stopped before the round ran: the user's message stays, answered by an empty reply marked stopped
            from kani import ChatMessage

            reply = ChatMessage.assistant("")
            transcript.mark_stopped(reply)
            history.append(reply)
            self._add_view(MessageView.from_message(reply))
        if task.cancelled() and self._status in ("generating…", "stopping…"):
            self._set_status("stopped")

    async def _round(self) -> None:
        """One round from the history as it stands (send() has already added the user's message)."""
        view: MessageView | None = None
        outcome = "ready"
        try:
            probs_params, probs_note = self._probability_params()
            params = {**self.settings.hyperparams(self.engine), **probs_params, **self.hyperparams}
            rounds = self.kani.full_round_stream(None, **params)
            async with contextlib.aclosing(rounds):  # closing releases kani's lock even when we stop early
                async for stream in rounds:
                    if stream.role.value != "assistant":  # a function's result
                        self._add_view(MessageView.from_message(await stream.message()))
                        continue
                    view = self._add_view(MessageView("assistant", max_per_second=self.max_updates_per_second))
                    view.start_streaming()
                    async for piece in stream:
                        if probs_params and view.probs_box is None and getattr(self.engine, "last_probs", None):
                            view.attach_probs(self.engine.last_probs)  # grows live; redrawn with the text
                        view.append(piece)
                    completion = await stream.completion()
                    if getattr(completion, "probs", None) is not None:
                        view.attach_probs(completion.probs)
                    stats = getattr(completion, "stats", None)
                    stopped = bool(getattr(stats, "stopped", self._stop_requested))
                    if stopped:
                        transcript.mark_stopped(completion.message)
                    view.finish(completion.message, stats=stats, stopped=stopped)
                    if stopped or self._stop_requested:
                        outcome = "stopped"
                        break  # no function calls after a Stop
        except asyncio.CancelledError:
            if not self._stop_requested:
                self._abandon(view)
                raise
            await self._keep_partial(view)
            outcome = "stopped"
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
        except Exception as e:  # noqa: BLE001 - shown in the panel; the history keeps the user's message
            self._abandon(view)
            self._add_view(MessageView.error(f"{type(e).__name__}: {e}"))
            outcome = "error: " + (str(e).strip().splitlines() or [type(e).__name__])[0]
        finally:
            self._show_busy(False)
        if probs_note and outcome == "ready":
            outcome = f"ready · {probs_note}"
        self._set_status(outcome)
        await self.refresh_context()

    def _abandon(self, view: MessageView | None) -> None:
        """Remove an unfinished reply's view (kani did not add it to the history)."""
        if view is not None and view.message is None and view in self.messages:
            self._drop_view(view)

    async def _keep_partial(self, view: MessageView | None) -> None:
        """A cancelled round (engine without ``stop()``): keep the partial reply in the history, marked stopped."""
        if view is None or view.message is not None:
            return
        if not view.text.strip():  # stopped before the first token: nothing to keep
            self._abandon(view)
            return
        from kani import ChatMessage

        message = ChatMessage.assistant(view.text.strip())
        transcript.mark_stopped(message)
        if view.probs_box is not None:  # what was recorded up to the Stop stays with the reply
            from ..probs.record import remember

            remember(message, view.probs_box.probs)
        await self.kani.add_to_history(message)
        view.finish(message, stopped=True)


def engine_name(engine) -> str:
    """The model an engine runs, as a person knows it (a folder's own name, a Hub id, a served model's name); the
    engine's class only when it names no model."""
    for attr in ("model_id", "model"):
        value = getattr(engine, attr, None)
        if isinstance(value, (str, os.PathLike)) and str(value):
            return model_display_name(value)
    inner = getattr(engine, "engine", None)  # a kani WrapperEngine
    return engine_name(inner) if inner is not None and inner is not engine else type(engine).__name__


def _require_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise KanibookError(
            "The chat panel needs a running event loop: use it in a Jupyter kernel, or call it from async code."
        ) from None


def chat(
    target: Any = None,
    *,
    system_prompt: str | None = None,
    hyperparams: dict | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 0.95,
    do_sample: bool = False,
    max_updates_per_second: float = 20.0,
    export_dir: str | os.PathLike | None = None,
    title: str | None = None,
    **load_kwargs: Any,
) -> ChatPanel:
    """Open a chat panel in one call.

    :param target: None: the notebook's current conversation, the one ``%%chat`` and ``%kani`` use (its model is
        loaded only if none is: the embedded demo model, or the one ``%kani load`` chose); a model id or local folder
        (loaded with :func:`kanibook.load`), any kani engine, or an existing ``kani.Kani`` (its history, system
        prompt and functions are used).
    :param system_prompt: The system prompt (for a ``Kani``: replaces its own).
    :param hyperparams: Extra generation keyword arguments for every round (e.g. ``{"min_new_tokens": 8}``).
    :param max_new_tokens: Initial "max new tokens" setting.
    :param temperature: Initial temperature setting.
    :param top_p: Initial top-p setting.
    :param do_sample: Initial sampling setting (off: greedy).
    :param max_updates_per_second: The most updates of a streaming reply per second.
    :param export_dir: Where the export buttons write files (default: the current directory).
    :param title: The panel's heading.
    :param load_kwargs: Passed to :func:`kanibook.load` when ``target`` is a model id (with ``target=None`` they
        load the demo model afresh, for this panel alone).
    """
    from kani import Kani
    from kani.engines.base import BaseEngine

    if target is None and not load_kwargs:  # as %kani chat: the notebook's conversation, one model in the process
        from ..conversation.session import current_session

        ai = target = current_session().kani
    if isinstance(target, Kani):
        ai = target

    elif isinstance(target, BaseEngine):
        ai = Kani(target, system_prompt=system_prompt)
    elif target is None or isinstance(target, (str, os.PathLike)):
        from ..engine import load

        ai = Kani(load(target, **load_kwargs), system_prompt=system_prompt)
        load_kwargs = {}
    else:
        raise KanibookError(
            f"chat() takes a model id or folder, a kani engine or a kani.Kani, not {type(target).__name__}."
        )
    if load_kwargs:
        raise KanibookError(
            f"Unknown argument(s) {sorted(load_kwargs)} for an engine or Kani: load options go with a model id."
        )
    panel = ChatPanel(
        ai,
        hyperparams=hyperparams,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        do_sample=do_sample,
        max_updates_per_second=max_updates_per_second,
        export_dir=export_dir,
        title=title,
    )
    if isinstance(target, Kani) and system_prompt is not None:
        panel.set_system_prompt(system_prompt)
    return panel
