"""The quantization lab's report as HTML and text (pure functions of the report), and its matplotlib figure.

Every string from outside (labels, reasons, tokens, answers, the model's name, the machine) goes through
:mod:`kanibook.render.safe`. In the table the best value of each column is marked (bold, ``*`` in text): the
smallest cost, the highest speed, and for quality the setting closest to the reference (the reference itself, which
is the yardstick, is not a candidate).
"""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING, Any

from .._names import model_display_name
from . import safe
from .memory import format_bytes
from .plot_labels import label_offsets

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..quant.report import QuantReport

__all__ = ["flip_text", "report_figure", "report_html", "report_text", "COLUMNS", "TIMED"]

# inline styles only, through safe.css: they survive an untrusted notebook's sanitizer (position:sticky does not,
# hence a narrow first table and the rest in tables of their own, each starting with the setting)
_BOX = safe.css(font_family="system-ui, -apple-system, 'Segoe UI', sans-serif", font_size="13px", line_height="1.4",
                max_width="100%", overflow_x="auto")  # fmt: skip
_CELL = safe.css(padding="2px 8px", text_align="right", white_space="nowrap", border_bottom="1px solid #80808040")
_LEFT = safe.css(padding="2px 8px", text_align="left", white_space="nowrap", border_bottom="1px solid #80808040")
_TH = safe.css(padding="2px 8px", text_align="right", white_space="normal", border_bottom="1px solid #80808040",
               vertical_align="bottom")  # fmt: skip
_WRAP = safe.css(padding="2px 8px", text_align="left", white_space="pre-wrap", border_bottom="1px solid #80808040")
_MUTED = safe.css(opacity="0.7")
_SMALL = safe.css(font_size="smaller", opacity="0.7")
_HEADING = safe.css(font_weight="600", margin_top="8px")
_STRIP = safe.css(white_space="pre-wrap", overflow_wrap="break-word", word_break="break-all", font_size="12px",
                  line_height="1.7", font_family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace")  # fmt: skip


def _mb(v):
    return format_bytes(v)


def _f(digits):
    return lambda v: f"{v:.{digits}f}"


def _g(v):
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


# (key, header, format, best, group, error key); best: "min", "max", "one" (closest to 1), "zero" (closest to 0)
COLUMNS: tuple[tuple[str, str, Any, str | None, str, str | None], ...] = (
    ("weights_bytes", "weights", _mb, "min", "cost", None),
    ("weights_estimate_bytes", "estimate", _mb, None, "cost", None),
    ("peak_rise_bytes", "peak rise", _mb, None, "cost", None),
    ("peak_added_bytes", "peak added", _mb, None, "cost", None),
    ("peak_memory_bytes", "peak (process)", _mb, None, "cost", None),
    ("load_s", "load s", _f(1), "min", "cost", None),
    ("ttft_s", "first token s", _f(2), "min", "cost", None),
    ("decode_tok_s", "tokens/s", _f(1), "max", "cost", None),
    ("ppl", "PPL", _f(3), None, "quality", None),
    ("ppl_ratio", "PPL ratio", _f(4), "one", "quality", None),
    ("kld_mean", "KL mean", _g, "min", "quality", "kld_err"),
    ("kld_median", "KL median", _g, "min", "quality", None),
    ("kld_p90", "KL p90", _g, "min", "quality", None),
    ("kld_p95", "KL p95", _g, "min", "quality", None),
    ("kld_p99", "KL p99", _g, "min", "quality", None),
    ("kld_max", "KL max", _g, "min", "quality", None),
    ("same_top_pct", "same top %", _f(1), "max", "quality", None),
    ("delta_p_mean_pct", "Δp mean %", _f(3), "zero", "quality", "delta_p_err_pct"),
    ("delta_p_rms_pct", "Δp RMS %", _f(3), "min", "quality", None),
    ("flips", "top flips", str, "min", "quality", None),
)


#: Columns measured with a clock or from the process's memory: they differ from run to run (a CSS class marks them).
TIMED = frozenset({"peak_memory_bytes", "peak_rise_bytes", "peak_added_bytes", "load_s", "ttft_s", "decode_tok_s"})

#: The HTML report's first table: the most-read columns, in this order; the rest follow in the tables of _MORE
MAIN = ("weights_bytes", "kld_mean", "same_top_pct", "ppl_ratio", "decode_tok_s", "peak_rise_bytes")
_MORE = (
    ("cost", ("weights_estimate_bytes", "peak_added_bytes", "peak_memory_bytes", "load_s", "ttft_s")),
    ("spread of the KL divergence", ("kld_median", "kld_p90", "kld_p95", "kld_p99", "kld_max")),
    ("more quality", ("ppl", "delta_p_mean_pct", "delta_p_rms_pct", "flips")),
)
_BY_KEY = {c[0]: c for c in COLUMNS}


def _rows(report: QuantReport) -> list[dict]:
    """The rows with ``peak_rise_bytes``: the peak reading minus the reading before the first load."""
    start = report.start_memory_bytes
    out = []
    for r in report.rows:
        peak = _num(r.get("peak_memory_bytes"))
        out.append({**r, "peak_rise_bytes": None if peak is None or start is None else max(0, peak - start)})
    return out


def _best(report: QuantReport) -> dict[str, set[str]]:
    """Per column, the labels holding its best value."""
    best: dict[str, set[str]] = {}
    for key, _, _, rule, group, _ in COLUMNS:
        if rule is None:
            continue
        candidates = [r for r in _rows(report) if r.get("available") and _num(r.get(key)) is not None
                      and not (group == "quality" and r.get("reference"))]  # fmt: skip
        if not candidates:
            continue
        score = {
            "min": lambda v: v, "max": lambda v: -v, "one": lambda v: abs(v - 1.0), "zero": lambda v: abs(v),
        }[rule]  # fmt: skip
        top = min(score(r[key]) for r in candidates)
        best[key] = {r["label"] for r in candidates if math.isclose(score(r[key]), top, rel_tol=1e-9, abs_tol=1e-12)}
    return best


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _cell_text(row: dict, key: str, fmt, err_key: str | None) -> str:
    v = _num(row.get(key))
    if v is None:
        return "n/a"
    text = fmt(v)
    if err_key and _num(row.get(err_key)) is not None:
        text += f" ± {_g(row[err_key])}"
    return text


def _title(report: QuantReport) -> str:
    return f"Quantization lab: {model_display_name(report.model)} on {report.device}"


def _machine_line(report: QuantReport) -> str:
    m = report.machine or {}
    where = m.get("gpu") if m.get("device") == "GPU" else f"{m.get('processor', '?')}, {m.get('cores', '?')} cores"
    bnb = m.get("bitsandbytes") or "not installed"
    total = f"; the whole comparison took {report.total_s:.0f} s" if report.total_s is not None else ""
    speed = ""
    if report.repeats:
        counts = sorted({r["speed_answers"] for r in report.rows if r.get("speed_answers")})
        n = "/".join(map(str, counts)) or "?"
        speed = (f" Speed: medians over {n} answers per setting (each prompt answered {report.repeats} times after a "
                 "warm-up); peak added: the peak while answering minus the memory just before that setting loaded.")
    dtypes = ", ".join(f"{r['label']} {r['compute_dtype']}" for r in report.rows if r.get("compute_dtype"))
    dtypes = f" Computed in: {dtypes}." if dtypes else ""
    return (f"Measured on {m.get('device', '?')} ({where}); torch {m.get('torch', '?')}, transformers "
            f"{m.get('transformers', '?')}, bitsandbytes {bnb}{total}.{speed}{dtypes}")  # fmt: skip


def _release_line(report: QuantReport) -> str:
    """Memory before the first load and after each setting was released (process RSS on a CPU, CUDA on a GPU)."""
    after = [(r["label"], r.get("memory_after_release_bytes")) for r in report.rows]
    if report.start_memory_bytes is None or not any(b is not None for _, b in after):
        return ""
    kind = "CUDA allocated" if str(report.device).startswith("cuda") else "process RSS"
    shown = ", ".join(f"{label} {format_bytes(b)}" for label, b in after if b is not None)
    return (f"Memory after each release ({kind}): {format_bytes(report.start_memory_bytes)} before the first load; "
            f"after {shown}.")  # fmt: skip


def flip_text(flip: dict) -> str:
    """One flip from :meth:`kanibook.QuantReport.flip_details` as text: ``' a'→' the'``; when the two tokens read
    the same, their ids and the probability of each under both sides (``' it' #357→' it' #282 (one text, two ids;
    #357/#282: reference 30%/29%, here 29%/29%)``: two different tokens, and here a near tie)."""
    if not flip["same_text"]:
        return f"{flip['ref_text']!r}→{flip['text']!r}"

    def pct(p):
        return "?" if p is None else f"{100 * p:.1f}%"

    return (f"{flip['ref_text']!r} #{flip['ref_id']}→{flip['text']!r} #{flip['id']} (one text, two ids; "
            f"#{flip['ref_id']}/#{flip['id']}: reference {pct(flip['ref_p'])}/{pct(flip['ref_p_of_other'])}, "
            f"here {pct(flip['p_of_ref'])}/{pct(flip['p'])})")  # fmt: skip


# ---- text ------------------------------------------------------------------------------------------------------------


def report_text(report: QuantReport) -> str:
    """The report as plain text: the tables (cost, then quality), the top-token flips and the answers."""
    best = _best(report)
    lines = [safe.clean_chars(_title(report)), safe.clean_chars(_machine_line(report))]
    if _release_line(report):
        lines.append(safe.clean_chars(_release_line(report)))
    for group in ("cost", "quality"):
        cols = [c for c in COLUMNS if c[4] == group]
        header = ["setting", *(c[1] for c in cols)]
        body = []
        for r in _rows(report):
            label = safe.clean_chars(r["label"]) + (" (ref)" if r.get("reference") else "")
            if not r.get("available"):
                body.append([label, f"unavailable: {safe.clean_chars(r.get('reason') or '?')}"])
                continue
            body.append([label, *(_cell_text(r, k, fmt, ek) + ("*" if r["label"] in best.get(k, ()) else "")
                                  for k, _, fmt, _, _, ek in cols)])  # fmt: skip
        widths = [max(len(row[i]) for row in [header, *body] if len(row) > i and len(row) == len(header))
                  for i in range(len(header))]  # fmt: skip
        lines.append("")
        lines.append(f"{group} (* best):")
        lines.append("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
        for row in body:
            if len(row) != len(header):
                lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
            else:
                lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    for r in report.rows:
        flips = report.flip_details(r["label"]) if not r.get("reference") else []
        if flips:
            shown = ", ".join(f"{f['position']}: {safe.clean_chars(flip_text(f))}" for f in flips[:8])
            more = f" (+{len(flips) - 8} more)" if len(flips) > 8 else ""
            lines.append(f"top-token flips under {safe.clean_chars(r['label'])}: {shown}{more}")
    for entry in report.answers:
        lines.append("")
        lines.append(f"Q: {safe.clean_chars(entry['prompt'])}")
        for label, a in entry["answers"].items():
            mark = "" if a["diverges_at"] is None else f"  [differs from token {a['diverges_at']}]"
            lines.append(f"  {safe.clean_chars(label)}: {safe.clean_chars(a['text'])!r}{mark}")
    return "\n".join(lines)


# ---- HTML ------------------------------------------------------------------------------------------------------------


def report_html(report: QuantReport, *, plots: bool = True) -> str:
    """The report as HTML: table, plots (inline PNG), where the model changes its mind, and the answers."""
    parts = [f'<div class="kb-quant" style="{_BOX}">',
             f"<div style='font-weight:600'>{safe.text(_title(report))}</div>",
             f"<div class='kb-quant-machine' style='{_MUTED}'>{safe.text(_machine_line(report))}</div>",
             f"<div class='kb-quant-release' style='{_MUTED}'>{safe.text(_release_line(report))}</div>",
             _table_html(report)]  # fmt: skip
    if plots and any(r.get("available") for r in report.rows):
        png = _png_base64(report_figure(report))
        alt = safe.attr("Weights vs KL divergence and vs decode speed, one point per setting")
        parts.append(f'<img src="data:image/png;base64,{png}" alt="{alt}" style="{safe.css(max_width="100%")}">')
    parts.append(_strips_html(report))
    parts.append(_answers_html(report))
    parts.append("</div>")
    return "".join(parts)


def _one_table(report: QuantReport, keys: tuple[str, ...], cls: str, *, unavailable: bool) -> str:
    """A table of ``keys`` with the setting first; unavailable settings get one row saying why (first table only)."""
    best, cols = _best(report), [_BY_KEY[k] for k in keys]
    start = report.start_memory_bytes
    titles = {"peak_rise_bytes": f"highest memory reading while the setting ran, minus the "
                                 f"{format_bytes(start) if start is not None else '?'} held before the first load",
              "peak_memory_bytes": "highest memory reading of the whole process while the setting ran (includes "
                                   "whatever else the process holds)"}  # fmt: skip
    head = "".join(f'<th style="{_TH}" title="{safe.attr(titles.get(k, ""))}">{safe.text(h)}</th>'
                   for k, h, *_ in cols)  # fmt: skip
    rows = []
    for r in _rows(report):
        title = safe.attr(r.get("description") or "")
        label = safe.text(r["label"]) + (" <em>(reference)</em>" if r.get("reference") else "")
        first = f'<td style="{_LEFT}" title="{title}">{label}</td>'
        if not r.get("available"):
            if unavailable:
                reason = safe.text(r.get("reason") or "could not run")
                rows.append(f'<tr class="kb-quant-unavailable">{first}<td colspan="{len(cols)}" style="{_WRAP}">'
                            f'<span style="{_MUTED}">unavailable: {reason}</span></td></tr>')  # fmt: skip
            continue
        cells = []
        for key, _, fmt, _, _, err_key in cols:
            text = safe.text(_cell_text(r, key, fmt, err_key))
            if r["label"] in best.get(key, ()):
                text = f'<strong class="kb-best">{text}</strong>'
            timed = ' class="kb-quant-timed"' if key in TIMED else ""
            cells.append(f'<td{timed} style="{_CELL}">{text}</td>')
        rows.append(f"<tr>{first}{''.join(cells)}</tr>")
    table = safe.css(border_collapse="collapse", margin="6px 0")
    return (f'<div style="{safe.css(max_width="100%", overflow_x="auto")}"><table class="{cls}" style="{table}">'
            f'<thead><tr><th style="{_LEFT}">setting</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            "</div>")  # fmt: skip


def _table_html(report: QuantReport) -> str:
    """The most-read columns in one narrow table, the others in small tables behind a toggle (each starts with the
    setting, so no scrolling ever hides it)."""
    start = report.start_memory_bytes
    rise = (f"Peak rise: the highest memory reading while a setting ran minus the {format_bytes(start)} the process "
            "held before the first load (not ranked: it also counts whatever else the process allocated). "
            if start is not None else "")  # fmt: skip
    note = (f"<div style='{_SMALL}'>Bold: the best of each column (quality: closest to the reference). KL: divergence"
            " of the next-token distribution from the reference's, in nats, over the reference text; Δp: change in "
            f"the probability of the actual next token, in percentage points. {safe.text(rise)}</div>")  # fmt: skip
    more = "".join(f"<div style='{_MUTED}'>{safe.text(title)}</div>"
                   f"{_one_table(report, keys, 'kb-quant-table-more', unavailable=False)}"
                   for title, keys in _MORE)  # fmt: skip
    return (f"{_one_table(report, MAIN, 'kb-quant-table', unavailable=True)}{note}<details class='kb-quant-more'>"
            f"<summary>more columns: cost, spread of the KL divergence, more quality</summary>{more}</details>")


def _kl_scale(values: list[float]) -> tuple[float, float]:
    """The colour scale's ends: the 5th and 95th percentiles of the positive KL values shown (log scale between), so
    the colours spread over the values at hand whatever the quantization did."""
    pos = sorted(v for v in values if v > 1e-12 and math.isfinite(v))
    if not pos:
        return 1e-4, 1.0
    lo, hi = pos[int(0.05 * (len(pos) - 1))], pos[int(0.95 * (len(pos) - 1))]
    return (lo, hi) if hi > lo * 1.001 else (lo / 10, lo * 10)


def _kl_level(kl: float, lo: float = 1e-4, hi: float = 1.0) -> float:
    """0 for KL <= ``lo``, 1 for KL >= ``hi``, logarithmic between."""
    if not kl > lo:
        return 0.0
    return max(0.0, min(1.0, math.log10(kl / lo) / math.log10(hi / lo)))


def _kl_colour(level: float) -> str:
    return f"rgba(220,40,40,{level:.2f})"


def _tops(top: list) -> str:
    return ", ".join(f"{safe.clean_chars(t)!r} {100 * p:.0f}%" for t, p, *_ in top[:2])


#: The strips' colour steps: fine enough that no eye tells the step, coarse enough that runs of one colour share a span
_LEVELS = 50


def _strips_html(report: QuantReport) -> str:
    """Per setting, the reference text's tokens coloured by KL (runs of one colour in one span); hover a flipped
    token for both distributions' top two."""
    ref_label = report.reference["label"]
    ref = report.positions.get(ref_label)
    if not ref or not report.tokens:
        return ""
    shown = [kl for r in report.rows if not r.get("reference")
             for kl in report.positions.get(r["label"], {}).get("kl", [])]  # fmt: skip
    lo, hi = _kl_scale(shown)
    chips = " ".join(f"<span style='{safe.css(background=_kl_colour(lv), padding='0 6px', border='1px solid #8886')}'>"
                     f"{safe.text(_g(lo * (hi / lo) ** lv))}</span>" for lv in (0.0, 0.25, 0.5, 0.75, 1.0))  # fmt: skip
    out = [f"<div style='{_HEADING}'>Where the distributions differ</div>",
           f"<div style='{_SMALL}'>Each token of the reference text, coloured by the KL divergence of the prediction "
           f"<em>of</em> that token, on a log scale spread over the values shown: white at or below {_g(lo)} nats "
           f"(their 5th percentile), deep red at or above {_g(hi)} nats (their 95th): {chips} nats. Underlined: the "
           "most probable token flips. Hover for both distributions' top tokens.</div>"]  # fmt: skip
    for r in report.rows:
        pos = report.positions.get(r["label"])
        if r.get("reference") or not pos:
            continue
        flipped = {p for p, _, _ in pos["flips"]}
        parts, run, run_level = [safe.visible(report.tokens[0])], [], 0

        def close_run():
            # a run of one colour shares one span, so that a saved report stays small
            if run:
                text = "<wbr>".join(run)
                colour = safe.css(background=_kl_colour(run_level / _LEVELS))
                parts.append(f"<span style='{colour}'>{text}</span>" if run_level else text)
                run.clear()

        for j, kl in enumerate(pos["kl"]):
            token = safe.visible(report.tokens[j + 1] if j + 1 < len(report.tokens) else "")
            level = round(_LEVELS * _kl_level(kl, lo, hi))
            if j in flipped:
                close_run()
                tip = (f"position {j + 1} · KL {kl:.4g}\n{ref_label}: {_tops(ref['top'][j])}\n"
                       f"{r['label']}: {_tops(pos['top'][j])}")  # fmt: skip
                style = safe.css(background=_kl_colour(level / _LEVELS), text_decoration="underline")
                parts.append(f'<span class="kb-quant-tok" style="{style}" title="{safe.attr(tip)}">{token}</span>')
                continue
            if level != run_level:
                close_run()
                run_level = level
            run.append(token)
        close_run()
        flips = report.flip_details(r["label"])
        flip_list = "; ".join(f"{f['position']}: {safe.text(flip_text(f))}" for f in flips)
        summary = f"{safe.text(r['label'])}: mean KL {_g(r['kld_mean'])}, {len(flips)} top-token flips"
        out.append(f"<details class='kb-quant-strip'><summary>{summary}</summary><div class='kb-quant-toks' "
                   f"style='{_STRIP}'>{'<wbr>'.join(parts)}</div><div style='{_SMALL}'>Top token flips (position: "
                   f"reference → {safe.text(r['label'])}): {flip_list or 'none'}</div></details>")  # fmt: skip
    return "".join(out)


def _answers_html(report: QuantReport) -> str:
    if not report.answers:
        return ""
    out = [f"<div style='{_HEADING}'>Answers (greedy), side by side</div>"]
    for entry in report.answers:
        rows = []
        for label, a in entry["answers"].items():
            same, first, rest = a["parts"]
            body = safe.text(same)
            if first or rest:
                body += (f'<mark class="kb-diverge" title="first token that differs from the reference\'s">'
                         f"{safe.visible(first) or '∅'}</mark><span style='{_MUTED}'>{safe.text(rest)}</span>")
            where = "same as the reference" if a["diverges_at"] is None else f"differs from token {a['diverges_at']}"
            rows.append(f'<tr><td style="{_LEFT}">{safe.text(label)}</td><td style="{_WRAP}">{body}</td>'
                        f'<td style="{_LEFT}"><span style="{_MUTED}">{safe.text(where)}</span></td></tr>')  # fmt: skip
        out.append(f"<div style='{safe.css(margin_top='4px')}'><em>{safe.text(entry['prompt'])}</em></div>"
                   f"<table style='{safe.css(border_collapse='collapse')}'>{''.join(rows)}</table>")  # fmt: skip

    return "".join(out)


# ---- the figure ------------------------------------------------------------------------------------------------------


def report_figure(report: QuantReport, *, width: float = 9.0, height: float = 3.4) -> Figure:
    """Weights (MB) against mean KL divergence (quality) and against decode speed, one point per setting.

    Built with ``matplotlib.figure.Figure`` directly (not pyplot), so no figure is left open in pyplot's registry.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    quality, speed = fig.subplots(1, 2)
    rows = [r for r in report.rows if r.get("available") and r.get("weights_bytes")]
    for ax, key, ylabel in ((quality, "kld_mean", "mean KL divergence (nats), lower is better"),
                            (speed, "decode_tok_s", "decode tokens/s, higher is better")):  # fmt: skip
        points = []
        for r in rows:
            y = _num(r.get(key))
            if y is None:
                continue
            x = r["weights_bytes"] / 1e6
            ax.scatter([x], [y], s=36, zorder=3, marker="*" if r.get("reference") else "o")
            points.append((safe.clean_chars(r["label"]), x, y))
        ax.margins(x=0.12, y=0.15)  # room for the labels at the edges
        for (label, x, y), offset in zip(points, label_offsets(ax, points, width * 72 / 2, height * 72)):
            leader = None if offset == (4, 4) else {"arrowstyle": "-", "lw": 0.5, "alpha": 0.5}
            ax.annotate(label, (x, y), textcoords="offset points", xytext=offset, fontsize=8, arrowprops=leader)
        ax.set_xlabel("weights (MB)")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
    quality.set_title("memory vs quality", fontsize=10)
    speed.set_title("memory vs speed", fontsize=10)
    return fig


def _png_base64(fig) -> str:

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
