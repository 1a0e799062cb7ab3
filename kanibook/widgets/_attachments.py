"""The chat panel's attachments: an upload control for images and WAV files sent with the next message, and the
thumbnails / audio players shown in the message list.

:class:`AttachmentBar` holds what is waiting to be sent (``panel.attachments``); :func:`media_message` builds the
user message with it, checked against the model first (a refusal leaves the attachments in place);
:func:`show_media` adds a message's media under its text in the panel.
"""

from __future__ import annotations

from typing import Any, Callable

import ipywidgets as widgets

from ..exceptions import KanibookError

__all__ = ["AttachmentBar", "media_message", "show_media"]

_ACCEPT = "image/*,.wav,audio/wav,audio/x-wav"


class AttachmentBar:
    """An upload control and the pending attachments (``.widget``; CSS classes ``kb-upload``, ``kb-attachments``).

    :param on_error: Called with a one-line message when an uploaded file cannot be read.
    """

    def __init__(self, on_error: Callable[[str], None] | None = None):
        self._on_error = on_error or (lambda text: None)
        #: The parts waiting for the next message, and their captions (file names).
        self.parts: list = []
        self.captions: list[str] = []
        self.upload = widgets.FileUpload(accept=_ACCEPT, multiple=True, description="Attach")
        self.upload.add_class("kb-upload")
        self.clear_button = widgets.Button(description="Remove", icon="times", disabled=True)
        self.clear_button.layout.width = "auto"
        self.clear_button.add_class("kb-attachments-clear")
        self.preview = widgets.HTML()
        self.preview.add_class("kb-attachments")
        self.widget = widgets.HBox([self.upload, self.clear_button, self.preview])
        self.upload.observe(self._on_upload, "value")
        self.clear_button.on_click(lambda _: self.clear())

    def attach(self, obj: Any, name: str = "") -> None:
        """Attach an image or sound to the next message (what the upload control does, from Python).

        :param obj: Anything :func:`kanibook.media.as_part` takes (a PIL image, ``(samples, rate)``, a path, bytes).
        :param name: A caption (the file name).
        :raises MediaError: if it cannot be read (nothing is attached).
        """
        from ..media import as_part

        part = as_part(obj)
        self.parts.append(part)
        self.captions.append(str(name))
        self._refresh()

    def clear(self) -> None:
        """Drop the pending attachments."""
        self.parts, self.captions = [], []
        self._refresh()

    def _on_upload(self, change) -> None:
        files = change["new"] or ()
        if not files:
            return
        for f in files:
            name = str(f.get("name", "")) if isinstance(f, dict) else ""
            try:
                self.attach(bytes(f["content"]), name)
            except KanibookError as e:
                self._on_error(f"{name}: {e}"[:300])
        self.upload.value = ()  # ready for the next upload (the same file again included)

    def _refresh(self) -> None:
        from ..media.view import MediaView

        self.clear_button.disabled = not self.parts
        self.preview.value = MediaView(self.parts, self.captions)._repr_mimebundle_()["text/html"] if self.parts else ""

    def close(self) -> None:
        from ._message_view import close_widgets

        close_widgets(self.widget)


def media_message(bar: AttachmentBar, text: str, kani) -> Any:
    """The user message for ``text`` and the pending attachments, checked against the model; then the bar is empty.

    :param bar: The panel's attachments.
    :param text: The message's text.
    :param kani: The panel's ``Kani`` (its engine and conversation are checked, see
        :func:`kanibook.media.check_media`).
    :raises MediaError: if the model cannot take them (the attachments stay, nothing is sent).
    """
    from kani import ChatMessage

    if not bar.parts:
        return ChatMessage.user(text)
    from ..media import check_media
    from ..media.parts import name_media

    message = ChatMessage.user([text, *bar.parts] if text else list(bar.parts))
    check_media(kani.engine, [*kani.always_included_messages, *kani.chat_history, message])
    name_media(message, bar.captions)
    bar.parts, bar.captions = [], []
    bar._refresh()
    return message


def show_media(view) -> None:
    """Add the thumbnails / audio players of a message view's media under its text (once; no media: nothing)."""
    from ..media import media_in
    from ..media.parts import media_names
    from ..media.view import MediaView

    message = view.message
    parts = media_in([message]) if message is not None else []
    if not parts or getattr(view, "media", None) is not None:
        return
    names = media_names(message)
    names += [""] * (len(parts) - len(names))
    view.media = widgets.HTML(MediaView(parts, names[: len(parts)])._repr_mimebundle_()["text/html"])
    view.media.add_class("kb-msg-media")
    children = list(view.widget.children)
    at = children.index(view.body) + 1 if view.body in children else len(children)
    view.widget.children = (*children[:at], view.media, *children[at:])
