"""Inside the layers: the logit lens of one model (:func:`show_layers`) and, for the quantization lab, what each
setting does inside the network against the reference (weight errors, activation outliers, the residual stream and
the lens layer by layer: ``compare_quantization(..., layers=True)``, ``QuantReport.show_layers(label)``).

- :mod:`.lens`: the blocks, final norm and head of a decoder; the residual stream captured in one forward pass;
- :mod:`.show`: :func:`show_layers` and its :class:`~.show.LayersView`;
- :mod:`.weights`: dequantized weights against the reference's, the formats' levels over a weight histogram;
- :mod:`.compare`: the lab's recorder (summaries per setting, the reference's hidden states kept while it runs);
- :mod:`.report_view`: the lab's layers data drawn from a report.

Views are rendered by :mod:`kanibook.render.layers`. Importing this package imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

__all__ = ["show_layers", "LayersView"]

_LAZY = {"show_layers": ".show", "LayersView": ".show"}

if TYPE_CHECKING:
    from .show import LayersView, show_layers

__getattr__ = lazy_names(__name__, _LAZY, globals())
