"""The chat panel's "Why?" action: what a reply rests on (:func:`kanibook.explain_reply`), opened under the reply.

A mixin of :class:`~kanibook.widgets.chat_panel.ChatPanel`: every assistant reply's view gets a small "Why?" button
(``kb-why-button``); a click explains that reply in a worker thread (the forward passes run on the model thread; the
kernel stays responsive) and shows the view in an ``HTML`` widget (``kb-why-view``) right under the reply's text. A
second click closes it. Refusals (busy, an engine that cannot score, media) go to the status line.
"""

from __future__ import annotations

import asyncio

import ipywidgets as widgets

from ..exceptions import KanibookError
from ._message_view import MessageView, close_widgets

__all__ = ["PanelWhy", "why_button"]


def why_button(on_click) -> widgets.Button:
    """The "Why?" button of one reply (``kb-why-button``); ``on_click()`` is called on each click."""
    button = widgets.Button(description="Why?", tooltip="What this reply rests on: the drop of its probability "
                            "without each message", layout=widgets.Layout(width="auto"))  # fmt: skip
    button.add_class("kb-why-button")
    button.on_click(lambda _: on_click())
    return button


class PanelWhy:
    """Why? for the chat panel (see :class:`~kanibook.widgets.chat_panel.ChatPanel`)."""

    def why(self, message_index: int = -1) -> asyncio.Task:
        """Explain a reply and show the view under it.

        :param message_index: The reply's index in ``panel.kani.chat_history`` (negative counts from the end).
        :returns: The asyncio task (the view is in ``panel.messages[k].why_view`` when it is done).
        """
        history = self.kani.chat_history
        if not -len(history) <= message_index < len(history) or history[message_index].role.value != "assistant":
            raise KanibookError(f"Message {message_index} is not a reply: pass the index of an assistant message.")
        message = history[message_index]
        view = next((v for v in self.messages if v.message is message), None)
        if view is None:
            raise KanibookError("That reply is not shown in this panel.")
        return self._why_task(view)

    # ---- wiring: a button on every reply ----

    def _add_view(self, view: MessageView) -> MessageView:
        view = super()._add_view(view)
        self._attach_why(view)
        return view

    def _show_messages(self, prefix, history) -> None:
        super()._show_messages(prefix, history)
        for view in self.messages:
            self._attach_why(view)

    def _attach_why(self, view: MessageView) -> None:
        if view.role != "assistant" or getattr(view, "why_button", None) is not None:
            return
        button = why_button(lambda: self._guarded(self._on_why_click, view))
        view.why_button, view.why_view = button, None
        view.widget.children = (*view.widget.children, button)

    def _on_why_click(self, view: MessageView) -> None:
        if view.why_view is not None:  # open: close it
            children = [w for w in view.widget.children if w is not view.why_view]
            view.widget.children = tuple(children)
            close_widgets(view.why_view)
            view.why_view = None
            return
        self._why_task(view)

    def _why_task(self, view: MessageView) -> asyncio.Task:
        self._refuse_if_busy()
        if view.message is None:
            raise KanibookError("That reply is still being written: ask Why? when it is done.")
        history = [*self.kani.always_included_messages, *self.kani.chat_history]
        replies = [m for m in history if m.role.value == "assistant" and isinstance(m.content, str)
                   and m.content.strip()]  # fmt: skip
        if view.message not in replies:
            raise KanibookError("That reply has no text to explain.")
        index = next(i for i, m in enumerate(replies) if m is view.message)
        self._set_status("explaining… (scoring the reply without each message)")
        task = asyncio.get_running_loop().create_task(self._why_round(view, index))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        return task

    async def _why_round(self, view: MessageView, index: int) -> None:
        from ..explain import explain_reply

        try:
            explanation = await asyncio.to_thread(explain_reply, self.kani, index, progress=False)
        except KanibookError as e:
            self._set_status(str(e))
            return
        except Exception as e:  # noqa: BLE001 - shown in the status line; the conversation is unchanged
            self._set_status("Why? failed: " + (str(e).strip().splitlines() or [type(e).__name__])[0])
            return
        html = widgets.HTML(explanation._repr_mimebundle_()["text/html"])
        html.add_class("kb-why-view")
        children = list(view.widget.children)
        children.insert(children.index(view.body) + 1, html)
        # the message list is a flex column of limited height: a reply grown by the view must not be squeezed
        # (clipping its Why? button), the list scrolls instead
        view.widget.layout.flex = "0 0 auto"
        view.widget.children = tuple(children)
        view.why_view = html
        self._set_status("ready")
