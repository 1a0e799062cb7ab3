"""The layers' views as HTML and text: the logit lens of one model (:class:`kanibook.layers.show.LayersView`) and the
lab's comparison inside the network (:class:`kanibook.layers.report_view.LayersReportView`), with their figures.

Pure functions of the data (no model, no I/O). Every token, label, module name and reason goes through
:mod:`kanibook.render.safe`; styles are inline ``style=`` attributes (no ``<style>`` block, no script), so a view
reads the same in an untrusted notebook. Figures are matplotlib ``Figure`` objects (never pyplot), embedded as PNG.
"""

from __future__ import annotations

import io
import math
from typing import Any

from . import safe
from .probs import BINS, bin_of

__all__ = ["lens_html", "lens_text", "comparison_html", "comparison_text", "error_figure", "heatmap_figure",
           "histogram_figure", "png_img"]  # fmt: skip

BOX = ("font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: 13px; line-height: 1.4; "
       "max-width: 100%; overflow-x: auto; contain: content;")  # fmt: skip
CELL = "padding: 1px 4px; border: 1px solid rgba(128,128,128,0.25); white-space: pre; text-align: left;"
MONO = "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;"
MUTED = "opacity: 0.75; font-size: 12px;"
MAX_POSITIONS = 160  # the grid shows at most the last this many positions


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%" if p >= 0.001 else f"{100 * p:.2g}%"


def _short(token: str, width: int = 8) -> str:
    return token if len(token) <= width else token[: width - 1] + "…"


def _cell_style(prob: float) -> str:
    _, bg, fg, _ = BINS[bin_of(prob)]
    return f"{CELL}{MONO}background: {bg}; color: {fg}; cursor: help;"


def legend() -> str:
    items = "".join(f'<span style="display:inline-block; padding:0 6px; margin-right:2px; background:{bg}; '
                    f'color:{fg}; border:1px solid rgba(128,128,128,0.4);">{safe.text(label)}</span>'
                    for _, bg, fg, label in BINS)  # fmt: skip
    return f'<div style="{MUTED} margin: 4px 0;">probability of the top token: {items}</div>'


# ---- the logit lens of one model ------------------------------------------------------------------------------------


def lens_html(view) -> str:
    n, layers = len(view.tokens), len(view.layer_names)
    first = max(0, n - MAX_POSITIONS)
    cols = range(first, n)
    head = "".join(f'<th style="{CELL}{MONO}" title="{safe.attr(f"position {p}: {view.tokens[p]!r}")}">'
                   f"{safe.visible(_short(view.tokens[p]))}</th>" for p in cols)  # fmt: skip
    rows = []
    for layer in reversed(range(layers)):  # the output at the top, the embeddings at the bottom
        cells = []
        for p in cols:
            texts, probs = view.top_texts[layer][p], view.top_probs[layer][p]
            tip = f"layer {view.layer_names[layer]}, after {view.tokens[p]!r}:\n" + "\n".join(
                f"{t!r}  {_pct(q)}" for t, q in zip(texts, probs))
            mark = " outline: 2px solid #2471a3;" if view.settles[p] == layer else ""
            cells.append(f'<td style="{_cell_style(probs[0])}{mark}" title="{safe.attr(tip)}">'
                         f"{safe.visible(_short(texts[0]))}</td>")  # fmt: skip
        rows.append(f'<tr><th style="{CELL}">{safe.text(view.layer_names[layer])}</th>{"".join(cells)}</tr>')
    settle = "".join(f'<td style="{CELL}{MUTED}">{view.settles[p]}</td>' for p in cols)
    cut = f" (the last {MAX_POSITIONS} of {n} positions)" if first else ""
    grid = (f'<div style="overflow-x: auto; max-height: 32em; overflow-y: auto;"><table style="border-collapse: '
            f'collapse; font-size: 11px;"><tr><th style="{CELL}">layer \\ input</th>{head}</tr>{"".join(rows)}'
            f'<tr><th style="{CELL}">settles at</th>{settle}</tr></table></div>')  # fmt: skip
    settled = sorted(view.settles)
    median = settled[len(settled) // 2] if settled else 0
    title = (f"Logit lens of {view.model or 'the model'}: {layers - 1} blocks x {n} tokens{cut}. Each cell is what "
             "that layer would predict next, read through the final norm and output head; hover for the top 5. "
             f"Outlined: the layer where the prediction settles on the final one (median: layer {median}).")
    segs = ""
    if view.segments:
        segs = f'<div style="{MUTED}">messages: ' + ", ".join(
            f"{safe.text(role)} {start}–{end - 1}" for role, start, end in view.segments) + "</div>"
    eid = f' id="{safe.attr(view.element_id)}"' if view.element_id else ""
    return (f'<div class="kb-layers"{eid} style="{BOX}"><div style="font-weight: 600;">{safe.text(title)}</div>'
            f"{segs}{legend()}{grid}{_position_table(view)}</div>")  # fmt: skip


def _position_table(view) -> str:
    p = view.position
    rows = []
    for entry in reversed(view.at(p)):
        cells = "".join(f'<td style="{_cell_style(q)}">{safe.visible(t)} <span style="opacity:.8">{_pct(q)}</span>'
                        "</td>" for t, q in entry["tokens"])  # fmt: skip
        rows.append(f'<tr><th style="{CELL}">{safe.text(entry["layer"])}</th>{cells}</tr>')
    caption = (f"Position {p}, after {view.tokens[p]!r}: the top 5 layer by layer (the prediction settles at layer "
               f"{view.layer_names[view.settles[p]]}).")
    return (f'<div style="margin-top: 8px;">{safe.text(caption)}</div><div style="max-height: 24em; overflow-y: auto;">'
            f'<table style="border-collapse: collapse; font-size: 12px;">{"".join(rows)}</table></div>')  # fmt: skip


def lens_text(view) -> str:
    p = view.position
    lines = [f"Logit lens of {view.model or 'the model'}: {len(view.layer_names) - 1} blocks x {len(view.tokens)} "
             f"tokens; position {p} (after {view.tokens[p]!r}), top 3 by layer:"]  # fmt: skip
    for entry in view.at(p):
        tops = ", ".join(f"{safe.clean_chars(repr(t))} {_pct(q)}" for t, q in entry["tokens"][:3])
        lines.append(f"  {entry['layer']:>5}: {tops}")
    lines.append(f"settles at layer (per position): {view.settles}")
    return "\n".join(safe.clean_chars(line) for line in lines)


# ---- the lab's comparison inside the network ------------------------------------------------------------------------


def comparison_html(view) -> str:
    eid = f' id="{safe.attr(view.element_id)}"' if view.element_id else ""
    parts = [f'<div style="font-weight: 600;">{safe.text(view.title())}</div>']
    parts += [f'<div style="{MUTED}">{safe.text(line)}</div>' for line in view.notes()]
    for fig, alt in view.figures():
        parts.append(png_img(fig, alt))
    parts.append(_flips_table(view))
    parts.append(_kinds_table(view))
    parts.append(_outliers_table(view))
    return f'<div class="kb-layers-report"{eid} style="{BOX}">{"".join(parts)}</div>'


def _table(header: list[str], rows: list[list[str]], caption: str) -> str:
    if not rows:
        return ""
    head = "".join(f'<th style="{CELL}">{safe.text(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f'<td style="{CELL}">{safe.text(c)}</td>' for c in row) + "</tr>" for row in rows)
    return (f'<div style="margin-top: 8px;">{safe.text(caption)}</div><div style="max-height: 20em; overflow-y: '
            f'auto;"><table style="border-collapse: collapse; font-size: 12px;"><tr>{head}</tr>{body}</table></div>')


def _flips_table(view) -> str:
    rows = [[str(p), repr(token), repr(ref), repr(new), layer] for p, token, ref, new, layer in view.flip_rows()]
    return _table(["position", "after", "reference's top", f"{view.label}'s top", "apart from layer"], rows,
                  f"Where {view.label}'s top token flips, and the layer from which its lens stays apart from the "
                  "reference's:")  # fmt: skip


def _kinds_table(view) -> str:
    kinds, rows = view.kind_errors()
    return _table(["setting", *kinds], rows, "Relative weight error by kind of projection (mean over blocks):")


def _outliers_table(view) -> str:
    rows = [[str(r["block"]), r["kind"], str(r["count"]), f"{r['max']:.1f}", ", ".join(map(str, r["dims"]))]
            for r in view.outliers() if r["count"]]  # fmt: skip
    threshold = view.layers.get("threshold", 6.0)
    if not rows:
        return f'<div style="margin-top: 8px;">{safe.text(f"No linear layer input reaches {threshold} on this text.")}</div>'
    return _table(["block", "input of", "dims ≥ threshold", "largest |x|", "dimensions"], rows,
                  f"Activation outliers on the reference text: input dimensions of the linear layers that reach "
                  f"LLM.int8's threshold ({threshold}), which int8 keeps in 16 bits:")  # fmt: skip


def comparison_text(view) -> str:
    lines = [view.title(), *view.notes()]
    for label, entry in view.settings():
        if "unavailable" in entry:
            lines.append(f"  {label}: {entry['unavailable']}")
            continue
        rel, kl = entry["rel_error_mean"], entry["kl_mean"]
        lines.append(f"  {label}: residual error at the last layer {rel[-1]:.3g}, lens KL {kl[-1]:.3g} nats, "
                     f"flips {len(entry['flip_layers'])}")  # fmt: skip
    return "\n".join(safe.clean_chars(line) for line in lines)


# ---- figures --------------------------------------------------------------------------------------------------------


def png_img(fig, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    uri = safe.data_uri("image/png", buffer.getvalue())
    return f'<div><img src="{uri}" alt="{safe.attr(alt)}" style="max-width: 100%;"></div>'


def error_figure(series: list[tuple[str, dict]], weights: list[tuple[str, dict]], *, width: float = 11.0):
    """Residual relative error, lens KL and same-top % against layer, one line per setting; weight error per block."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 3.2), dpi=90, layout="constrained")
    axes = fig.subplots(1, 4)
    for label, entry in series:
        name = safe.clean_chars(label)
        axes[0].plot(entry["rel_error_mean"], label=name, marker=".")
        axes[1].plot(entry["kl_mean"], label=name, marker=".")
        axes[2].plot(entry["same_top_pct"], label=name, marker=".")
    for label, per_block in weights:
        blocks = [int(b) for b in per_block if b not in ("None", "null")]
        axes[3].plot(blocks, [per_block[str(b)] for b in blocks], label=safe.clean_chars(label), marker=".")
    titles = ("residual stream: relative error", "logit lens: KL vs reference (nats)", "lens: same top token %",
              "weights: relative error per block")  # fmt: skip
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer" if ax is not axes[3] else "block", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in (axes[0], axes[1], axes[3]):
        if any(line.get_ydata().size and max(line.get_ydata()) > 0 for line in ax.get_lines()):
            ax.set_yscale("symlog", linthresh=1e-4)
    axes[0].legend(fontsize=7)
    return fig


def heatmap_figure(label: str, kl: list[list[float]], tokens: list[str], flips: list[list[int]], *, width: float = 11.0):
    """Layers x positions of the lens KL against the reference, flipped positions marked at the layer they part."""
    import numpy as np
    from matplotlib.figure import Figure

    data = np.log10(np.asarray(kl, dtype=float) + 1e-6)
    fig = Figure(figsize=(width, 3.4), dpi=90, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(data, aspect="auto", origin="lower", cmap="magma_r", interpolation="nearest")
    for p, layer in flips:
        ax.plot([p], [layer], marker="v", color="#1f77b4", markersize=5)
    ax.set_xlabel("position (the token it predicts is the next)", fontsize=8)
    ax.set_ylabel("layer", fontsize=8)
    ax.set_title(f"{safe.clean_chars(label)}: log10 KL of each layer's lens vs the reference's (▼ a flip parts "
                 "there and stays apart)", fontsize=9)  # fmt: skip
    step = max(1, len(tokens) // 24)
    ax.set_xticks(range(0, len(tokens), step))
    ax.set_xticklabels([safe.clean_chars(_short(tokens[i], 6)) for i in range(0, len(tokens), step)], fontsize=6,
                       rotation=90)  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.03)
    return fig


def histogram_figure(hist: dict, *, width: float = 11.0):
    """The chosen module's weights, with nf4, fp4 (a median block's absmax) and int8 (a median row's scale) levels."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 2.8), dpi=90, layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    edges, counts = hist["edges"], hist["counts"]
    for ax, fmt in zip(axes, ("nf4", "fp4", "int8")):
        ax.stairs(counts, edges, fill=True, alpha=0.5)
        levels = hist["levels"][fmt]
        for v in levels if fmt != "int8" else levels[::8]:
            ax.axvline(v, color="#d62728", linewidth=0.6, alpha=0.8)
        ax.set_yscale("log")
        ax.set_xlim(edges[0], edges[-1])
        ax.tick_params(labelsize=7)
        shown = "every 8th of 255 levels" if fmt == "int8" else f"{len(levels)} levels"
        ax.set_title(f"{fmt}: {shown}", fontsize=9)
    fig.suptitle(f"{safe.clean_chars(hist['name'])}: weights (max |w| = {hist['tail_ratio']:.1f} standard deviations, "
                 f"{hist.get('beyond', 0)} beyond this range); a median block's absmax {hist['block_absmax']:.3g}, "
                 f"a median row's {hist['row_absmax']:.3g}", fontsize=9)
    return fig


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
