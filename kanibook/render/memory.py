"""Memory views as HTML and text (pure functions of the data), and the matplotlib figure of a memory timeline.

Every string that comes from outside (model names, device names, dtype labels, module names) goes through
:mod:`kanibook.render.safe`. Byte counts are shown in decimal units (``538 MB``), with the exact count on hover.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._names import model_display_name
from . import safe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..memory_view.estimate import MemoryEstimate
    from ..memory_view.report import MemoryReport
    from ..memory_view.sampling import MemoryTimeline

__all__ = [
    "estimate_html",
    "estimate_text",
    "format_bytes",
    "format_count",
    "gauge_html",
    "report_html",
    "report_text",
    "timeline_figure",
    "timeline_html",
    "timeline_text",
]

_UNITS = ("kB", "MB", "GB", "TB", "PB")
_BOX = (
    "font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: 13px; line-height: 1.4; "
    "max-width: 100%; overflow-x: auto; contain: content;"
)
_TABLE = "border-collapse: collapse; margin: 4px 0 8px 0; font-size: inherit;"
_CELL = "padding: 2px 10px 2px 0; text-align: right; white-space: nowrap;"
_LEFT = "padding: 2px 10px 2px 0; text-align: left; white-space: nowrap;"
_HEAD = "font-weight: 600; margin-top: 6px;"
_MUTED = "opacity: 0.7;"


def format_bytes(n: float | None) -> str:
    """A byte count in decimal units with three significant figures: ``538 MB``, ``1.23 GB``, ``512 B``."""
    if n is None:
        return "n/a"
    value = float(n)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1000:
        return f"{sign}{value:.0f} B"
    for unit in _UNITS:
        value /= 1000.0
        if value < 999.5 or unit == _UNITS[-1]:
            digits = 0 if value >= 99.95 else 1 if value >= 9.995 else 2
            return f"{sign}{value:.{digits}f} {unit}"
    raise AssertionError("unreachable")


def format_count(n: int | None) -> str:
    """A parameter count: ``134.5M``, ``7.24B``, ``35.4k``."""
    if n is None:
        return "n/a"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.{1 if n / div >= 100 else 2 if n / div < 10 else 1}f}{unit}"
    return str(int(n))


def _bytes_cell(n: int | None, left: bool = False, *, blank: str | None = None) -> str:
    """A byte count with the exact figure on hover; ``blank`` is shown instead of ``n/a`` for None."""
    title = "" if n is None else f' title="{safe.attr(f"{int(n):,} bytes")}"'
    shown = blank if n is None and blank is not None else format_bytes(n)
    return f'<td style="{_LEFT if left else _CELL}"{title}>{safe.text(shown)}</td>'


def _cell(value: Any, left: bool = False) -> str:
    return f'<td style="{_LEFT if left else _CELL}">{safe.text(value)}</td>'


def _header(*names: str) -> str:
    cells = "".join(f'<th style="{_LEFT if i == 0 else _CELL}">{safe.text(n)}</th>' for i, n in enumerate(names))
    return f"<tr>{cells}</tr>"


def _bar(used: int | None, total: int | None, label: str, width_px: int = 120) -> str:
    """A small horizontal bar (inline styles only, nothing that can leave its box), then what it shows in words on
    the page (``12% of system total``), not only in its hover title."""
    if not used or not total or total <= 0:
        return ""
    share = max(0.0, min(1.0, used / total))
    words = f"{share:.1%} {label}"
    return (
        f'<span style="display:inline-block; width:{width_px}px; height:8px; background:rgba(127,127,127,0.25); '
        f'vertical-align:middle; border-radius:2px; overflow:hidden;" title="{safe.attr(words)}">'
        f'<span style="display:block; height:100%; width:{share * 100:.1f}%; background:#4a90d9;"></span></span>'
        f' <span class="kb-memory-bar-label" style="{_MUTED}">{safe.text(words)}</span>'
    )


def _root(element_id: str | None, body: str, kind: str) -> str:
    id_attr = f' id="{safe.attr(element_id)}"' if element_id else ""
    return f'<div class="kb-memory kb-memory-{kind}"{id_attr} style="{_BOX}">{body}</div>'


# ---- the report of memory in use ---------------------------------------------------------------------------------


def report_html(report: MemoryReport, element_id: str | None = None) -> str:
    """The HTML of a :class:`~kanibook.memory_view.MemoryReport`."""
    parts = [f'<div style="{_HEAD}">Memory{_model_suffix_html(report.model_name)}</div>']
    if report.devices:
        rows = [_header("CUDA device", "name", "allocated", "reserved", "peak allocated", "total", "reserved / total")]
        for d in report.devices:
            rows.append(
                "<tr>"
                + _cell(f"cuda:{d.index}", left=True)
                + _cell(d.name, left=True)
                + _bytes_cell(d.allocated)
                + _bytes_cell(d.reserved)
                + _bytes_cell(d.peak_allocated)
                + _bytes_cell(d.total)
                + f'<td style="{_LEFT}">{_bar(d.reserved, d.total, "of the device, reserved")}</td></tr>'
            )
        parts.append(f'<table style="{_TABLE}">{"".join(rows)}</table>')
    if report.cuda_note:
        parts.append(f'<div style="{_MUTED}">{safe.text(report.cuda_note)}</div>')
    p = report.process
    if p is not None:
        rows = [_header("process", "resident (RSS)", "peak RSS", "system available", "system total", "RSS / system total")]
        rows.append(
            "<tr>"
            + _cell("this kernel", left=True)
            + _bytes_cell(p.rss)
            + _bytes_cell(p.peak_rss)
            + _bytes_cell(p.system_available)
            + _bytes_cell(p.system_total)
            + f'<td style="{_LEFT}">{_bar(p.rss, p.system_total, "of the system total, resident")}</td></tr>'

        )
        parts.append(f'<table style="{_TABLE}">{"".join(rows)}</table>')
    if report.weights_note:
        parts.append(f'<div style="{_MUTED}">{safe.text(report.weights_note)}</div>')
    w = report.weights
    if w is not None:
        parts.append(f'<div style="{_HEAD}">Model weights by dtype{_preset_suffix_html(w.preset)}</div>')
        rows = [_header("dtype", "device", "tensors", "elements", "bytes", "share")]
        for g in w.groups:
            share = g.bytes / w.total_bytes if w.total_bytes else 0.0
            rows.append(
                "<tr>"
                + _cell(g.dtype, left=True)
                + _cell(g.device, left=True)
                + _cell(f"{g.tensors:,}")
                + _cell(format_count(g.elements))
                + _bytes_cell(g.bytes)
                + _cell(f"{share:.1%}")
                + "</tr>"
            )
        rows.append(
            f'<tr style="font-weight:600;">{_cell("total", left=True)}{_cell("")}{_cell("")}{_cell("")}'
            f"{_bytes_cell(w.total_bytes)}{_cell('')}</tr>"
        )
        parts.append(f'<table style="{_TABLE}">{"".join(rows)}</table>')
        for line in _weight_notes(report):
            parts.append(f'<div style="{_MUTED}">{safe.text(line)}</div>')
    elif report.model_name is None:
        parts.append(f'<div style="{_MUTED}">No model given: pass an engine, e.g. kanibook.memory(engine).</div>')
    return _root(element_id, "".join(parts), "report")


def _weight_notes(report: MemoryReport) -> list[str]:
    w, notes = report.weights, []
    if w.storage_overhead_bytes:
        notes.append(
            f"Includes {format_bytes(w.storage_overhead_bytes)} of quantization scales (absmax / row scales) that "
            f"model.get_memory_footprint() leaves out ({format_bytes(w.transformers_bytes)})."
        )
    on_cpu = sum(g.bytes for g in w.groups if g.device == "cpu")
    if report.process is not None and 0 < report.process.rss < on_cpu:
        notes.append(
            "The resident memory is below the weights: weights memory-mapped from a safetensors file count in RSS "
            "only once they are read (the first generation pages them in)."
        )
    return notes


def _model_suffix_html(name: str | None) -> str:
    return "" if not name else f" &middot; <span>{safe.text(model_display_name(name))}</span>"


def _preset_suffix_html(preset: str | None) -> str:
    return "" if not preset else f' <span style="{_MUTED}">({safe.text(preset)})</span>'


def report_text(report: MemoryReport) -> str:
    """The plain-text form of a :class:`~kanibook.memory_view.MemoryReport`."""
    lines = ["Memory" + (f" · {safe.clean_chars(model_display_name(report.model_name))}" if report.model_name else "")]
    for d in report.devices:
        lines.append(
            f"  cuda:{d.index} {safe.clean_chars(d.name)}: allocated {format_bytes(d.allocated)}, "
            f"reserved {format_bytes(d.reserved)}, peak {format_bytes(d.peak_allocated)}, "
            f"total {format_bytes(d.total)}"
        )
    if report.cuda_note:
        lines.append(f"  {safe.clean_chars(report.cuda_note)}")
    p = report.process
    if p is not None:
        lines.append(
            f"  process: RSS {format_bytes(p.rss)}, peak RSS {format_bytes(p.peak_rss)}; system "
            f"{format_bytes(p.system_available)} available of {format_bytes(p.system_total)}"
        )
    if report.weights_note:
        lines.append(f"  {safe.clean_chars(report.weights_note)}")
    w = report.weights
    if w is not None:
        lines.append(f"  model weights: {format_bytes(w.total_bytes)}" + (f" ({w.preset})" if w.preset else ""))
        for g in w.groups:
            lines.append(
                f"    {safe.clean_chars(g.dtype):<10} {safe.clean_chars(g.device):<8} {format_bytes(g.bytes):>9}"
                f"  ({g.tensors:,} tensors, {format_count(g.elements)} elements)"
            )
        lines += [f"    {line}" for line in _weight_notes(report)]
    return "\n".join(lines)


# ---- the estimate before loading -------------------------------------------------------------------------------


def estimate_html(est: MemoryEstimate, element_id: str | None = None) -> str:
    """The HTML of a :class:`~kanibook.memory_view.MemoryEstimate`: one row per preset, measured figures beside."""
    measured = est.measured
    head = (
        f'<div style="{_HEAD}">Memory estimate{_model_suffix_html(est.model_name)}</div>'
        f'<div style="{_MUTED}">{safe.text(_estimate_summary(est))}</div>'
    )
    names = ["preset", "weights", "quantized", "scales", "16/32-bit", f"KV cache ({est.context_length:,} tok)", "total"]
    if measured is not None:
        names += ["measured", "difference"]
    rows = [_header(*names)]
    for r in est.rows:
        is_loaded = measured is not None and r.preset == measured.preset
        style = ' style="font-weight:600;"' if is_loaded else ""
        cells = (
            _cell(r.preset, left=True)
            + _bytes_cell(r.weights_bytes)
            + _bytes_cell(r.quantized_bytes or None, blank="\u2014")
            + _bytes_cell(r.scale_bytes or None, blank="\u2014")
            + _bytes_cell(r.kept_bytes)
            + _bytes_cell(r.kv_cache_bytes)
            + _bytes_cell(r.total_bytes)
        )
        if measured is not None:
            if is_loaded:
                diff = (r.weights_bytes - measured.footprint_bytes) / measured.footprint_bytes
                cells += _bytes_cell(measured.footprint_bytes) + _cell(f"{diff:+.1%}")
            else:
                cells += _cell("") + _cell("")
        rows.append(f"<tr{style}>{cells}</tr>")
    table = f'<table style="{_TABLE}">{"".join(rows)}</table>'
    notes = "".join(f'<div style="{_MUTED}">{safe.text(line)}</div>' for line in _estimate_notes(est))
    return _root(element_id, head + table + notes, "estimate")


def _estimate_summary(est: MemoryEstimate) -> str:
    return (
        f"{format_count(est.parameters)} parameters ({est.quantizable_parameters / max(est.parameters, 1):.0%} in "
        f"quantizable linear layers); KV cache {format_bytes(est.kv_bytes_per_token)} per token "
        f"at {est.kv_dtype} x batch {est.batch_size} ({est.kv_layers} layers x 2 x {est.kv_heads} KV heads x "
        f"{est.head_dim} head dim); counted from the config alone ({est.method})."
    )


def _estimate_notes(est: MemoryEstimate) -> list[str]:
    notes = [
        f"Quantized presets keep {est.kept_summary} in {est.rest_dtype}; their KV cache is in {est.rest_dtype} too.",
        (
            "Scales: int8 has one fp32 scale per output row; 4-bit has an fp32 absmax per 64-weight block, "
            "which double quantization (-dq) stores as 8-bit with one fp32 scale per 256 blocks."
        ),
    ]
    m = est.measured
    if m is not None:
        notes.append(
            f"Measured ({m.preset}): {format_bytes(m.footprint_bytes)} of weights in memory "
            f"(model.get_memory_footprint(): {format_bytes(m.transformers_bytes)})."
        )
    return notes


def estimate_text(est: MemoryEstimate) -> str:
    """The plain-text form of a :class:`~kanibook.memory_view.MemoryEstimate`."""
    measured = est.measured
    lines = [
        "Memory estimate" + (f" · {safe.clean_chars(model_display_name(est.model_name))}" if est.model_name else ""),
        "  " + safe.clean_chars(_estimate_summary(est)),
        f"  {'preset':<8} {'weights':>9} {'scales':>9} {'KV cache':>9} {'total':>9}"
        + (f" {'measured':>9} {'diff':>7}" if measured is not None else ""),
    ]
    for r in est.rows:
        line = (
            f"  {r.preset:<8} {format_bytes(r.weights_bytes):>9} {format_bytes(r.scale_bytes) if r.scale_bytes else '-':>9} "
            f"{format_bytes(r.kv_cache_bytes):>9} {format_bytes(r.total_bytes):>9}"
        )
        if measured is not None and r.preset == measured.preset:
            diff = (r.weights_bytes - measured.footprint_bytes) / measured.footprint_bytes
            line += f" {format_bytes(measured.footprint_bytes):>9} {diff:>+7.1%}"
        lines.append(line)
    lines += ["  " + safe.clean_chars(n) for n in _estimate_notes(est)]
    return "\n".join(lines)


# ---- the live gauge ----------------------------------------------------------------------------------------------


def gauge_html(label: str, used: int | None, total: int | None, peak: int | None, detail: str = "") -> str:
    """The one-line text of a memory gauge: ``RSS 812 MB of 24.6 GB (peak 830 MB)``."""
    text = f"{label} {format_bytes(used)}"
    if total:
        text += f" of {format_bytes(total)}"
    if peak is not None:
        text += f" (peak {format_bytes(peak)})"
    extra = f' <span style="{_MUTED}">{safe.text(detail)}</span>' if detail else ""
    return f'<span class="kb-memory-gauge-text" style="{_BOX}">{safe.text(text)}{extra}</span>'


# ---- the timeline ------------------------------------------------------------------------------------------------


def timeline_figure(timeline: MemoryTimeline, *, width: float = 7.0, height: float = 3.0) -> Figure:
    """A matplotlib figure of memory over one generation, with the first token and the end marked.

    Built with ``matplotlib.figure.Figure`` directly (not pyplot), so no figure is left open in pyplot's registry.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    t = [s.t for s in timeline.samples]
    for name, values in timeline.series().items():
        ax.plot(t, [v / 1e6 for v in values], label=name, linewidth=1.5, marker="." if len(t) < 40 else None)
    ax.axvline(0.0, color="0.5", linestyle=":", linewidth=1, label="start")
    if timeline.first_token_s is not None:
        ax.axvline(timeline.first_token_s, color="tab:green", linestyle="--", linewidth=1, label="first token")
    ax.axvline(timeline.end_s, color="tab:red", linestyle="--", linewidth=1, label="end")
    ax.set_xlabel("seconds since the start of generation")
    ax.set_ylabel("MB")
    ax.set_title(_title(timeline), parse_math=False, fontsize=10, wrap=True)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _title(timeline: MemoryTimeline) -> str:
    name = safe.clean_chars(model_display_name(timeline.model_name or "model"))
    if len(name) > 60:
        name = "\u2026" + name[-59:]
    return f"Memory during one generation of {timeline.completion_tokens} tokens\n{name}"


def timeline_text(timeline: MemoryTimeline) -> str:
    """A plain-text summary of a timeline (for terminals)."""
    lines = [safe.clean_chars(_title(timeline))]
    for name, values in timeline.series().items():
        if values:
            lines.append(
                f"  {name}: {format_bytes(values[0])} at start, peak {format_bytes(max(values))}, "
                f"{format_bytes(values[-1])} at end"
            )
    first = "n/a" if timeline.first_token_s is None else f"{timeline.first_token_s:.2f} s"
    lines.append(f"  {len(timeline.samples)} samples; first token at {first}; end at {timeline.end_s:.2f} s")
    return "\n".join(lines)


def timeline_html(timeline: MemoryTimeline, png_base64: str, element_id: str | None = None) -> str:
    """The figure as an inline PNG, with the text summary as its alt text."""
    alt = safe.attr(timeline_text(timeline))
    body = f'<img src="data:image/png;base64,{png_base64}" alt="{alt}" style="max-width:100%;">'
    return _root(element_id, body, "timeline")
