"""Where each turn of a template that keeps the conversation's order begins and ends, for any template.

(:mod:`kanibook.prompt.layout` decides which path a prompt takes; templates that move, drop or repeat messages are
laid out there from the regions alone.) Segmentation works on characters of the prompt text, never by knowing a
template:

1. *Content*: where each message's text is, from the one render with a unique marker in place of each text
   (:mod:`kanibook.prompt.regions`: also what is left of a text the template rewrote); where that render cannot be
   matched, each text is searched for in the prompt.
2. *Boundaries*: rendering the first ``k`` messages through the same pipeline gives ``P_k + G`` (``G``: the
   generation prompt); its longest common prefix with the whole prompt and their common suffix bound where message
   ``k`` ends. A prefix rendering need not be a strict prefix (templates that rewrite earlier parts): such a rendering
   is ignored, and the content positions clamp the bounds. All renderings share one ``G``, which narrows the bounds
   further. Inside the remaining ambiguous span (e.g. ``<|im_end|>\\n<|im_start|>``, where the end of one turn and the
   start of the next look alike) the cut goes after the last end-of-turn token (the eos, and the special tokens this
   template puts right after message texts: ``<end_of_turn>``, ``<|eot_id|>``, ``<|end|>``...), else before the last special token,
   else at the last line start.
3. *Few renders*: the scaffolding between two messages' texts repeats (``<|im_end|>\\n<|im_start|>assistant\\n``), so a
   cut learned once is reused for the same scaffolding; a conversation needs a handful of short renders, not one per
   message (no O(n^2) re-rendering or re-tokenizing of prefixes).
4. *Template-only text*: the prompt before the first message's own header (a default system message the template
   adds) and after the last message (the generation prompt) belong to no message.
"""

from __future__ import annotations


from .regions import Region, find_regions, strings

__all__ = ["segment", "in_order", "anchors_of"]


def _lcp(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over C-speed slice comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _lcs(a: str, b: str) -> int:
    """Length of the longest common suffix."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _cut(s: str, lo: int, hi: int, eos_re, special_re, *, hi_ok: bool = True) -> int:
    """Where, in ``s[lo:hi]``, one turn ends and the next begins: after the last end-of-turn token (and the whitespace
    after it), else before the last special token, else at the last line start, else at ``lo``.

    :param hi_ok: Whether ``hi`` itself may be the cut by the line-start rule (not when ``hi`` is just where the next
        message's text starts: a header is expected before it).
    """
    if hi <= lo:
        return lo
    region = s[lo:hi]
    ends = [m.end() for m in eos_re.finditer(region)] if eos_re else []
    if ends:
        k = ends[-1]
        while k < len(region) and region[k] in " \t\r\n":
            k += 1
        return lo + k
    starts = [m.start() for m in special_re.finditer(region)] if special_re else []
    if starts:
        return lo + starts[-1]
    if hi_ok and s[hi - 1] == "\n":
        return hi
    k = region.rfind("\n", 0, len(region) - 1)
    return lo + k + 1 if k >= 0 else lo


def _strings(message) -> list[str]:
    return strings(message)


def in_order(regions: list[Region], messages: list) -> bool:
    """Whether every text part of every message is in the prompt exactly once, in the conversation's order."""
    want = [(k, n) for k, m in enumerate(messages) for n in range(len(strings(m)))]
    return [(r.message, r.part) for r in regions] == want


def _anchors(text: str, messages: list, render) -> list[tuple[int, int] | None]:
    """Where each message's own text is in the prompt (from the marked rendering; else by searching for it)."""
    regions = find_regions(text, messages, render)
    if regions is not None and in_order(regions, messages):
        return anchors_of(regions, len(messages))
    return _anchors_by_search(text, messages)


def anchors_of(regions: list[Region], n: int) -> list[tuple[int, int] | None]:
    out: list[tuple[int, int] | None] = [None] * n
    for r in regions:
        span = out[r.message]
        out[r.message] = (r.start, r.end) if span is None else (min(span[0], r.start), max(span[1], r.end))
    return out


def _anchors_by_search(text, messages) -> list:
    out, cursor = [], 0
    for m in messages:
        span, cur = None, cursor
        for real in _strings(m):
            for variant in (real, real.strip()):
                pos = text.find(variant, cur) if variant else -1
                if pos >= 0:
                    break
            if pos < 0:
                span = None
                break
            span, cur = (span[0] if span else pos, pos + len(variant)), pos + len(variant)
        out.append(span)
        if span:
            cursor = span[1]
    return out


def segment(text: str, messages: list, render, eos_re, special_re, anchors=None):
    """-> ``bounds`` (``bounds[k]``: where message k's part of the prompt starts; ``bounds[n]``: where the generation
    prompt starts; before ``bounds[0]``: template text) and each message's own-text span ``(start, end)``."""
    n, size = len(messages), len(text)
    if n == 0:
        return [size], []
    anchors = anchors if anchors is not None else _anchors(text, messages, render)
    lower, upper, keys = [0] * (n + 1), [size] * (n + 1), [None] * (n + 1)
    for k in range(n - 1, -1, -1):
        upper[k] = anchors[k][0] if anchors[k] else upper[k + 1]
    for j in range(1, n):
        lower[j] = max(lower[j - 1], anchors[j - 1][1] if anchors[j - 1] else 0)
        if anchors[j - 1] and anchors[j]:
            keys[j] = (messages[j - 1].role, messages[j].role, text[anchors[j - 1][1] : anchors[j][0]])
    # 1. render the prefixes needed: one per distinct scaffolding between two messages, and the empty conversation
    spans: dict[int, tuple[int, int, int]] = {}  # j -> (length of the rendering, lo, hi) where boundary j can be
    seen = set()
    for j in range(n):
        if j and keys[j] is not None:
            if keys[j] in seen:
                continue
            seen.add(keys[j])
        t = render(messages[:j])
        if t is None:
            continue
        hi = min(max(lower[j], upper[j]), _lcp(t, text))
        lo = max(lower[j], len(t) - _lcs(t, text))
        if lo > hi:  # not ``P_j + G`` (the template rewrote what came before): this rendering says nothing here
            continue
        spans[j] = (len(t), lo, hi)
    # 2. every rendering is ``P_j + G`` with the same generation prompt G: intersect what each allows for len(G)
    g_lo = max((length - hi for length, lo, hi in spans.values()), default=0)
    g_hi = min((length - lo for length, lo, hi in spans.values()), default=size)
    consistent = bool(spans) and g_lo <= g_hi
    if consistent:
        spans = {j: (ln, max(lo, min(ln - g_hi, hi)), min(hi, max(ln - g_lo, lo))) for j, (ln, lo, hi) in spans.items()}
    # 3. the cuts, reusing one learned per distinct scaffolding
    bounds = [0] * (n + 1)
    learned: dict[tuple, int] = {}
    for j in range(1, n):
        prev = max(bounds[j - 1], lower[j])
        top = max(prev, upper[j])
        if keys[j] in learned:
            bounds[j] = min(max(prev, anchors[j - 1][1] + learned[keys[j]]), top)
            continue
        if j in spans:
            lo = max(spans[j][1], prev)
            bounds[j] = _cut(text, lo, max(lo, min(spans[j][2], top)), eos_re, special_re)
        else:
            bounds[j] = _cut(text, prev, top, eos_re, special_re, hi_ok=False)
        if keys[j] is not None:
            learned[keys[j]] = bounds[j] - anchors[j - 1][1]
    headers = {}
    for k in range(1, n):
        if anchors[k]:
            headers.setdefault(messages[k].role, text[bounds[k] : anchors[k][0]])
    # 4. the generation prompt
    tail = max(bounds[n - 1], anchors[n - 1][1] if anchors[n - 1] else 0)
    header = headers.get(_assistant_role())
    if consistent:
        lo = max(tail, size - g_hi)
        bounds[n] = _cut(text, lo, max(lo, size - g_lo), eos_re, special_re)
    elif header and text.endswith(header) and size - len(header) >= tail:
        bounds[n] = size - len(header)
    else:
        bounds[n] = _cut(text, tail, size, eos_re, special_re, hi_ok=False)
    # 5. template text before the first message (e.g. a default system message the template adds)
    first = anchors[0][0] if anchors[0] else bounds[1 if n > 1 else n]
    b0 = 0
    if 0 in spans:
        hi = min(spans[0][2], first)
        b0 = _cut(text, min(spans[0][1], hi), hi, eos_re, special_re)
    if anchors[0]:
        header = headers.get(messages[0].role)
        if header is None:  # learn this role's header from the message rendered twice
            header = _probe_header(messages[0], text[anchors[0][0] : anchors[0][1]], render, eos_re, special_re)
        before = text[b0:first]
        if header and len(before) > len(header) and before.endswith(header):
            b0 = first - len(header)
        elif header is None and eos_re is not None:  # nothing learned: a turn that ends before it is template text
            ends = [m.end() for m in eos_re.finditer(before)]
            if ends:
                b0 = _cut(text, b0 + ends[-1], first, None, None, hi_ok=False)
    bounds[0] = b0
    return bounds, _content_spans(text, messages, anchors, bounds, headers)


def _assistant_role():
    from kani import ChatRole

    return ChatRole.ASSISTANT


def _probe_header(message, own: str, render, eos_re, special_re) -> str | None:
    u = render([message, message])
    if u is None or not own:
        return None
    p1 = u.find(own)
    p2 = u.find(own, p1 + len(own)) if p1 >= 0 else -1
    if p2 < 0:
        return None
    return u[_cut(u, p1 + len(own), p2, eos_re, special_re) : p2]


def _content_spans(text, messages, anchors, bounds, headers) -> list[tuple[int, int]]:
    footers = {}
    for k in range(len(messages)):
        if anchors[k]:
            footers.setdefault(messages[k].role, text[anchors[k][1] : bounds[k + 1]])
    spans = []
    for k, m in enumerate(messages):
        s, e = bounds[k], bounds[k + 1]
        if anchors[k]:
            spans.append((min(max(anchors[k][0], s), e), min(max(anchors[k][1], s), e)))
            continue
        own = text[s:e]
        head, foot = headers.get(m.role, ""), footers.get(m.role, "")
        cs = s + len(head) if head and own.startswith(head) else s
        ce = e - len(foot) if foot and own.endswith(foot) and e - len(foot) >= cs else e
        spans.append((cs, ce))
    return spans
