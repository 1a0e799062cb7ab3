"""The chat panel's widget tree (with the ``kb-*`` CSS classes browser tests select on) and its list of messages.

No chat logic here: :class:`~kanibook.widgets.chat_panel.ChatPanel` adds kani, the rounds and the callbacks.
"""

from __future__ import annotations

import ipywidgets as widgets

from ..render import chat as render
from ._message_view import MessageView, close_widgets
from ._settings import GenerationSettings

__all__ = ["PanelWidgets"]


def _classed(widget, *classes):
    for c in classes:
        widget.add_class(c)
    return widget


class PanelWidgets:
    """The panel's widgets (``.widget`` is the root), its message views (``.messages``) and its status line.

    :param heading: The title shown at the top.
    :param system_prompt: The initial text of the system prompt box.
    :param settings: Initial generation settings (see :class:`GenerationSettings`).
    """

    def __init__(self, heading: str, system_prompt: str, **settings):
        #: The message views, in display order (always-included messages first, error lines included).
        self.messages: list[MessageView] = []
        self._n_prefix = 0
        self._status = "ready"
        self._heading = heading
        self.settings = GenerationSettings(**settings)
        self.title = _classed(widgets.HTML(f"<b>{render.status_line(heading)}</b>"), "kb-title")
        self.context_meter = _classed(widgets.HTML(render.context_meter(None, None)), "kb-context-meter")
        #: The messages, in order (a plain column: every message keeps its natural height).
        self.message_box = _classed(widgets.VBox([]), "kb-messages")
        #: What scrolls: a column laid out from the bottom (``flex-direction: column-reverse``) around the list. Its
        #: resting scroll position is the bottom, so while the reader is there the newest token stays in view; once
        #: they scroll up, the browser keeps what they read in place (CSS only: ipywidgets has no scroll API).
        self.message_scroller = _classed(
            widgets.VBox([self.message_box], layout=widgets.Layout(max_height="480px")), "kb-messages-scroll"
        )
        self.input = _classed(
            widgets.Text(placeholder="Type a message, press Enter to send", layout=widgets.Layout(flex="1 1 auto")),
            "kb-input",
        )
        self.send_button = _classed(
            widgets.Button(description="Send", button_style="primary", icon="paper-plane"), "kb-send"
        )
        self.stop_button = _classed(
            widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True), "kb-stop"
        )
        self.regenerate_button = _classed(widgets.Button(description="Regenerate", icon="redo"), "kb-regenerate")
        self.clear_button = _classed(widgets.Button(description="Clear", icon="trash"), "kb-clear")
        #: Record and show what the model considered at every token of the next replies.
        self.probs_toggle = _classed(
            widgets.Checkbox(
                value=False, description="probabilities", indent=False, layout=widgets.Layout(width="auto")
            ),
            "kb-probs-toggle",
        )
        #: Called with ``(view, token_index, alternative_index)`` by a reply's "what if" button.
        self._branch_handler = None
        for button in (self.send_button, self.stop_button, self.regenerate_button, self.clear_button):
            button.layout.width = "auto"
        self.status_widget = _classed(widgets.HTML(render.status_line(self._status)), "kb-status")
        self.system_prompt = _classed(
            widgets.Textarea(
                value=system_prompt,
                placeholder="System prompt (empty: the model's default)",
                description="system prompt",
                continuous_update=False,
                rows=3,
                style={"description_width": "110px"},  # as wide as the settings' labels: no "system pr..."
                layout=widgets.Layout(width="98%"),
            ),
            "kb-system-prompt",
        )
        self.export_json_button = _classed(widgets.Button(description="Export JSON", icon="download"), "kb-export-json")
        self.export_markdown_button = _classed(
            widgets.Button(description="Export Markdown", icon="download"), "kb-export-markdown"
        )
        for button in (self.export_json_button, self.export_markdown_button):
            button.layout.width = "auto"  # the default fixed width cuts "Export Markdown" short
        self.export_link = _classed(widgets.HTML(), "kb-export-link")
        settings_box = widgets.VBox(
            [
                self.system_prompt,
                self.settings.widget,
                widgets.HBox([self.export_json_button, self.export_markdown_button, self.export_link]),
            ]
        )
        self.settings_accordion = widgets.Accordion([settings_box], titles=("Settings",), selected_index=None)
        header = widgets.HBox([self.title, self.context_meter], layout=widgets.Layout(justify_content="space-between"))
        controls = _classed(
            widgets.HBox(
                [
                    self.input,
                    self.send_button,
                    self.stop_button,
                    self.regenerate_button,
                    self.clear_button,
                    self.probs_toggle,
                ],
                layout=widgets.Layout(align_items="center"),
            ),
            "kb-controls",
        )
        self.widget = _classed(
            widgets.VBox(
                [
                    widgets.HTML(render.style_block()),
                    header,
                    self.message_scroller,
                    controls,

                    self.status_widget,
                    self.settings_accordion,
                ]
            ),
            "kb-chat-panel",
        )

    # ---- status and controls ----

    @property
    def status(self) -> str:
        """The one-line status shown under the input ("ready", "generating…", "stopped", "error: …", ...)."""
        return self._status

    def _set_status(self, text: str) -> None:
        self._status = text
        self.status_widget.value = render.status_line(text)

    def _show_busy(self, busy: bool) -> None:
        """Stop is enabled only while generating; Regenerate and Clear only while idle (Send always: it says why)."""
        self.stop_button.disabled = not busy
        self.regenerate_button.disabled = busy
        self.clear_button.disabled = busy

    # ---- the message list ----

    def _add_view(self, view: MessageView) -> MessageView:
        view.on_branch = self._branch_handler
        self.messages.append(view)
        self.message_box.children = (*self.message_box.children, view.widget)
        return view

    def _drop_views(self, start: int) -> None:
        """Remove (and close) the views from index ``start`` on."""
        dropped, self.messages = self.messages[start:], self.messages[:start]
        self.message_box.children = tuple(v.widget for v in self.messages)
        for view in dropped:
            view.close()

    def _drop_view(self, view: MessageView) -> None:
        self.messages.remove(view)
        self.message_box.children = tuple(v.widget for v in self.messages)
        view.close()

    def _show_messages(self, prefix, history) -> None:
        """Rebuild every view: the always-included messages (``prefix``), then the chat history."""
        self._drop_views(0)
        views = [MessageView.from_message(m) for m in prefix]
        self._n_prefix = len(views)
        views += [MessageView.from_message(m) for m in history]
        for view in views:
            view.on_branch = self._branch_handler
        self.messages = views
        self.message_box.children = tuple(v.widget for v in views)

    def _close_widgets(self) -> None:
        self._drop_views(0)
        close_widgets(self.widget)  # the settings are inside it
