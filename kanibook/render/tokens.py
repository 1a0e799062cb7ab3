"""HTML and text for the prompt view and the prompt comparison: data in, strings out (no model, no I/O).

Every piece of text goes through :mod:`kanibook.render.safe`. The HTML is self-contained: one ``<style>`` scoped to
``.kb-tokens``, no script, no external resources; hovering a token shows its position, id and text (``title``).
"""

from __future__ import annotations

import json

from . import safe

__all__ = ["prompt_html", "prompt_text", "comparison_html", "comparison_text", "CSS"]

_SPECIAL, _TEMPLATE = 1, 2
_ROLES = {"system", "user", "assistant", "function", "template"}

CSS = """
.kb-tokens{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;line-height:1.55;max-width:100%;
 overflow-wrap:anywhere;color:inherit}
.kb-tokens .kb-head{margin:2px 0 4px}
.kb-tokens .kb-note{margin:4px 0;padding:3px 6px;border-left:3px solid #c0392b;background:#c0392b14}
.kb-tokens .kb-bar{display:flex;height:12px;border:1px solid #8888;border-radius:3px;overflow:hidden;margin:4px 0}
.kb-tokens .kb-bar>span{display:block;height:100%;min-width:0}
.kb-tokens .kb-bar .kb-rsv{background:repeating-linear-gradient(45deg,#8884 0 4px,transparent 4px 8px)}
.kb-tokens .kb-bar.kb-over{border-color:#c0392b;box-shadow:0 0 0 1px #c0392b}
.kb-tokens .kb-legend{font-size:11px;opacity:.8}
.kb-tokens table.kb-counts{border-collapse:collapse;font-size:12px;margin:4px 0}
.kb-tokens table.kb-counts td,.kb-tokens table.kb-counts th{padding:1px 8px;text-align:left;
 border-bottom:1px solid #8883}
.kb-tokens table.kb-counts td.kb-n{text-align:right;font-variant-numeric:tabular-nums}
.kb-tokens .kb-seg{border-left:3px solid var(--kb-c);background:var(--kb-bg);padding:2px 6px;margin:3px 0}
.kb-tokens .kb-seg-h{font-size:11px;opacity:.8}
.kb-tokens .kb-b span{white-space:pre-wrap;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
 font-size:12px;border:1px solid #8886;border-radius:3px;padding:0 1px;margin:0 1px 0 0;line-height:1.9}
.kb-tokens .kb-b span:hover{outline:2px solid var(--kb-c,#888)}
.kb-tokens .kb-b .kb-tm{border-style:dashed;opacity:.75}
.kb-tokens .kb-b .kb-sp{background:#f5c54266;border:1px solid #b7950b;font-weight:600;opacity:1}
.kb-tokens .kb-b .kb-mm{background:#a569bd55;border-color:#7d3c98}
.kb-tokens details.kb-run{display:inline}.kb-tokens details.kb-run>summary{display:inline;cursor:pointer;list-style:none}
.kb-tokens details.kb-run>summary::-webkit-details-marker{display:none}
.kb-tokens .kb-b .kb-ct{opacity:.5}
.kb-tokens .kb-b .kb-del{background:#e74c3c33;text-decoration:line-through}
.kb-tokens .kb-b .kb-ins{background:#2ecc7133}
.kb-tokens .kb-dropped{opacity:.75;font-size:12px}
.kb-tokens ul.kb-did{margin:4px 0;padding:3px 6px 3px 22px;border-left:3px solid #b7950b;background:#f5c54214}
.kb-tokens ul.kb-did>li{margin:0}
.kb-tokens .kb-r-system{--kb-c:#8e44ad;--kb-bg:#8e44ad0d}
.kb-tokens .kb-r-user{--kb-c:#2471a3;--kb-bg:#2471a30d}
.kb-tokens .kb-r-assistant{--kb-c:#1e8449;--kb-bg:#1e84490d}
.kb-tokens .kb-r-function{--kb-c:#ca6f1e;--kb-bg:#ca6f1e0d}
.kb-tokens .kb-r-template{--kb-c:#888;--kb-bg:#8881}
.kb-tokens .kb-bar .kb-r-system{background:#8e44ad}.kb-tokens .kb-bar .kb-r-user{background:#2471a3}
.kb-tokens .kb-bar .kb-r-assistant{background:#1e8449}.kb-tokens .kb-bar .kb-r-function{background:#ca6f1e}
.kb-tokens .kb-bar .kb-r-template{background:#999}
"""

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
                summary = (
                    f'<span class="kb-sp kb-mm{cls_extra}" title="#{i}\u2013#{stop - 1} \u00b7 id {ids[i]} \u00b7 '
                    f'{self.quoted(text)} \u00d7 {stop - i}{media}">{self.body(text)} \u00d7{stop - i}</span>'
                )
                if run.multimodal:  # one box that opens on a click to the tokens it stands for
                    inner = self.run(ids, texts, flags, i, stop, {}, cls_extra)
                    summary = f'<details class="kb-run"><summary>{summary}</summary>{inner}</details>'
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
        cls = "kb-sp" if flag & _SPECIAL else ("kb-tm" if flag & _TEMPLATE else "")
        cls = " ".join(c for c in (cls, "" if text else "kb-ct", cls_extra.strip()) if c)
        head = f'<span class="{cls}" title="#' if cls else '<span title="#'
        return head, f' \u00b7 id {token_id} \u00b7 {self.quoted(text)}">{self.body(text)}</span>'


def _context_bar(view) -> str:
    ctx = view.context_size
    if not ctx:
        return ""
    used = view.total + view.reply_tokens
    scale = max(ctx, used)
    parts = [
        f'<span class="kb-r-{_role(s.role)}" style="width:{100 * s.count / scale:.3f}%" title="{safe.attr(s.label)}: '
        f'{_n(s.count)} tokens"></span>'
        for s in view.segments
        if s.count
    ]
    parts.append(
        f'<span class="kb-rsv" style="width:{100 * view.reply_tokens / scale:.3f}%" '
        f'title="reply room: {_n(view.reply_tokens)} tokens"></span>'
    )
    over = " kb-over" if used > ctx else ""
    free = view.free
    legend = f"prompt {_n(view.total)} + reply room {_n(view.reply_tokens)} of context {_n(ctx)}: " + (
        f"{_n(free)} free" if free >= 0 else f"<b>{_n(-free)} over</b>"
    )
    return f'<div class="kb-bar{over}">{"".join(parts)}</div><div class="kb-legend">{legend}</div>'


def _counts_table(view) -> str:
    rows = "".join(
        f'<tr class="kb-r-{_role(s.role)}"><td>{safe.text(s.label)}</td><td class="kb-n">{_n(s.count)}</td>'
        f'<td class="kb-n">{_n(s.content_tokens) if s.message_index is not None else ""}</td>'
        f"<td>{safe.text(s.preview)}</td></tr>"
        for s in view.segments
    )
    opened = " open" if len(view.segments) <= 12 else ""
    return (
        f'<details{opened}><summary>tokens per message</summary><table class="kb-counts"><tr><th>part</th>'
        f'<th>tokens</th><th>own text</th><th></th></tr>{rows}<tr><th>total</th><td class="kb-n"><b>'
        f"{_n(view.total)}</b></td><td></td><td></td></tr></table></details>"
    )


def _dropped(view) -> str:
    if not view.dropped:
        return ""
    items = "".join(f"<li>{safe.text(m.role.value)}: {safe.text(_short(m))}</li>" for m in view.dropped)
    return (
        f'<details class="kb-dropped"><summary>kani leaves out {len(view.dropped)} older message(s) to fit the '
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
    return f'<div class="kb-legend">{safe.text(title)}:</div><ul class="kb-did">{items}</ul>'


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
            f'<div class="kb-seg kb-r-{_role(s.role)}"><div class="kb-seg-h">{safe.text(s.label)} \u00b7 '
            f'{_n(s.count)} tokens{own}</div><div class="kb-b">{tokens}</div></div>'
        )
    note = f'<div class="kb-note">{safe.text(view.note)}</div>' if view.note else ""
    mm = "".join(f" \u00b7 {safe.text(r.text)} \u00d7{r.count}" for r in view.placeholder_runs if r.multimodal)
    return (
        f'<div class="kb-tokens" id="{safe.attr(element_id)}"><style>{CSS}</style>'
        f'<div class="kb-head"><b>{safe.text(view.title)}</b> \u00b7 {_n(view.total)} tokens \u00b7 '
        f"{len(view.messages)} messages{mm}</div>{_context_bar(view)}{note}{_did_html(view.template_notes)}"
        f"{_dropped(view)}{_counts_table(view)}"
        f'<div class="kb-legend">hover a token for its position, id and text \u00b7 <span class="kb-b"><span '
        f'class="kb-sp">special</span> <span class="kb-tm">template</span> <span>message text</span></span></div>'
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
                    f'<details><summary>\u2026 {_n(i2 - i1 - 2 * _KEEP)} equal tokens</summary><div class="kb-b">'
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
        f'<div class="kb-tokens kb-compare" id="{safe.attr(element_id)}"><style>{CSS}</style>'
        f'<div class="kb-head kb-b"><span class="kb-del">A</span> <b>{la}</b>: {_n(a.total)} tokens \u00b7 '
        f'<span class="kb-ins">B</span> <b>{lb}</b>: {_n(b.total)} tokens \u00b7 {verdict}</div>'
        f"{_did_html(a.template_notes, f'A: {cmp.labels[0]}')}{_did_html(b.template_notes, f'B: {cmp.labels[1]}')}"
        f'{_side_by_side(cmp)}<div class="kb-b">{"".join(out)}</div></div>'
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
        f'<tr class="kb-r-{_role(role)}"><td>{safe.text(label)}</td><td class="kb-n">{"" if x is None else _n(x)}</td>'
        f'<td class="kb-n">{"" if y is None else _n(y)}</td><td class="kb-n">{_delta(x, y)}</td></tr>'
        for role, label, x, y in _rows(cmp)
    )
    la, lb = (safe.text(x) for x in cmp.labels)
    return (
        f'<details open><summary>tokens per message</summary><table class="kb-counts"><tr><th>part</th><th>A: {la}'
        f'</th><th>B: {lb}</th><th>B\u2212A</th></tr>{body}<tr><th>total</th><td class="kb-n">{_n(cmp.a.total)}'
        f'</td><td class="kb-n">{_n(cmp.b.total)}</td><td class="kb-n">{_delta(cmp.a.total, cmp.b.total)}</td></tr>'
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
