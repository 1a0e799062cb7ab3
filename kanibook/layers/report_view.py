"""``QuantReport.show_layers(label)``: the lab's layers data drawn (:class:`LayersReportView`).

It reads only the report's plain data (``report.layers``, ``report.tokens``, the reference's label), so a report
saved and loaded back draws the same. The HTML and figures are built by :mod:`kanibook.render.layers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import KanibookError

__all__ = ["LayersReportView"]


@dataclass
class LayersReportView:
    """The lab's comparison inside the network for one chosen setting, with every setting's curves.

    :param layers: ``QuantReport.layers``.
    :param tokens: The reference text's tokens.
    :param reference: The reference's label.
    :param label: The setting whose heatmap and flips are drawn.
    :param model: The model's name.
    """

    layers: dict
    tokens: list[str]
    reference: str
    label: str
    model: str = ""
    element_id: str | None = None
    final_tops: dict | None = None  # label -> each position's final top token text (the report's positions)
    plots: bool = True

    @classmethod
    def of(cls, report: Any, label: str | None = None, *, element_id: str | None = None,
           plots: bool = True) -> LayersReportView:
        from .._names import model_display_name

        layers = report.layers or {}
        reference = report.reference["label"]
        if label is None:  # the first setting that differs from the reference (not the reference loaded again)
            others = [(lab, e) for lab, e in layers.get("settings", {}).items() if lab != reference and "kl_mean" in e]
            label = next((lab for lab, e in others if any(e["kl_mean"])), others[0][0] if others else reference)
        elif label not in report.labels:
            raise KanibookError(f"No setting {label!r} in this report: use one of {', '.join(report.labels)}.")
        tops = {lab: [top[0][0] if top else "" for top in p.get("top", [])] for lab, p in report.positions.items()}
        return cls(layers, list(report.tokens), reference, label, model_display_name(report.model), element_id, tops,
                   plots)

    # ---- data the renderer reads -------------------------------------------------------------------------------

    def settings(self) -> list[tuple[str, dict]]:
        return list(self.layers.get("settings", {}).items())

    def entry(self) -> dict | None:
        return self.layers.get("settings", {}).get(self.label)

    def title(self) -> str:
        return f"Inside the layers of {self.model}: every setting against {self.reference}, drawn for {self.label}"

    def notes(self) -> list[str]:
        if not self.layers:
            return ["This report has no layers data: run compare_quantization(..., layers=True)."]
        out = []
        if self.layers.get("off"):
            out.append(f"Layers pass off: {self.layers['off']}")
        if self.layers.get("weights_note"):
            out.append(self.layers["weights_note"])
        for label, entry in self.settings():
            if "unavailable" in entry:
                out.append(f"{label}: {entry['unavailable']}")
        entry = self.entry()
        if entry is None and not self.layers.get("off"):
            out.append(f"{self.label}: no layers data (the setting did not run).")
        return out

    def figures(self) -> list[tuple[Any, str]]:
        from ..render.layers import error_figure, heatmap_figure, histogram_figure

        if not self.plots:
            return []
        series = [(lab, e) for lab, e in self.settings() if "rel_error_mean" in e]
        weights = [(lab, e["weights"]["per_block"]) for lab, e in series if e.get("weights", {}).get("per_block")]
        out = []
        if series:
            out.append((error_figure(series, weights), "error against layer, every setting"))
        entry = self.entry()
        if entry and "kl" in entry:
            out.append((heatmap_figure(self.label, entry["kl"], self.tokens[:-1], entry["flip_layers"]),
                        f"layers x tokens: lens KL of {self.label}"))  # fmt: skip
        if self.layers.get("histogram"):
            out.append((histogram_figure(self.layers["histogram"]), "weights with the formats' levels"))
        return out

    def flip_rows(self) -> list[tuple[int, str, str, str, str]]:
        """``(position, the token it follows, reference's top, setting's top, layer)`` per flip (the final top tokens
        from the report's per-position figures)."""
        entry = self.entry() or {}
        names = self.layers.get("layer_names", [])
        tops = self.final_tops or {}
        rows = []
        for p, layer in entry.get("flip_layers", []):
            token = self.tokens[p] if p < len(self.tokens) else ""
            ref = _at(tops.get(self.reference, []), p)
            new = _at(tops.get(self.label, []), p)
            rows.append((p, token, ref, new, names[layer] if layer < len(names) else str(layer)))
        return rows

    def kind_errors(self) -> tuple[list[str], list[list[str]]]:
        kinds: list[str] = []
        for _, e in self.settings():
            for k in e.get("weights", {}).get("per_kind", {}):
                if k not in kinds:
                    kinds.append(k)
        rows = [[lab, *(f"{e['weights']['per_kind'].get(k, float('nan')):.3g}" for k in kinds)]
                for lab, e in self.settings() if e.get("weights", {}).get("per_kind")]  # fmt: skip
        return kinds, rows

    def outliers(self) -> list[dict]:
        return list(self.layers.get("outliers", []))

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from ..render.layers import comparison_html, comparison_text

        return {"text/plain": comparison_text(self), "text/html": comparison_html(self)}

    def __str__(self) -> str:
        from ..render.layers import comparison_text

        return comparison_text(self)


def _at(values: list, i: int) -> str:
    return str(values[i]) if 0 <= i < len(values) else ""
