"""IPython magics: ``%kani`` and ``%%chat`` parse and call the Python API (commands.py); what ``%%chat`` shows while a
reply streams and after (views.py)."""

from __future__ import annotations

from .commands import register

__all__ = ["register"]
