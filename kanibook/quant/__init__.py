"""Quantization: the presets (a short name -> what ``from_pretrained`` needs) and the quantization lab.

- ``presets``: :data:`PRESETS` and :func:`load_kwargs_for` (light: torch only when a preset is resolved);
- ``settings``: what the lab compares (a preset or a labelled ``BitsAndBytesConfig``), and the default list;
- ``lab``: :func:`compare_quantization` loads each setting in turn, measures it and releases its memory;
- ``metrics``: perplexity, KL divergence, top-1 agreement and the change in probability, against the reference;
- ``report``: :class:`QuantReport`, the display object (table, plots, save / load);
- ``recommend``: :func:`recommend_quant`, the best setting that fits.

Only the presets are imported here; the lab's names are imported on first use (nothing heavy at import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

from .presets import PRESETS, load_kwargs_for

__all__ = ["PRESETS", "load_kwargs_for", "compare_quantization", "QuantReport", "recommend_quant", "Recommendation"]

_LAZY = {
    "compare_quantization": ".lab",
    "QuantReport": ".report",
    "recommend_quant": ".recommend",
    "Recommendation": ".recommend",
}

if TYPE_CHECKING:
    from .lab import compare_quantization
    from .recommend import Recommendation, recommend_quant
    from .report import QuantReport


__getattr__ = lazy_names(__name__, _LAZY, globals())
