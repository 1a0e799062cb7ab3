"""ipywidgets front ends built on :mod:`kanibook.render`: the chat panel (:func:`kanibook.chat`)."""

from __future__ import annotations

__all__ = ["ChatPanel", "chat"]


def __getattr__(name: str):
    if name in __all__:  # ipywidgets is imported on first use, not with the package
        from . import chat_panel

        return getattr(chat_panel, name)
    raise AttributeError(f"module 'kanibook.widgets' has no attribute {name!r}")
