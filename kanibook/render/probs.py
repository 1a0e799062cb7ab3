"""HTML for the probabilities views: tokens coloured by how sure the model was, with their alternatives on hover.

Data in, strings out (no model, no I/O); every piece of text goes through :mod:`kanibook.render.safe`. The colour
scale is sequential and its lightness falls with probability (pale: sure, dark: unsure), so it reads in grey and for
colour-blind readers too; a legend comes with every view. Hovering a token shows (``title``) its probability, rank,
entropy and the top alternatives, under the model's raw distribution and, when sampling changed it, under the
distribution actually sampled from. No script, no external resources.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from . import safe

__all__ = ["CSS", "BINS", "bin_of", "legend", "tokens_html", "tooltip", "least_confident_html", "reply_html",
           "scored_html"]  # fmt: skip

#: (lower bound of the probability, background, text colour, label): lightness falls monotonically
BINS: tuple[tuple[float, str, str, str], ...] = (
    (0.9, "#fff5eb", "#222", "≥ 90%"),
    (0.6, "#fdd0a2", "#222", "60–90%"),
    (0.3, "#fd8d3c", "#111", "30–60%"),
    (0.1, "#d94801", "#fff", "10–30%"),
    (0.0, "#7f2704", "#fff", "< 10%"),
)

# The look is on the elements (``style=``, through :func:`safe.css`), so a saved notebook opened untrusted (its
# <style> removed) keeps the colours; the <style> only adds the hover outline. GitHub keeps no style at all: there
# the tokens below 30% are bold (<b>), as are their legend chips, and the chips are <kbd> boxes apart.
CSS = ".kb-probs .kb-tok:hover{outline:2px solid #2471a3}"
#: the bins whose tokens are also bold, so an unstyled page still shows where the model was unsure
BOLD_BELOW = 3
_BOX = safe.css(font_family="system-ui, -apple-system, 'Segoe UI', sans-serif", font_size="13px", line_height="1.9",
                overflow_wrap="break-word")  # fmt: skip
_TOKS = safe.css(white_space="pre-wrap")
_LEGEND = safe.css(font_size="11px", margin="4px 0")
_NOTE_STYLE = safe.css(font_size="12px", opacity="0.85", margin="2px 0")
_SEG_H = safe.css(font_size="11px", opacity="0.8", margin_top="4px")
_TABLE = safe.css(border_collapse="collapse", font_size="12px", margin="4px 0")
_CELL = safe.css(padding="1px 8px", text_align="left", border_bottom="1px solid #8883")
_MONO = safe.css(padding="1px 8px", text_align="left", border_bottom="1px solid #8883",
                 font_family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace")  # fmt: skip
_TOKEN_STYLES = [
    (safe.css(background=bg, color=fg, border_radius="2px", padding="1px 0", cursor="help",
              box_shadow="inset 0 -1px #0002"),
     safe.css(background=bg, color=fg, border_radius="2px", padding="1px 0", cursor="help",
              box_shadow="inset 0 -1px #0002", border_bottom="1px dotted #555"))
    for _, bg, fg, _ in BINS
]  # fmt: skip
_CHIP_STYLES = [
    safe.css(display="inline-block", background=bg, color=fg, padding="0 6px", margin="0 2px 0 0",
             border="1px solid #8886", border_radius="2px", box_shadow="none", font_size="11px", line_height="1.6")
    for _, bg, fg, _ in BINS
]  # fmt: skip


def bin_of(prob: float) -> int:
    """The colour bin of a probability (0: the surest)."""
    for i, (low, *_rest) in enumerate(BINS):
        if prob >= low:
            return i
    return len(BINS) - 1


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%" if p >= 0.001 else f"{100 * p:.2g}%"


def _quoted(text: str) -> str:
    """A token's text for a tooltip or a table: whitespace made visible (no HTML escaping here)."""
    shown = "".join({" ": "\u00b7", "\n": "\u21b5", "\t": "\u2192"}.get(ch, ch) for ch in safe.clean_chars(text))
    return f"\u201c{shown}\u201d"


def _dist_lines(label: str, dist) -> list[str]:
    entropy = "" if math.isnan(dist.entropy) else f", entropy {dist.entropy:.2f} nats"
    lines = [f"{label}: {_pct(dist.prob)}, rank {dist.rank + 1}{entropy}"]
    lines += [f"  {_quoted(a.text)}  {_pct(a.prob)}" for a in dist.top]
    return lines


def tooltip(token) -> str:
    """The hover text of a token (plain text; escaped by the caller with :func:`safe.attr`)."""
    known = f" (id {token.token_id})" if token.token_id >= 0 else ""
    lines = [f"#{token.index} {_quoted(token.text)}{known}"]
    lines += _dist_lines("model", token.raw)
    if token.sampled is not None:
        lines += _dist_lines("sampled from", token.sampled)
    return "\n".join(lines)


def tokens_html(tokens: Iterable) -> str:
    """The tokens as coloured spans (classes ``kb-tok kb-p<bin> kb-t<index>``), each with its tooltip."""
    out = []
    for t in tokens:
        b = bin_of(t.raw.prob)
        classes = f"kb-tok kb-p{b}" + (" kb-smp" if t.sampled is not None else "")
        text = safe.text(t.text) if t.text else "\u200b"
        if b >= BOLD_BELOW:
            text = f"<b>{text}</b>"
        style = _TOKEN_STYLES[b][t.sampled is not None]
        out.append(f'<span class="{classes} kb-t{int(t.index)}" style="{style}" title="{safe.attr(tooltip(t))}">'
                   f"{text}</span>")  # fmt: skip
    return "".join(out)


def legend(sampled: bool = False) -> str:
    """The colour scale's legend."""
    chips = " ".join(
        f'<kbd class="kb-p{i}" style="{_CHIP_STYLES[i]}">{_bold(i, safe.text(label))}</kbd>'
        for i, (*_, label) in enumerate(BINS)
    )
    extra = " · dotted underline: sampled from a reshaped distribution" if sampled else ""
    return f'<div class="kb-plegend" style="{_LEGEND}">probability of the chosen token: {chips}{safe.text(extra)}</div>'


def _bold(i: int, html: str) -> str:
    return f"<b>{html}</b>" if i >= BOLD_BELOW else html


def least_confident_html(tokens: Sequence) -> str:
    """A small table of the least confident tokens and what the model preferred there."""
    if not tokens:
        return ""
    rows = []
    for t in tokens:
        best = t.best_other
        pref = f"{_quoted(best.text)} {_pct(best.prob)}" if best else ""
        rows.append(
            f"<tr><td style='{_CELL}'>{int(t.index)}</td><td class='kb-mono' style='{_MONO}'>"
            f"{safe.text(_quoted(t.text))}</td><td style='{_CELL}'>{safe.text(_pct(t.raw.prob))}</td>"
            f"<td class='kb-mono' style='{_MONO}'>{safe.text(pref)}</td></tr>"
        )
    head = "".join(f"<th style='{_CELL}'>{h}</th>" for h in ("#", "token", "p", "best other"))
    return (f"<table class='kb-least' style='{_TABLE}'><caption>least confident</caption><tr>{head}</tr>"
            f"{''.join(rows)}</table>")  # fmt: skip


def _note(note: str | None) -> str:
    return f'<div class="kb-pnote" style="{_NOTE_STYLE}">{safe.text(note)}</div>' if note else ""


def reply_html(probs, *, title: str = "Reply", least: int = 5, streaming: bool = False) -> str:
    """A reply's tokens coloured by probability, the legend and the least-confident tokens.

    :param probs: A :class:`~kanibook.probs.record.ReplyProbs`.
    :param title: The heading.
    :param least: How many least-confident tokens to list (0: none).
    :param streaming: True while the reply is still arriving (no table yet).
    """
    tokens = list(probs.tokens)
    sampled = any(t.sampled is not None for t in tokens)
    head = f"<b>{safe.text(title)}</b> · {len(tokens)} tokens"
    if tokens and not streaming:
        mean = sum(t.raw.prob for t in tokens) / len(tokens)
        head += f" · mean p {safe.text(_pct(mean))}"
    table = "" if streaming or not least else least_confident_html(probs.least_confident(least))
    return (
        f"<div class='kb-probs' style='{_BOX}'><style>{CSS}</style><div>{head}</div>{_note(probs.note)}"
        f"<div class='kb-ptoks' style='{_TOKS}'>{tokens_html(tokens)}</div>{legend(sampled)}{table}</div>"
    )


def scored_html(groups: Sequence[tuple[str, str, Sequence]], *, title: str, note: str | None = None,
                least: Sequence = ()) -> str:  # fmt: skip
    """Teacher-forced scores shown over a prompt's message segments.

    :param groups: ``(role, label, tokens)`` for each segment.
    :param title: The heading.
    :param note: A one-line remark.
    :param least: The least-confident tokens to list.
    """
    parts = []
    for role, label, tokens in groups:
        parts.append(
            f"<div class='kb-pseg-h' style='{_SEG_H}'>{safe.text(role)} · {safe.text(label)}</div>"
            f"<div class='kb-ptoks' style='{_TOKS}'>{tokens_html(tokens)}</div>"
        )
    return (
        f"<div class='kb-probs' style='{_BOX}'><style>{CSS}</style><div><b>{safe.text(title)}</b></div>{_note(note)}"

        f"{''.join(parts)}{legend()}{least_confident_html(least)}</div>"
    )
