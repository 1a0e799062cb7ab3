"""HTML and text for :class:`~kanibook.explain.what_if.WhatIf`: one row per prompt (the reply's log-probability,
perplexity, the change against the real prompt, the start of the greedy reply), each variant's difference from the
real prompt one click away (``<details>``: the changed tokens with a little context). Inline styles only, no script;
every text through :mod:`kanibook.render.safe`. The prompt view's full diff is ``what_if.comparison(name)``.
"""

from __future__ import annotations

import difflib
import math

from ..render import safe

__all__ = ["what_if_html", "what_if_text", "diff_hunks"]

_MONO = "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px"
_TOK = f"{_MONO};white-space:pre-wrap;border:1px solid #8886;border-radius:3px;padding:0 1px;margin:0 1px 0 0"
_CELL = "padding:2px 8px;text-align:left;vertical-align:top;border-bottom:1px solid #8883"
_NUM = f"{_CELL};text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap"
_WORDS = f"{_CELL};overflow-wrap:normal"  # headers and names wrap between words only
_KEEP = 3


def diff_hunks(a: list[int], b: list[int]) -> list[tuple[str, int, int, int, int]]:
    """difflib opcodes of two id lists (the HTML shows ``_KEEP`` tokens of each equal run around the changes)."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()


def _token(tokenizer, i: int, extra: str = "") -> str:
    text = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return (f'<span style="{_TOK};{extra}" title="{safe.attr(f"id {i}")}">'
            f"{safe.visible(text)}</span>")  # fmt: skip


def _diff_html(tokenizer, a: list[int], b: list[int]) -> str:
    out = []
    for tag, i1, i2, j1, j2 in diff_hunks(a, b):
        if tag == "equal":
            if i2 - i1 > 2 * _KEEP:
                head = "".join(_token(tokenizer, x) for x in a[i1 : i1 + _KEEP]) if i1 > 0 else ""
                tail = "".join(_token(tokenizer, x) for x in a[i2 - _KEEP : i2]) if i2 < len(a) else ""
                out.append(f'{head}<span style="opacity:.6;font-size:11px"> \u2026 {i2 - i1} equal tokens \u2026 '
                           f"</span>{tail}")  # fmt: skip
            else:
                out.append("".join(_token(tokenizer, x) for x in a[i1:i2]))
            continue
        out += [_token(tokenizer, x, "background:#e74c3c33;text-decoration:line-through") for x in a[i1:i2]]
        out += [_token(tokenizer, x, "background:#2ecc7133") for x in b[j1:j2]]
    return "".join(out)


def _fmt(x: float, spec: str) -> str:
    return "n/a" if math.isnan(x) else format(x, spec)


def what_if_html(what_if) -> str:
    tok = what_if.reply.engine.tokenizer
    real = what_if.real
    real_ids = what_if.ids(real.name)
    rows = []
    for v in what_if.variants:
        if v.note:
            rows.append(f'<tr class="kb-whatif-row"><td style="{_WORDS}"><b>{safe.text(v.name)}</b></td>'
                        f'<td style="{_CELL};opacity:.8" colspan="4">{safe.text(v.note)}</td></tr>')  # fmt: skip
            continue
        ids = what_if.ids(v.name)
        if v is real:
            change, diff = "", ""
        else:
            changed = sum(max(i2 - i1, j2 - j1) for t, i1, i2, j1, j2 in diff_hunks(real_ids, ids) if t != "equal")
            change = _fmt(v.logprob - real.logprob, "+.2f")
            summary = "same prompt as the real one" if not changed else f"prompt: {changed} tokens differ"
            diff = (f'<details class="kb-whatif-diff"><summary style="cursor:pointer;font-size:11px">'
                    f"{safe.text(summary)}</summary><div style=\"margin:2px 0\">"
                    f"{_diff_html(tok, real_ids, ids) if changed else ''}</div></details>")  # fmt: skip
        greedy = (f'<span style="{_MONO};white-space:pre-wrap">{safe.visible(v.greedy)}</span>' if v.greedy else "")
        rows.append(
            f'<tr class="kb-whatif-row"><td style="{_WORDS}"><b>{safe.text(v.name)}</b>{diff}</td>'
            f'<td style="{_NUM}">{_fmt(v.logprob, ".2f")}</td><td style="{_NUM}">{_fmt(v.perplexity, ".2f")}</td>'
            f'<td style="{_NUM}">{change}</td><td style="{_CELL}">{greedy}</td></tr>'
        )
    names = ("prompt", "log p of the reply", "perplexity", "vs real", "greedy reply starts")
    head = "".join(f'<th style="{_WORDS};font-weight:600">{h}</th>' for h in names)
    n = len(what_if.reply.reply_ids)
    return (
        '<div class="kb-whatif" style="font-family:system-ui,-apple-system,\'Segoe UI\',sans-serif;font-size:13px;'
        'line-height:1.6;max-width:100%;overflow-wrap:anywhere">'
        f'<div style="font-weight:600;margin:2px 0">What a wrong template would have done \u00b7 the same reply '
        f"({n} tokens) under each prompt</div>"
        f'<table style="border-collapse:collapse;font-size:12px;margin:4px 0"><tr>{head}</tr>{"".join(rows)}</table>'
        '<div style="font-size:11px;opacity:.8">Click a prompt\'s name for its difference from the real one; '
        "what_if.comparison(name) gives the prompt view's full diff.</div></div>"
    )


def what_if_text(what_if) -> str:
    real = what_if.real
    lines = [f"What a wrong template would have done · the same reply ({len(what_if.reply.reply_ids)} tokens)",
             f"  {'prompt':<22} {'log p':>9} {'ppl':>9} {'vs real':>8}  greedy reply starts"]  # fmt: skip
    for v in what_if.variants:
        name = safe.clean_chars(v.name)
        if v.note:
            lines.append(f"  {name:<22} {safe.clean_chars(v.note)}")
            continue
        change = "" if v is real else _fmt(v.logprob - real.logprob, "+.2f")
        lines.append(f"  {name:<22} {_fmt(v.logprob, '.2f'):>9} {_fmt(v.perplexity, '.2f'):>9} {change:>8}  "
                     f"{safe.clean_chars(v.greedy)!r}")  # fmt: skip
    return "\n".join(lines)
