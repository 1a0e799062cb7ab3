"""HTML and text for the prompt view and the prompt comparison: data in, strings out (no model, no I/O).

Every piece of text goes through :mod:`kanibook.render.safe`. The HTML is self-contained and styled on its elements,
so it reads the same in an untrusted notebook and on GitHub; no script, no external resources; hovering a token shows
its position, id and text (``title``).
"""

from __future__ import annotations

import json

from . import safe

__all__ = ["prompt_html", "prompt_text", "comparison_html", "comparison_text", "CSS"]

_SPECIAL, _TEMPLATE = 1, 2
_ROLES = {"system", "user", "assistant", "function", "template"}

# Every look is on the elements themselves (``style=``, through :func:`safe.css`), so a saved notebook opened
# untrusted (JupyterLab, Notebook 7, VS Code: <style> removed) reads the same. Tokens are <kbd> boxes, special tokens
# bold (<b>), removed/added tokens <del>/<ins>: GitHub's sanitizer, which drops every style, keeps those. The small
# <style> only adds what inline styles cannot say (hover outlines, the disclosure marker of a collapsed run).
CSS = """
.kb-tokens .kb-b kbd:hover{outline:2px solid #888}
.kb-tokens details.kb-run>summary::-webkit-details-marker{display:none}
"""

_ROLE_COLOURS = {
    "system": ("#8e44ad", "#8e44ad0d"), "user": ("#2471a3", "#2471a30d"), "assistant": ("#1e8449", "#1e84490d"),
    "function": ("#ca6f1e", "#ca6f1e0d"), "template": ("#888888", "#88888811"),
}  # fmt: skip
_BOX = safe.css(font_family="system-ui, -apple-system, 'Segoe UI', sans-serif", font_size="13px", line_height="1.55",
                max_width="100%", overflow_wrap="break-word")  # fmt: skip
_HEAD = safe.css(margin="2px 0 4px")
_LEGEND = safe.css(font_size="11px", opacity="0.8")
_NOTE = safe.css(margin="4px 0", padding="3px 6px", border_left="3px solid #c0392b", background="#c0392b14")
_BAR = safe.css(display="flex", height="12px", border="1px solid #8888", border_radius="3px", overflow="hidden",
                margin="4px 0")  # fmt: skip
_BAR_OVER = safe.css(display="flex", height="12px", border="1px solid #c0392b", border_radius="3px",
                     overflow="hidden", margin="4px 0", box_shadow="0 0 0 1px #c0392b")  # fmt: skip
_TABLE = safe.css(border_collapse="collapse", font_size="12px", margin="4px 0")
_TD = safe.css(padding="1px 8px", text_align="left", border_bottom="1px solid #8883")
_TD_N = safe.css(padding="1px 8px", text_align="right", border_bottom="1px solid #8883")
_SEG_H = safe.css(font_size="11px", opacity="0.8")
_TOKENS = safe.css(font_size="12px", line_height="1.9", white_space="pre-wrap")
_DID = safe.css(margin="4px 0", padding="3px 6px 3px 22px", border_left="3px solid #b7950b", background="#f5c54214")
_DROPPED = safe.css(opacity="0.75", font_size="12px")
_INLINE = safe.css(display="inline")
_SUMMARY = safe.css(display="inline", cursor="pointer", list_style="none")
# a token box: <kbd> with JupyterLab's own kbd look (inline-block, 1em line height, padding) overridden
_KBD = dict(display="inline", font_size="12px", line_height="1.9", padding="0 1px", margin="0 1px 0 0",
            border="1px solid #8886", border_radius="3px", box_shadow="none", background="transparent",
            white_space="pre-wrap")  # fmt: skip
_TOKEN_STYLES = {
    "": safe.css(**_KBD),
    "kb-tm": safe.css(**{**_KBD, "border": "1px dashed #8886", "opacity": "0.75"}),
    "kb-sp": safe.css(**{**_KBD, "border": "1px solid #b7950b", "background": "#f5c54266", "font_weight": "600"}),
    "kb-mm": safe.css(**{**_KBD, "border": "1px solid #7d3c98", "background": "#a569bd55", "font_weight": "600"}),
    "kb-ct": safe.css(**{**_KBD, "opacity": "0.5"}),
}
_DIFF_BACKGROUND = {"kb-del": "#e74c3c33", "kb-ins": "#2ecc7133"}
_DIFF_TAG = {"kb-del": "del", "kb-ins": "ins"}


def _token_style(kind: str, diff: str = "") -> str:
    """The inline style of a token box of this kind (``kb-sp``, ``kb-tm``, ...) and diff side (``kb-del``...)."""
    if not diff:
        return _TOKEN_STYLES[kind]
    base = {"kb-tm": {"border": "1px dashed #8886"}, "kb-sp": {"border": "1px solid #b7950b", "font_weight": "600"},
            "kb-mm": {"border": "1px solid #7d3c98"}}.get(kind, {})  # fmt: skip
    return safe.css(**{**_KBD, **base, "background": _DIFF_BACKGROUND[diff]})


def _token(kind: str, diff: str, title: str, body: str) -> str:
    """One token box: ``<kbd>``, its text in <b> when special, in <del>/<ins> when removed/added."""
    if kind in ("kb-sp", "kb-mm"):
        body = f"<b>{body}</b>"
    if diff:
        body = f"<{_DIFF_TAG[diff]}>{body}</{_DIFF_TAG[diff]}>"
    cls = " ".join(c for c in (kind, diff) if c)
    cls_attr = f' class="{cls}"' if cls else ""
    return f'<kbd{cls_attr} style="{_token_style(kind, diff)}" title="{title}">{body}</kbd>'


_LEGEND_TOKENS = (f'{_token("kb-sp", "", "a special token", "special")} \u00b7 '
                  f'{_token("kb-tm", "", "text the chat template adds", "template")} \u00b7 '
                  f'{_token("", "", "the messages&#x27; own text", "message text")}')  # fmt: skip


def _seg_style(role: str) -> str:

    colour, background = _ROLE_COLOURS[role]
    return safe.css(border_left=f"3px solid {colour}", background=background, padding="2px 6px", margin="3px 0")


_WS_PLAIN = {" ": "\u00b7", "\n": "\u21b5\n", "\t": "\u2192", "\r": "\u240d"}
#: Between two tokens in the text form: a plain space, which no token's text can show (a token's spaces are drawn
#: ``·`` and any other whitespace as ``⟨U+XXXX⟩``). A visible mark such as ``|`` read as part of the text: ``<think>``
#: split into ``<``, ``think``, ``>`` showed as ``<|think|>``, which is another token's spelling.
SEP = " "


def _role(role: str) -> str:
    return role if role in _ROLES else "template"


def _n(x: int) -> str:
    return f"{x:,}"


class _Spans:
    """Token spans (``<span class=... title="#position · id · text">text</span>``), each distinct token escaped once."""

    def __init__(self):
        self._body: dict[str, str] = {}
        self._title: dict[str, str] = {}
        self._parts: dict[tuple, tuple[str, str]] = {}

    def body(self, text: str) -> str:
        b = self._body.get(text)
        if b is None:
            b = self._body[text] = safe.visible(text) if text else "\u2026"
        return b

    def quoted(self, text: str) -> str:
        q = self._title.get(text)
        if q is None:
            q = self._title[text] = safe.attr(json.dumps(text, ensure_ascii=False))
        return q

    def run(self, ids, texts, flags, start: int, end: int, runs: dict, cls_extra: str = "") -> str:
        out, i = [], start
        while i < end:
            run = runs.get(i)
            if run is not None:
                stop = min(end, i + run.count)
                text = texts[i] or run.text
                media = f" \u00b7 {safe.attr(run.media)}" if getattr(run, "media", "") else ""
                title = (f"#{i}\u2013#{stop - 1} \u00b7 id {ids[i]} \u00b7 {self.quoted(text)} \u00d7 {stop - i}"
                         f"{media}")  # fmt: skip
                summary = _token("kb-mm", cls_extra.strip(), title, f"{self.body(text)} \u00d7{stop - i}")
                if run.multimodal:  # one box that opens on a click to the tokens it stands for
                    inner = self.run(ids, texts, flags, i, stop, {}, cls_extra)
                    summary = (f'<details class="kb-run" style="{_INLINE}"><summary style="{_SUMMARY}">{summary}'
                               f"</summary>{inner}</details>")  # fmt: skip
                out.append(summary)
                i = stop
                continue
            key = (ids[i], flags[i], texts[i], cls_extra)
            parts = self._parts.get(key)
            if parts is None:
                parts = self._parts[key] = self._split(*key)
            out.append(f"{parts[0]}{i}{parts[1]}")
            i += 1
        return "".join(out)

    def _split(self, token_id: int, flag: int, text: str, cls_extra: str) -> tuple[str, str]:
        """A token's span in two halves, to be joined around its position."""
        kind = "kb-sp" if flag & _SPECIAL else ("kb-tm" if flag & _TEMPLATE else ("" if text else "kb-ct"))
        head, tail = _token(kind, cls_extra.strip(), "\0", self.body(text)).split("\0")
        return f"{head}#", f" \u00b7 id {token_id} \u00b7 {self.quoted(text)}{tail}"


def _context_bar(view) -> str:
    ctx = view.context_size
    if not ctx:
        return ""
    used = view.total + view.reply_tokens
    scale = max(ctx, used)
    def part(cls: str, count: int, colour: str, title: str) -> str:
        style = safe.css(display="block", height="100%", width=f"{100 * count / scale:.3f}%", background=colour)
        return f'<span class="{cls}" style="{style}" title="{safe.attr(title)}"></span>'

    parts = [part(f"kb-r-{_role(s.role)}", s.count, _ROLE_COLOURS[_role(s.role)][0], f"{s.label}: {_n(s.count)} tokens")
             for s in view.segments if s.count]  # fmt: skip
    parts.append(part("kb-rsv", view.reply_tokens, "#88888844", f"reply room: {_n(view.reply_tokens)} tokens"))
    over = " kb-over" if used > ctx else ""
    free = view.free
    legend = f"prompt {_n(view.total)} + reply room {_n(view.reply_tokens)} of context {_n(ctx)}: " + (
        f"{_n(free)} free" if free >= 0 else f"<b>{_n(-free)} over</b>"
    )
    bar = _BAR_OVER if over else _BAR
    return (f'<div class="kb-bar{over}" style="{bar}">{"".join(parts)}</div>'
            f'<div class="kb-legend" style="{_LEGEND}">{legend}</div>')  # fmt: skip


def _counts_table(view) -> str:
    rows = "".join(
        f'<tr class="kb-r-{_role(s.role)}"><td style="{_TD}">{safe.text(s.label)}</td><td class="kb-n" '
        f'style="{_TD_N}">{_n(s.count)}</td><td class="kb-n" style="{_TD_N}">'
        f'{_n(s.content_tokens) if s.message_index is not None else ""}</td>'
        f'<td style="{_TD}">{safe.text(s.preview)}</td></tr>'
        for s in view.segments
    )
    opened = " open" if len(view.segments) <= 12 else ""
    return (
        f'<details{opened}><summary>tokens per message</summary><table class="kb-counts" style="{_TABLE}"><tr>'
        f'<th style="{_TD}">part</th><th style="{_TD_N}">tokens</th><th style="{_TD_N}">own text</th>'
        f'<th style="{_TD}"></th></tr>{rows}<tr><th style="{_TD}">total</th><td class="kb-n" style="{_TD_N}"><b>'
        f'{_n(view.total)}</b></td><td style="{_TD}"></td><td style="{_TD}"></td></tr></table></details>'
    )


def _dropped(view) -> str:
    if not view.dropped:
        return ""
    items = "".join(f"<li>{safe.text(m.role.value)}: {safe.text(_short(m))}</li>" for m in view.dropped)
    return (
        f'<details class="kb-dropped" style="{_DROPPED}"><summary>kani leaves out {len(view.dropped)} older message(s) to fit the '
        f"context</summary><ol>{items}</ol></details>"
    )


def _short(message, limit: int = 80) -> str:
    text = " ".join(p if isinstance(p, str) else f"[{type(p).__name__}]" for p in message.parts).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _did_html(notes, title: str = "what the template did") -> str:
    """The chat template's doings (dropped, merged, moved, rewritten messages; text of its own) as a short list."""
    if not notes:
        return ""
    items = "".join(f'<li class="kb-did-{safe.attr(n.kind)}">{safe.text(n.text)}</li>' for n in notes)
    return (f'<div class="kb-legend" style="{_LEGEND}">{safe.text(title)}:</div><ul class="kb-did" style="{_DID}">'
            f"{items}</ul>")  # fmt: skip


def _did_text(notes, title: str = "what the template did") -> list[str]:
    return [f"{title}:", *(f"  * {_line(n.text)}" for n in notes)] if notes else []


def prompt_html(view, element_id: str) -> str:
    """The prompt view as one self-contained HTML fragment."""
    spans = _Spans()
    runs = {r.start: r for r in view.placeholder_runs}
    ids, texts, flags = view.token_ids, view._texts, view._flags
    body = []
    for s in view.segments:
        own = f" ({_n(s.content_tokens)} own text)" if s.message_index is not None else ""
        tokens = spans.run(ids, texts, flags, s.start, s.end, runs)
        body.append(
            f'<div class="kb-seg kb-r-{_role(s.role)}" style="{_seg_style(_role(s.role))}"><div class="kb-seg-h" '
            f'style="{_SEG_H}">{safe.text(s.label)} \u00b7 {_n(s.count)} tokens{own}</div><div class="kb-b" '
            f'style="{_TOKENS}">{tokens}</div></div>'
        )
    note = f'<div class="kb-note" style="{_NOTE}">{safe.text(view.note)}</div>' if view.note else ""
    mm = "".join(f" \u00b7 {safe.text(r.text)} \u00d7{r.count}" for r in view.placeholder_runs if r.multimodal)
    return (
        f'<div class="kb-tokens" id="{safe.attr(element_id)}" style="{_BOX}"><style>{CSS}</style>'
        f'<div class="kb-head" style="{_HEAD}"><b>{safe.text(view.title)}</b> \u00b7 {_n(view.total)} tokens \u00b7 '
        f"{len(view.messages)} messages{mm}</div>{_context_bar(view)}{note}{_did_html(view.template_notes)}"
        f"{_dropped(view)}{_counts_table(view)}"
        f'<div class="kb-legend" style="{_LEGEND}">hover a token for its position, id and text \u00b7 '
        f'<span class="kb-b">{_LEGEND_TOKENS}</span></div>'
        f"{''.join(body)}</div>"
    )


def _plain(text: str) -> str:
    """A token's text for a terminal: whitespace and control characters drawn visibly (so it holds no space)."""
    return "".join(_WS_PLAIN.get(ch) or (f"\u27e8U+{ord(ch):04X}\u27e9" if ch.isspace() else ch)
                   for ch in safe.clean_chars(text))  # fmt: skip


def _line(text: str) -> str:
    """Text on one terminal line, control characters neutralized."""
    return safe.clean_chars(text).replace("\n", " ")


def _plain_tokens(view, start: int, end: int, cache: dict | None = None) -> str:
    """Tokens separated by :data:`SEP` (a space), special ones in ``⟦ ⟧``, a placeholder run as ``⟦<image>⟧×N``."""
    cache = {} if cache is None else cache
    runs = {r.start: r for r in view.placeholder_runs}
    out, i = [], start
    while i < end:
        run = runs.get(i)
        if run is not None:
            stop = min(end, i + run.count)
            media = f"({safe.clean_chars(run.media).replace(' ', ':')})" if getattr(run, "media", "") else ""
            out.append(f"\u27e6{_plain(view._texts[i] or run.text)}\u27e7\u00d7{stop - i}{media}")
            i = stop
            continue
        key = (view._texts[i], view._flags[i] & _SPECIAL)
        shown = cache.get(key)
        if shown is None:
            shown = _plain(key[0]) or "\u2026"
            shown = cache[key] = f"\u27e6{shown}\u27e7" if key[1] else shown
        out.append(shown)
        i += 1
    return SEP.join(out)


def prompt_text(view, max_tokens: int = 3000) -> str:
    """The prompt view for a terminal: a summary, the per-message counts, then the tokens separated by spaces.

    :param max_tokens: List at most this many tokens (a long prompt's full list is in ``view.tokens``).
    """
    lines = [f"Prompt: {_line(view.title)} \u00b7 {_n(view.total)} tokens \u00b7 {len(view.messages)} messages"]
    if view.context_size:
        free = view.free
        lines.append(
            f"context {_n(view.context_size)} \u00b7 reply room {_n(view.reply_tokens)} \u00b7 "
            + (f"{_n(free)} free" if free >= 0 else f"{_n(-free)} OVER")
        )
    if view.note:
        lines.append(f"! {_line(view.note)}")
    lines += _did_text(view.template_notes)
    if view.dropped:
        lines.append(f"kani leaves out {len(view.dropped)} older message(s) to fit:")
        lines += [f"  - {m.role.value}: {_line(_short(m))}" for m in view.dropped]
    for s in view.segments:
        own = f"({_n(s.content_tokens)} own)" if s.message_index is not None else ""
        lines.append(f"  {_line(s.label)[:32]:<32} {_n(s.count):>7} {own:<12} {_line(s.preview)[:60]}")
    cache: dict = {}
    for s in view.segments:
        if s.start >= max_tokens:
            break
        lines.append(f"\u2500\u2500 {_line(s.label)} \u00b7 {_n(s.count)} tokens \u2500\u2500")
        lines.append(_plain_tokens(view, s.start, min(s.end, max_tokens), cache))
    if view.total > max_tokens:
        lines.append(f"\u2026 {_n(view.total - max_tokens)} more tokens not listed (all are in .tokens)")
    return "\n".join(lines)


# ---------------------------------------------------------------- comparison

_KEEP = 20  # tokens shown at each end of a long equal run


def comparison_html(cmp, element_id: str) -> str:
    """Two prompts of one conversation: counts side by side, then one token stream with the differences marked."""
    a, b = cmp.a, cmp.b
    spans = _Spans()
    ra = {r.start: r for r in a.placeholder_runs}
    rb = {r.start: r for r in b.placeholder_runs}
    out = []
    for tag, i1, i2, j1, j2 in cmp.opcodes:
        if tag == "equal":
            if i2 - i1 > 3 * _KEEP:
                out.append(spans.run(a.token_ids, a._texts, a._flags, i1, i1 + _KEEP, ra))
                out.append(
                    f'<details><summary>\u2026 {_n(i2 - i1 - 2 * _KEEP)} equal tokens</summary><div class="kb-b" '
                    f'style="{_TOKENS}">'
                    f"{spans.run(a.token_ids, a._texts, a._flags, i1 + _KEEP, i2 - _KEEP, ra)}</div></details>"
                )
                out.append(spans.run(a.token_ids, a._texts, a._flags, i2 - _KEEP, i2, ra))
            else:
                out.append(spans.run(a.token_ids, a._texts, a._flags, i1, i2, ra))
            continue
        if i2 > i1:
            out.append(spans.run(a.token_ids, a._texts, a._flags, i1, i2, ra, " kb-del"))
        if j2 > j1:
            out.append(spans.run(b.token_ids, b._texts, b._flags, j1, j2, rb, " kb-ins"))
    changed = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in cmp.opcodes if tag != "equal")
    la, lb = (safe.text(x) for x in cmp.labels)
    verdict = "identical" if cmp.same else f"{_n(changed)} tokens differ"
    return (
        f'<div class="kb-tokens kb-compare" id="{safe.attr(element_id)}" style="{_BOX}"><style>{CSS}</style>'
        f'<div class="kb-head kb-b" style="{_HEAD}">{_token("", "kb-del", "only in A: struck through", "A")} <b>'
        f'{la}</b>: {_n(a.total)} tokens \u00b7 {_token("", "kb-ins", "only in B: underlined", "B")} <b>{lb}</b>: '
        f"{_n(b.total)} tokens \u00b7 {verdict}</div>"
        f"{_did_html(a.template_notes, f'A: {cmp.labels[0]}')}{_did_html(b.template_notes, f'B: {cmp.labels[1]}')}"
        f'{_side_by_side(cmp)}<div class="kb-b" style="{_TOKENS}">{"".join(out)}</div></div>'
    )


def _rows(cmp) -> list[tuple[str, str, int | None, int | None]]:
    """(role, label, tokens in A, tokens in B) per message, template parts by label."""
    rows, index = [], {}
    for side, view in enumerate((cmp.a, cmp.b)):
        for s in view.segments:
            key = ("m", s.message_index) if s.message_index is not None else ("t", s.label)
            if key not in index:
                index[key] = len(rows)
                rows.append([s.role, s.label, None, None])
            rows[index[key]][2 + side] = (rows[index[key]][2 + side] or 0) + s.count
    return [tuple(r) for r in rows]


def _side_by_side(cmp) -> str:
    body = "".join(
        f'<tr class="kb-r-{_role(role)}"><td style="{_TD}">{safe.text(label)}</td><td class="kb-n" style="{_TD_N}">'
        f'{"" if x is None else _n(x)}</td><td class="kb-n" style="{_TD_N}">{"" if y is None else _n(y)}</td>'
        f'<td class="kb-n" style="{_TD_N}">{_delta(x, y)}</td></tr>'
        for role, label, x, y in _rows(cmp)
    )
    la, lb = (safe.text(x) for x in cmp.labels)
    return (
        f'<details open><summary>tokens per message</summary><table class="kb-counts" style="{_TABLE}"><tr>'
        f'<th style="{_TD}">part</th><th style="{_TD_N}">A: {la}</th><th style="{_TD_N}">B: {lb}</th>'
        f'<th style="{_TD_N}">B\u2212A</th></tr>{body}<tr><th style="{_TD}">total</th><td class="kb-n" '
        f'style="{_TD_N}">{_n(cmp.a.total)}</td><td class="kb-n" style="{_TD_N}">{_n(cmp.b.total)}</td>'
        f'<td class="kb-n" style="{_TD_N}">{_delta(cmp.a.total, cmp.b.total)}</td></tr>'
        f"</table></details>"
    )


def _delta(x, y) -> str:
    return f"{(y or 0) - (x or 0):+,}"


def comparison_text(cmp) -> str:
    """The comparison for a terminal: totals, counts per message, then the differing token runs."""
    a, b = cmp.a, cmp.b
    lines = [
        f"A: {_line(cmp.labels[0])} \u00b7 {_n(a.total)} tokens",
        f"B: {_line(cmp.labels[1])} \u00b7 {_n(b.total)} tokens",
        "identical" if cmp.same else "differences (- only in A, + only in B):",
    ]
    lines += _did_text(a.template_notes, "A: what the template did") + _did_text(
        b.template_notes, "B: what the template did"
    )
    for _, label, x, y in _rows(cmp):
        lines.append(f"  {_line(label)[:32]:<32} {'' if x is None else _n(x):>7} {'' if y is None else _n(y):>7}")
    for tag, i1, i2, j1, j2 in cmp.opcodes:
        if tag == "equal":
            lines.append(f"= {_n(i2 - i1)} equal tokens")
            continue
        if i2 > i1:
            lines.append(f"- {_plain_tokens(a, i1, i2)}")
        if j2 > j1:
            lines.append(f"+ {_plain_tokens(b, j1, j2)}")
    return "\n".join(lines)
