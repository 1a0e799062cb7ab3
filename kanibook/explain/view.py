"""HTML and text for :class:`~kanibook.explain.occlude.Explanation`: data in, strings out.

A bar per part of the prompt (its drop of the reply's log-probability), in the prompt view's order and role colours;
the reply's tokens coloured by the part they rest on most (hover: the drop per part); the token detail of one message
with each token shaded by the drop its window causes. Styles sit on the elements themselves (no ``<style>`` block,
no script), so the view reads the same in an untrusted notebook, on GitHub or in nbviewer. Every text goes through
:mod:`kanibook.render.safe`.
"""

from __future__ import annotations

import math

from ..render import safe

__all__ = ["explanation_html", "explanation_text", "PALETTE"]

#: Categorical colours for the parts (message k gets PALETTE[k % len]); the template is grey.
PALETTE = ("#2471a3", "#8e44ad", "#1e8449", "#ca6f1e", "#c0392b", "#17a589", "#b7950b", "#5d6d7e")
TEMPLATE_COLOUR = "#888888"
_BOX = ("font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;line-height:1.6;max-width:100%;"
        "overflow-wrap:anywhere")  # fmt: skip
_MONO = "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px"
_NUM = "padding:1px 8px;text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap"
_TOKEN = f"{_MONO};white-space:pre-wrap;border-radius:3px;padding:0 1px;margin:0 1px 0 0;line-height:1.9;cursor:help"


def colour_of(part) -> str:
    return TEMPLATE_COLOUR if part.message_index is None else PALETTE[part.message_index % len(PALETTE)]


def _nats(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.2f}"


def _bars(explanation) -> str:
    parts = explanation.parts
    scale = max((abs(p.drop) for p in parts if not math.isnan(p.drop)), default=0.0) or 1.0
    rows = []
    for p in parts:
        colour = colour_of(p)
        if math.isnan(p.drop):
            bar = f'<span style="opacity:.75">{safe.text(p.note or "not measured")}</span>'
        else:
            width = 100 * abs(p.drop) / scale
            fill = colour if p.drop >= 0 else "transparent"
            border = f"1px solid {colour}" if p.drop < 0 else "none"
            bar = (f'<span style="display:inline-block;height:10px;width:{width:.1f}%;min-width:1px;background:{fill};'
                   f'border:{border};vertical-align:middle;border-radius:2px"></span>')  # fmt: skip
        preview = p.preview if len(p.preview) <= 60 else p.preview[:59] + "\u2026"
        rows.append(
            f'<tr class="kb-why-part"><td style="padding:1px 8px;text-align:left;white-space:nowrap;'
            f'border-left:4px solid {colour}">'
            f"<b>{safe.text(p.label)}</b></td>"
            f'<td style="padding:1px 8px;text-align:left;opacity:.8;min-width:7em;overflow-wrap:break-word;{_MONO}">'
            f"{safe.text(preview)}</td>"
            f'<td style="{_NUM}">{p.tokens}</td><td style="{_NUM}">{_nats(p.drop)}</td>'
            f'<td style="padding:1px 8px;width:25%;min-width:40px">{bar}</td></tr>'
        )
    head = "".join(f'<th style="padding:1px 8px;text-align:left;font-weight:600;overflow-wrap:normal">{h}</th>'
                   for h in ("part", "text", "tokens", "drop (nats)", ""))  # fmt: skip
    return (f'<table class="kb-why-bars" style="border-collapse:collapse;font-size:12px;margin:4px 0">'
            f"<tr>{head}</tr>{''.join(rows)}</table>")  # fmt: skip


def _hover(explanation, j: int) -> str:
    lines = [f"log p {explanation.logprobs[j]:.3f} (p {math.exp(explanation.logprobs[j]):.1%})",
             "drop without each part:"]  # fmt: skip
    for p in explanation.parts:
        if p.drops:
            lines.append(f"  {p.label}: {p.drops[j]:+.3f}")
    return "\n".join(lines)


def _reply_tokens(explanation) -> str:
    spans = []
    for j, (text, part) in enumerate(zip(explanation.reply_texts, explanation.rests_on())):
        if part is None:
            style = f"{_TOKEN};border:1px solid #8886"
        else:
            style = f"{_TOKEN};border:1px solid {colour_of(part)};background:{colour_of(part)}33"
        title = _hover(explanation, j) + (f"\nrests most on {part.label}" if part else "")
        spans.append(f'<span class="kb-why-tok" style="{style}" title="{safe.attr(title)}">{safe.visible(text)}</span>')
    return f'<div class="kb-why-reply" style="margin:4px 0">{"".join(spans)}</div>'


def _legend(explanation) -> str:
    chips = [
        f'<span style="display:inline-block;padding:0 6px;margin-right:4px;border:1px solid {colour_of(p)};'
        f'background:{colour_of(p)}33">{safe.text(p.label)}</span>'
        for p in explanation.parts if p.drops
    ]  # fmt: skip
    chips.append('<span style="display:inline-block;padding:0 6px;border:1px solid #8886">no part &ge; 0.05</span>')
    return f'<div style="font-size:11px;margin:2px 0">{"".join(chips)}</div>'


def _shade(drop: float, scale: float) -> str:
    """A diverging shade: orange where taking the tokens out lowers the reply, blue where it raises it."""
    alpha = min(1.0, abs(drop) / scale) if scale > 0 else 0.0
    rgb = "217,72,1" if drop >= 0 else "36,113,163"
    return f"rgba({rgb},{0.08 + 0.8 * alpha:.2f})"


def _detail_html(detail) -> str:
    scale = max((abs(d) for d in detail.drops), default=0.0)
    spans = [
        f'<span class="kb-why-dtok" style="{_TOKEN};border:1px solid #8886;background:{_shade(d, scale)}" '
        f'title="{safe.attr(f"#{p} drop {d:+.3f} nats (window of {detail.window})")}">{safe.visible(t)}</span>'
        for p, t, d in zip(detail.positions, detail.texts, detail.drops)
    ]  # fmt: skip
    return (
        f'<div class="kb-why-detail" style="margin:6px 0;padding:2px 6px;border-left:3px solid #d94801">'
        f'<div style="font-size:11px;opacity:.85">By token inside <b>{safe.text(detail.label)}</b>: '
        f"{len(detail.positions)} tokens in windows of {detail.window}, {detail.passes} forward passes (budget "
        f"{detail.budget}); darker orange: the reply loses more without them, blue: it gains</div>"
        f'<div style="margin:2px 0">{"".join(spans)}</div></div>'
    )


def explanation_html(explanation) -> str:
    n = len(explanation.logprobs)
    title = (f"What the reply rests on \u00b7 {n} reply tokens \u00b7 log p {explanation.logprob:.2f} \u00b7 drop of "
             "its log-probability without each part of the prompt")  # fmt: skip
    detail = _detail_html(explanation.detail) if explanation.detail is not None else ""
    return (
        f'<div class="kb-why" style="{_BOX}"><div style="font-weight:600;margin:2px 0">{safe.text(title)}</div>'
        f"{_bars(explanation)}"
        f'<div style="font-size:11px;opacity:.85">The reply, each token coloured by the part it rests on most '
        f"(hover: the drop per part)</div>{_legend(explanation)}{_reply_tokens(explanation)}{detail}</div>"
    )


def explanation_text(explanation) -> str:
    lines = [f"What the reply rests on · {len(explanation.logprobs)} reply tokens · log p {explanation.logprob:.2f}",
             "drop of the reply's log-probability without each part (nats):"]  # fmt: skip
    for p in explanation.parts:
        extra = f"  ({safe.clean_chars(p.note)})" if p.note else ""
        lines.append(f"  {safe.clean_chars(p.label):<14} {_nats(p.drop):>8}  {p.tokens:>4} tokens{extra}")
    rests = explanation.rests_on()
    lines.append("reply tokens [part they rest on most]:")
    lines.append("".join(safe.clean_chars(t) + (f"[{safe.clean_chars(p.label)}]" if p else "")
                         for t, p in zip(explanation.reply_texts, rests)))  # fmt: skip
    d = explanation.detail
    if d is not None:
        lines.append(f"by token inside {d.label} (windows of {d.window}, {d.passes} passes):")
        top = sorted(zip(d.drops, d.texts), key=lambda x: -x[0])[:5]
        lines += [f"  {safe.clean_chars(t)!r}: {drop:+.3f}" for drop, t in top]
    return "\n".join(lines)
