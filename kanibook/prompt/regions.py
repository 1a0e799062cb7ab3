"""Where the template put each message's text: found by rendering the conversation once with a unique marker in place
of each text, then matching the marked rendering's template text against the real prompt.

This sees what the template did without knowing it: a text placed after a later message's text (a system message
moved into the last user turn), a text rendered twice or not at all (dropped), and a text the template changed
(reasoning stripped from earlier assistant replies: the region between the surrounding template text is what is left
of it). Where the marked rendering cannot be matched (a template whose own text depends on the message text in other
ways), :func:`find_regions` returns None and the caller falls back to searching for each text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Region", "find_regions", "strings", "marked_messages", "end_markers"]

_MARK = re.compile("\ue000(\\d+)\\.(\\d+)\ue001")


@dataclass(frozen=True)
class Region:
    """Message ``message``'s ``part``-th text, rendered at ``text[start:end]`` of the prompt."""

    start: int
    end: int
    message: int
    part: int


def strings(message) -> list[str]:
    """A message's text parts (what the template may render as the message's own text)."""
    return [p for p in message.parts if isinstance(p, str) and p]


def marked_messages(messages: list) -> list:
    """The messages with each text part replaced by a unique marker (other parts and tool calls kept)."""
    marked = []
    for k, m in enumerate(messages):
        if not strings(m):
            marked.append(m)
            continue
        parts, n = [], 0
        for p in m.parts:
            if isinstance(p, str) and p:
                p, n = f"\ue000{k}.{n}\ue001", n + 1
            parts.append(p)
        marked.append(m.copy_with(content=parts[0]) if isinstance(m.content, str) else m.copy_with(parts=parts))
    return marked


def find_regions(text: str, messages: list, render) -> list[Region] | None:
    """Every place a message's text is in the prompt, in prompt order; None if the marked rendering does not match.

    :param text: The prompt text.
    :param messages: The conversation.
    :param render: messages -> the pipeline's text for them (None if the template refuses).
    """
    if not any(strings(m) for m in messages):
        return []
    probe = render(marked_messages(messages))
    if probe is None:
        return None
    pieces = _MARK.split(probe)
    if not text.startswith(pieces[0]):
        return None
    texts = [strings(m) for m in messages]
    cursor, out = len(pieces[0]), []
    count = (len(pieces) - 1) // 3
    for i in range(count):
        k, n, after = int(pieces[1 + 3 * i]), int(pieces[2 + 3 * i]), pieces[3 + 3 * i]
        if k >= len(texts) or n >= len(texts[k]):
            return None
        if i == count - 1:
            end = len(text) - len(after)
            if end < cursor or not text.endswith(after):
                return None
        else:
            end = _region_end(text, cursor, texts[k][n], after)
            if end is None:
                return None
        out.append(Region(cursor, end, k, n))
        cursor = end + len(after)
    return out


def _region_end(text: str, cursor: int, real: str, after: str) -> int | None:
    """Where the region that starts at ``cursor`` ends: it is followed by ``after`` (the template's own text up to the
    next marker) and is the message text itself, or what the template left of it."""
    for variant in (real, real.strip()):
        end = cursor + len(variant)
        if text.startswith(variant, cursor) and text.startswith(after, end):
            return end
    if not after:  # two texts back to back: the longest start that is part of the message text
        lo, hi = 0, min(len(real), len(text) - cursor)
        while lo < hi:  # a prefix of a substring is a substring: monotone, so bisect
            mid = (lo + hi + 1) // 2
            if text[cursor : cursor + mid] in real:
                lo = mid
            else:
                hi = mid - 1
        return cursor + lo
    first, q = None, text.find(after, cursor)
    for _ in range(64):
        if q < 0:
            break
        first = q if first is None else first
        if text[cursor:q].strip() in real:
            return q
        q = text.find(after, q + 1)
    return first


def end_markers(text: str, regions: list[Region], special_re) -> set[str]:
    """The special tokens that directly follow a message's text (after whitespace) and never directly precede one: how
    this template ends a turn (``<|im_end|>``, ``<end_of_turn>``, ``<|eot_id|>``, ``<|end|>``...), learned from its
    output, not from names. (A token that also comes right before a message's text, like ``<|User|>`` after a
    system text rendered bare, starts a turn.)"""
    found: set[str] = set()
    if special_re is None:
        return found
    starts: set[str] = set()
    for r in regions:
        pos = r.end
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        m = special_re.match(text, pos)
        if m:
            found.add(m.group())
        head = text[max(0, r.start - 64) : r.start].rstrip(" \t\r\n")
        before = [x.group() for x in special_re.finditer(head) if x.end() == len(head)]
        starts.update(before)
    return found - starts
