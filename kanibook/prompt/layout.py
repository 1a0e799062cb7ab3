"""Who owns each character of the prompt, for templates that keep the conversation's order and for those that do not.

A template that renders every message's text once, in order (ChatML, Llama, Gemma, Phi; also with a system message
merged into the first user turn, reasoning stripped from earlier replies, a default system block or tool definitions
added) is cut into consecutive turns by :func:`kanibook.prompt.segment.segment`, its anchors being where the marked
rendering (:mod:`kanibook.prompt.regions`) found each text. A template that moves a text after a later message's
(Mistral-Nemo style: the system text inside the last user turn), drops one or renders one twice is laid out from the
regions themselves: each region is its message's own text; the template text between two regions is cut where a turn
ends (after an end-of-turn marker this template puts after message texts, else before a special token, else at a line
start), the first part going to the turn before and the rest to the turn after.

A system text with no special token between it and a neighbouring message's text (in a template that otherwise uses
special tokens) shares that message's turn: the turn's template text goes to that message.

A BOS token that starts the prompt is template text before the first message, always (whatever the first message's
turn looks like), so that what belongs to a message is only what that message caused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .regions import Region, end_markers, find_regions
from .segment import _anchors_by_search, _cut, anchors_of, in_order, segment
from .tokens import SPECIAL, TEMPLATE, TokenizedPrompt

__all__ = ["Layout", "build_layout", "assign"]


@dataclass
class Layout:
    """Character intervals of the prompt and their slots (0: template text before the first message, k+1: message
    k, n+1: the generation prompt), and the message texts' own spans."""

    starts: list[int]  # interval starts, ascending; interval i runs to starts[i+1]
    slots: list[int]
    own: list[tuple[int, int, int]]  # (start, end, slot), ascending
    regions: list[Region] | None  # where each text is (None: the marked rendering did not match)
    merged: dict[int, int] = field(default_factory=dict)  # system message -> the message whose turn holds its text
    in_order: bool = True


def build_layout(tp: TokenizedPrompt, messages: list) -> Layout:
    """Lay out the prompt ``tp`` of ``messages`` (one marked render, plus the few prefix renders of ordered ones)."""
    text, n = tp.text, len(messages)
    regions = find_regions(text, messages, tp.render) if n else []
    end_re = _with(tp.eos_re, end_markers(text, regions or [], tp.special_re))
    ordered = regions is None or in_order(regions, messages)
    if ordered:
        anchors = anchors_of(regions, n) if regions is not None else _anchors_by_search(text, messages)
        bounds, spans = segment(text, messages, tp.render, end_re, tp.special_re, anchors=anchors)
        lay = Layout([0, *bounds], list(range(n + 2)), [(s, e, k + 1) for k, (s, e) in enumerate(spans)], regions)
    else:
        lay = _unordered(text, n, regions, end_re, tp.special_re)
    found = regions if regions is not None else [Region(a[0], a[1], k, 0) for k, a in enumerate(anchors) if a]
    lay.merged = _merged(text, messages, found, any(tp.special), tp.special_re)
    if ordered and lay.merged:
        _split_merged(lay)
    if not ordered:
        _give_turns(lay)
    lay.in_order = ordered and not lay.merged
    return lay


def _split_merged(lay: Layout) -> None:
    """In an ordered layout, a merged system message keeps its own text; the rest of its part of the prompt (the
    turn's header, the separator) goes to the message whose turn it is."""
    own = {slot: (s, e) for s, e, slot in lay.own}
    starts, slots = [], []
    for i, (start, slot) in enumerate(zip(lay.starts, lay.slots)):
        k = slot - 1
        if k not in lay.merged or slot not in own:
            starts.append(start)
            slots.append(slot)
            continue
        end = lay.starts[i + 1] if i + 1 < len(lay.starts) else None
        s, e = own[slot]
        owner = lay.merged[k] + 1
        starts += [start, s, e]
        slots += [owner, slot, owner]
        if end is not None and e > end:  # (the own span never passes the part's end; kept ascending regardless)
            starts[-1] = end
    lay.starts, lay.slots = starts, slots


def _with(eos_re, learned: set[str]):
    if not learned:
        return eos_re
    pattern = "|".join(re.escape(s) for s in sorted(learned, key=len, reverse=True))
    return re.compile(f"{eos_re.pattern}|{pattern}" if eos_re is not None else pattern)


def _unordered(text: str, n: int, regions: list[Region], end_re, special_re) -> Layout:
    """Regions in prompt order; the template text between two of them cut where one turn ends."""
    if not regions:
        return Layout([0], [0], [], regions)
    starts, slots, own = [0], [0], []
    first = regions[0]
    cut = _cut(text, 0, first.start, end_re, special_re, hi_ok=False)
    starts.append(cut)
    slots.append(first.message + 1)
    for i, r in enumerate(regions):
        own.append((r.start, r.end, r.message + 1))
        starts += [r.start, r.end]
        slots += [-(r.message + 1), r.message + 1]  # negative: the text itself (made positive below)
        nxt = regions[i + 1] if i + 1 < len(regions) else None
        if nxt is None:
            cut = _cut(text, r.end, len(text), end_re, special_re, hi_ok=False)
            starts.append(cut)
            slots.append(n + 1)
        elif nxt.message != r.message:
            cut = _cut(text, r.end, nxt.start, end_re, special_re, hi_ok=False)
            starts.append(cut)
            slots.append(nxt.message + 1)
    return Layout(starts, slots, own, regions, in_order=False)  # slots made positive by _give_turns


def _merged(text: str, messages: list, regions: list[Region], uses_specials: bool, special_re) -> dict[int, int]:
    """System texts that share a neighbouring message's turn (no special token between the two texts)."""
    if not uses_specials or special_re is None:
        return {}
    out: dict[int, int] = {}
    ordered = sorted(regions, key=lambda r: r.start)
    for a, b in zip(ordered, ordered[1:]):
        if a.message == b.message or special_re.search(text, a.end, b.start) is not None:
            continue
        ra, rb = messages[a.message].role.value, messages[b.message].role.value
        if ra == "system" and rb != "system":
            out.setdefault(a.message, b.message)
        elif rb == "system" and ra != "system":
            out.setdefault(b.message, a.message)
    return out


def _give_turns(lay: Layout) -> None:
    """In an unordered layout, the template text around a merged system text goes to the message whose turn it is."""
    moved = {k + 1: owner + 1 for k, owner in lay.merged.items()}
    lay.slots = [-s if s < 0 else moved.get(s, s) for s in lay.slots]


def _bos_starts_every_turn(tp: TokenizedPrompt, slots) -> bool:
    """Whether the BOS token is this template's turn marker (ChatML models whose BOS is ``<|im_start|>``): it starts
    every later message's part of the prompt too. Then the first one is the first message's header, not a BOS."""
    firsts = {}
    for pos, slot in enumerate(slots.tolist() if hasattr(slots, "tolist") else slots):
        firsts.setdefault(slot, pos)
    later = [pos for slot, pos in firsts.items() if slot not in (0, slots[0]) and pos > 0]
    return bool(later) and all(tp.ids[pos] == tp.bos_id for pos in later)


def assign(tp: TokenizedPrompt, lay: Layout, n: int) -> tuple[list[int], list[int]]:
    """-> per token: its slot and its flags (special, template). A token goes where its middle character is."""
    import numpy as np

    starts, ends = np.asarray(tp.starts, dtype=np.float64), np.asarray(tp.ends, dtype=np.float64)
    mids = np.where(ends > starts, (starts + ends) / 2, starts)
    at = np.clip(np.searchsorted(np.asarray(lay.starts, dtype=np.float64), mids, side="right") - 1, 0, None)
    slots = np.asarray(lay.slots, dtype=np.int64)[at]
    if lay.in_order:
        slots = np.maximum.accumulate(slots) if len(slots) else slots
    if len(slots) and tp.bos_id is not None and tp.ids[0] == tp.bos_id and not _bos_starts_every_turn(tp, slots):
        slots[0] = 0  # the BOS: template text before the first message
    if lay.own:
        own_arr = np.asarray(lay.own, dtype=np.float64)
        j = np.searchsorted(own_arr[:, 0], mids, side="right") - 1
        jj = np.clip(j, 0, None)
        own = (j >= 0) & (mids < own_arr[jj, 1]) & (own_arr[jj, 2] == slots)
    else:
        own = np.zeros(len(mids), dtype=bool)
    if tp.placeholder_ids:
        own |= np.isin(np.asarray(tp.ids), list(tp.placeholder_ids)) & (slots >= 1) & (slots <= n)
    flags = np.where(own, 0, TEMPLATE) | np.where(np.asarray(tp.special, dtype=bool), SPECIAL, 0)
    return slots.tolist(), flags.tolist()
