"""One message of the chat panel as widgets: a role header, a body, function-call cards and the turn's figures.

An assistant reply streams into ``body`` (an ``ipywidgets.HTML``): while tokens arrive its value is the escaped
partial text (updates throttled), when the reply is done it becomes the sanitized Markdown of the final text.
"""

from __future__ import annotations

import asyncio

import ipywidgets as widgets

from ..probs.record import probs_of
from ..render import chat as render
from ..conversation.transcript import is_stopped, message_text
from ._probs_box import ProbsBox
from ._throttle import Throttle

__all__ = ["MessageView", "close_widgets"]

_ROLES = ("user", "assistant", "system", "function", "error")


def close_widgets(*roots) -> None:
    """Close widgets, their children, and the ``layout`` / ``style`` widgets each one owns (``close()`` alone leaves
    those in the kernel's widget registry: a slow leak over many messages)."""
    stack = list(roots)
    while stack:
        w = stack.pop()
        stack.extend(getattr(w, "children", ()))
        for part in (getattr(w, "layout", None), getattr(w, "style", None)):
            if isinstance(part, widgets.Widget):
                part.close()
        w.close()


class MessageView:
    """The widgets of one message (``.widget``, a ``VBox`` with the ``kb-msg`` and ``kb-msg-<role>`` classes).

    :param role: ``"user"``, ``"assistant"``, ``"system"``, ``"function"`` or ``"error"`` (a panel error line).
    :param name: The message's ``name`` (user / function), shown in the header.
    :param max_per_second: The most body updates per second while streaming.
    """

    def __init__(self, role: str, *, name: str | None = None, max_per_second: float = 20.0):
        if role not in _ROLES:
            raise ValueError(f"unknown message role {role!r}")
        self.role = role
        #: The kani ``ChatMessage`` shown (None while a reply streams, and for error lines).
        self.message = None
        #: The text received so far (a streaming reply) or shown.
        self.text = ""
        #: The turn's figures (``completion.stats``) when the engine gives them.
        self.stats = None
        self.stopped = False
        #: Loop times of the first and last streamed piece, and how many pieces arrived (the panel's own view of
        #: the token rate; see bench/bench_panel.py).
        self.first_piece_at: float | None = None
        self.last_piece_at: float | None = None
        self.pieces = 0
        self.header = widgets.HTML(render.role_label(role, name) if role != "error" else "")
        self.body = widgets.HTML()
        self.body.add_class("kb-body")
        self.cards = widgets.HTML()
        self.figures = widgets.HTML()
        self.figures.add_class("kb-figures")
        parts = [self.body] if role == "error" else [self.header, self.body, self.cards, self.figures]
        self.widget = widgets.VBox(parts)
        self.widget.add_class("kb-msg")
        self.widget.add_class(f"kb-msg-{role}")
        self._throttle: Throttle[str] = Throttle(self._show_partial, max_per_second)
        #: The reply's probabilities view (a :class:`ProbsBox`) when they were recorded; else None.
        self.probs_box: ProbsBox | None = None
        #: Called with ``(view, token_index, alternative_index)`` by the "what if" button (set by the panel).
        self.on_branch = None

    def attach_probs(self, probs) -> None:
        """Show ``probs`` (a growing :class:`~kanibook.probs.record.ReplyProbs`) under the reply's text."""
        if self.probs_box is not None:
            if self.probs_box.probs is probs:
                return
            close_widgets(*self.probs_box.close_all())
        self.probs_box = ProbsBox(probs, lambda i, k: self.on_branch and self.on_branch(self, i, k))
        children = list(self.widget.children)
        children.insert(children.index(self.body) + 1, self.probs_box.widget)
        self.widget.children = tuple(children)

    # ---- constructors ----

    @classmethod
    def from_message(cls, message, *, stats=None, max_per_second: float = 20.0) -> MessageView:
        """A finished view of a kani ``ChatMessage`` (any role)."""
        view = cls(message.role.value, name=message.name, max_per_second=max_per_second)
        probs = probs_of(message)
        if probs is not None:
            view.attach_probs(probs)
        view.finish(message, stats=stats, stopped=is_stopped(message))
        return view

    @classmethod
    def error(cls, text: str) -> MessageView:
        """A one-line error in the message list (``kb-msg-error``)."""
        view = cls("error")
        view.text = str(text)
        view.body.value = render.error_line(text)
        return view

    # ---- streaming ----

    def start_streaming(self) -> None:
        """Mark the view as receiving tokens (``kb-msg-streaming``)."""
        self.widget.add_class("kb-msg-streaming")

    def append(self, piece: str) -> None:
        """Add a streamed piece; the body shows it at the next throttled update."""
        now = asyncio.get_running_loop().time()
        if self.first_piece_at is None:
            self.first_piece_at = now
        self.last_piece_at = now
        self.pieces += 1
        self.text += piece
        self._throttle.push(self.text)

    @property
    def updates(self) -> int:
        """How many times the streaming body was updated."""
        return self._throttle.applied

    def _show_partial(self, text: str) -> None:
        self.body.value = render.streaming_body(text)
        if self.probs_box is not None:
            self.probs_box.show_partial()

    # ---- the end of a message ----

    def finish(self, message, *, stats=None, stopped: bool = False) -> None:
        """Show the final message: Markdown for replies, literal text otherwise; cards, figures, the stopped mark.

        :param message: The kani ``ChatMessage``.
        :param stats: The turn's figures (``completion.stats``), if the engine gives them.
        :param stopped: True if the reply was cut short by Stop.
        """
        self._throttle.cancel()
        self.message, self.stats, self.stopped = message, stats, stopped
        self.text = message_text(message) if message.content is not None else ""
        if self.role == "assistant":
            body = render.final_body(self.text)
            cards = "".join(
                render.tool_call_card(tc.function.name, tc.function.arguments, tc.id) for tc in message.tool_calls or ()
            )
        elif self.role == "function":
            body = render.tool_result_card(message.name, self.text, is_error=bool(message.is_tool_call_error))
            cards = ""
        else:
            body, cards = render.literal_body(self.text), ""
        self.body.value = body
        self.cards.value = cards
        self.figures.value = render.figures(stats)
        if self.probs_box is not None:
            self.probs_box.finish(can_branch=not stopped)
        with self.widget.hold_sync():
            self.widget.remove_class("kb-msg-streaming")
            if stopped:
                self.widget.add_class("kb-msg-stopped")

    def close(self) -> None:
        """Close the widgets (they leave the kernel's widget registry)."""
        self._throttle.cancel()
        extra = self.probs_box.close_all() if self.probs_box is not None else []
        close_widgets(self.header, self.body, self.cards, self.figures, *extra, self.widget)

    def __repr__(self) -> str:
        state = " stopped" if self.stopped else ""
        return f"<MessageView {self.role}{state}: {self.text[:40]!r}>"
