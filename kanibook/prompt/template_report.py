"""What the chat template did to the conversation, as a short list of :class:`~kanibook.prompt.view.TemplateNote`.

Worked out from the prompt itself, for any template: which message texts are missing, repeated, moved after a later
message's, inside another message's turn, or changed (:mod:`kanibook.prompt.regions`); what template text comes
before the first message (and whether a system message replaces it: a default system prompt); today's date in the
template's own text; the tool definitions (the prompt rendered without the functions, compared).
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter

from .layout import Layout
from .regions import strings
from .segment import _lcp, _lcs
from .tokens import SPECIAL, TEMPLATE, TokenizedPrompt
from .notes import TemplateNote

__all__ = ["template_notes"]


def _name(messages: list, k: int) -> str:
    return f"#{k + 1} {messages[k].role.value}"


def template_notes(tp: TokenizedPrompt, messages: list, lay: Layout, slots: list[int], flags: list[int],
                   functions=None) -> list[TemplateNote]:  # fmt: skip
    """The notes for one prompt.

    :param tp: The tokenized prompt.
    :param messages: The conversation.
    :param lay: Its layout (:func:`kanibook.prompt.layout.build_layout`).
    :param slots: Each token's slot (0: before the first message, k+1: message k, n+1: generation prompt).
    :param flags: Each token's flags.
    :param functions: The functions passed to the template, if any.
    """
    notes: list[TemplateNote] = []
    text, n = tp.text, len(messages)
    if lay.regions is not None:
        notes += _placement(messages, lay)
        notes += _rewrites(text, messages, lay)
    for k, owner in sorted(lay.merged.items()):
        if any(x.kind in ("dropped", "moved") and x.message_index == k for x in notes):  # said already
            continue
        if _bare(tp, messages, lay, k):
            where = "before" if _start_of(lay, k) < _start_of(lay, owner) else "after"
            notes.append(TemplateNote("bare", k, f"{_name(messages, k)}: rendered without a role marker, {where} "
                                                 f"{_name(messages, owner)}'s turn"))  # fmt: skip
        else:
            notes.append(TemplateNote("merged", k, f"{_name(messages, k)}: merged into {_name(messages, owner)}'s turn"))
    notes += _added(tp, messages, slots, flags)
    notes += _date(tp, slots, flags, messages, n)
    if functions:
        notes += _tools(tp, messages, slots, functions, n)
    return notes


def _start_of(lay: Layout, k: int) -> int:
    return min((r.start for r in lay.regions or [] if r.message == k), default=0)


def _bare(tp: TokenizedPrompt, messages: list, lay: Layout, k: int) -> bool:
    """Whether message k's text stands alone, with no template text of its own (DeepSeek-V3's system text before the
    user's marker): the prompt without that text is exactly the prompt of the conversation without that message."""
    spans = sorted((r.start, r.end) for r in lay.regions or [] if r.message == k)
    if not spans:
        return False
    cut, pos = [], 0
    for start, end in spans:
        cut.append(tp.text[pos:start])
        pos = end
    cut.append(tp.text[pos:])
    without = tp.render([m for i, m in enumerate(messages) if i != k])
    return without is not None and without == "".join(cut)


def _placement(messages: list, lay: Layout) -> list[TemplateNote]:
    out = []
    seen = Counter((r.message, r.part) for r in lay.regions)
    first_at = {}
    for i, r in enumerate(lay.regions):
        first_at.setdefault(r.message, i)
    for k, m in enumerate(messages):
        parts = strings(m)
        if not parts:
            continue
        if k not in first_at:
            role = m.role.value
            why = f"this template drops {role} messages" if role == "system" else "this template drops it"
            out.append(TemplateNote("dropped", k, f"{_name(messages, k)}: not in the prompt: {why}"))
            continue
        times = max(seen[(k, p)] for p in range(len(parts)))
        if times > 1:
            out.append(TemplateNote("repeated", k, f"{_name(messages, k)}: rendered {times} times"))
        later = [r.message for r in lay.regions[: first_at[k]] if r.message > k]
        if later:
            where = f" into {_name(messages, lay.merged[k])}'s turn" if k in lay.merged else ""
            out.append(TemplateNote(
                "moved", k, f"{_name(messages, k)}: moved{where}, after {_name(messages, max(later))}'s text"
            ))  # fmt: skip
    return out


def _rewrites(text: str, messages: list, lay: Layout) -> list[TemplateNote]:
    out, shown = [], {}
    for r in lay.regions:
        shown.setdefault((r.message, r.part), text[r.start : r.end])
    for k, m in enumerate(messages):
        real = "".join(strings(m))
        got = "".join(shown.get((k, p), "") for p in range(len(strings(m))))
        if not real or (k, 0) not in shown or got.strip() == real.strip() or got in (real, real.strip()):
            continue
        if got.strip() in real:
            missing = len(real.strip()) - len(got.strip())
        else:
            import difflib

            kept = sum(b.size for b in difflib.SequenceMatcher(None, real, got, autojunk=False).get_matching_blocks())
            missing = len(real) - kept
        why = " (its reasoning was removed)" if "<think>" in real and "<think>" not in got else ""
        if missing <= 0:
            line = f"{_name(messages, k)}: rewritten: the template changed its text"
        else:
            line = f"{_name(messages, k)}: rewritten: {missing:,} of its characters are not in the prompt{why}"
        out.append(TemplateNote("rewritten", k, line, missing))
    return out


def _added(tp: TokenizedPrompt, messages: list, slots: list[int], flags: list[int]) -> list[TemplateNote]:
    """Template text before the first message that is more than special tokens (a BOS)."""
    lead = [i for i, s in enumerate(slots) if s == 0]
    if not lead or all(flags[i] & SPECIAL for i in lead):
        return []
    added = "".join(tp.texts[i] for i in lead)
    what = ""
    if messages and messages[0].role.value != "system" and added.strip():
        from kani import ChatMessage

        probe = tp.render([ChatMessage.system("\ue002"), *messages])
        core = max((line.strip() for line in added.splitlines()), key=len)
        if probe is not None and "\ue002" in probe and core and core not in probe:
            what = " (a default system prompt, replaced when the conversation has a system message)"
    return [TemplateNote("added", None, f"the template added {len(lead):,} tokens of its own before the first "
                                        f"message{what}", len(lead))]  # fmt: skip


def _date_strings(day: _dt.date) -> list[str]:
    forms = ["%d %B %Y", "%d %b %Y", "%B %d, %Y", "%b %d, %Y", "%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y"]
    out = {day.strftime(f) for f in forms}
    out |= {s.replace(day.strftime("%d"), str(day.day), 1) for s in list(out) if day.day < 10}
    return sorted(out, key=len, reverse=True)


def _date(tp, slots, flags, messages, n) -> list[TemplateNote]:
    text = tp.text
    for day in {_dt.date.today(), _dt.datetime.now(_dt.timezone.utc).date()}:
        for form in _date_strings(day):
            pos = text.find(form)
            while pos >= 0:
                i = _token_at(tp, pos)
                if i is not None and flags[i] & TEMPLATE:
                    return [TemplateNote("date", _msg(slots[i], n), f"the template added today's date ({form})"
                                         f"{_where(slots[i], messages, n)}")]  # fmt: skip
                pos = text.find(form, pos + 1)
    return []


def _token_at(tp: TokenizedPrompt, pos: int) -> int | None:
    import bisect

    i = bisect.bisect_right(tp.starts, pos) - 1
    return i if 0 <= i < len(tp.ids) else None


def _msg(slot: int, n: int) -> int | None:
    return slot - 1 if 1 <= slot <= n else None


def _where(slot: int, messages: list, n: int) -> str:
    if slot == 0:
        return ", before the first message"
    if slot > n:
        return ", in the generation prompt"
    return f", in {_name(messages, slot - 1)}'s turn"


def _tools(tp, messages, slots, functions, n) -> list[TemplateNote]:
    bare = tp.render_with(messages, None)
    text = tp.text
    if bare is None or bare == text:
        return []
    lo = _lcp(text, bare)
    hi = len(text) - _lcs(text[lo:], bare[lo:])
    inside = [i for i, (s, e) in enumerate(zip(tp.starts, tp.ends)) if s < hi and e > lo]
    if not inside:
        return []
    owners = Counter(slots[i] for i in inside)
    slot = owners.most_common(1)[0][0]
    return [TemplateNote("tools", _msg(slot, n), f"the template added {len(inside):,} tokens of tool definitions"
                                                 f"{_where(slot, messages, n)}", len(inside))]  # fmt: skip
