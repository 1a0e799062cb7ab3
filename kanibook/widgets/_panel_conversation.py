"""The chat panel's conversation and files: clearing, the system prompt, the context meter, exports.

A mixin of :class:`~kanibook.widgets.chat_panel.ChatPanel` (which owns ``kani``, the widgets and the status line);
kept apart so that the panel module holds the round itself: sending, streaming, stopping.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..conversation import transcript
from ..exceptions import KanibookError
from ..render import chat as render

__all__ = ["PanelConversation"]


class PanelConversation:
    """Clear, system prompt, context meter and exports of a chat panel."""

    def clear(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self._refuse_if_busy()
        self.kani.chat_history.clear()
        self._render_all()
        self._set_status("cleared")
        self._schedule(self.refresh_context())

    def set_system_prompt(self, text: str | None) -> None:
        """Change the system prompt; the next round sends it (empty: the model's default).

        :param text: The new system prompt.
        """
        text = (text or "").strip() or None
        always = list(self.kani.always_included_messages)
        if self._owns_system_message and always:
            always = always[1:]
        from kani import ChatMessage

        self.kani.system_prompt = text
        self.kani.always_included_messages = ([ChatMessage.system(text)] if text else []) + always
        self._owns_system_message = text is not None
        if self.system_prompt.value != (text or ""):
            self.system_prompt.value = text or ""
        if not self.busy:
            self._render_all()
        self._schedule(self.refresh_context())

    async def refresh_context(self) -> int | None:
        """Measure the next prompt's length for the context meter (None where the engine cannot count)."""
        messages = [*self.kani.always_included_messages, *self.kani.chat_history]
        functions = self.kani.get_enabled_functions() or None
        try:  # an empty conversation is an empty prompt (chat templates refuse to render one)
            used = await self.kani.prompt_token_len(messages, functions) if messages else 0
        except Exception:  # noqa: BLE001 - an engine that cannot count tokens shows "context: ?"
            used = None
        self.context_tokens = used
        self.context_meter.value = render.context_meter(used, getattr(self.engine, "max_context_size", None))
        return used

    def export_json(self, path: str | os.PathLike | None = None) -> Path:
        """Save the conversation as JSON in kani's format (``Kani.load(path)`` reads it back).

        :param path: The file (default: a time-stamped name in ``export_dir``).
        """
        return transcript.save_json(self.kani, path or self._default_path("json"))

    def export_markdown(self, path: str | os.PathLike | None = None) -> Path:
        """Save the conversation as a Markdown transcript.

        :param path: The file (default: a time-stamped name in ``export_dir``).
        """
        return transcript.save_markdown(self.kani, path or self._default_path("md"))

    def _export_click(self, kind: str) -> None:
        try:
            path = self.export_json() if kind == "json" else self.export_markdown()
        except KanibookError as e:
            self._set_status(str(e))
            return
        except OSError as e:
            self._set_status(f"Could not write the export ({e.strerror or e}): set panel.export_dir to a writable folder.")
            return
        mime = "application/json" if kind == "json" else "text/markdown"
        self.export_link.value = render.download_link(path.name, path.read_bytes(), mime, saved_to=str(path))

    def _default_path(self, suffix: str) -> Path:
        folder = self.export_dir or Path.cwd()
        return folder / f"kanibook-chat-{time.strftime('%Y%m%d-%H%M%S')}.{suffix}"
