"""Running the model: :func:`load`, :class:`KanibookEngine` (kani's ``HuggingEngine``, mended for notebooks), the one
model thread all of kanibook's torch work runs on, and offline-safe model resolution.

- ``_huggingface``: :func:`load`, :class:`KanibookEngine`, :class:`KanibookCompletion`;
- ``_generation``: one ``generate`` streamed to the event loop, stoppable, with its :class:`TurnStats`;
- ``_model_thread``: the model thread and the CPU thread-pool hygiene that keeps it at full speed;
- ``_hub``: local folders never wait on the network; unknown ids fail fast;
- ``_peak_memory``: the peak-memory reading of a turn.

The public names are imported on first use, so ``kanibook.engine._model_thread`` and ``_hub`` stay light (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

__all__ = ["KanibookCompletion", "KanibookEngine", "TurnStats", "load"]

_LAZY = {
    "load": "._huggingface",
    "KanibookEngine": "._huggingface",
    "KanibookCompletion": "._huggingface",
    "TurnStats": "._generation",
}

if TYPE_CHECKING:
    from ._generation import TurnStats
    from ._huggingface import KanibookCompletion, KanibookEngine, load


__getattr__ = lazy_names(__name__, _LAZY, globals())
