"""The prompt's tokens and which message each came from, for any template (the logic behind the prompt view).

Tokens: the ids are exactly what ``engine.build_prompt`` returns. The text each token covers comes from the offsets
of that very tokenization where the tokenizer keeps them (a fast tokenizer's ``BatchEncoding``); otherwise the prompt
text is tokenized once with offsets and aligned to the ids (a processor that expanded ``<image>`` into N tokens); with
no text at all, each id is decoded.

Segmentation works on characters of the prompt text, never by knowing a template:

1. *Content*: each message's text is searched for in the prompt. Where a text does not occur exactly once between its
   neighbours' texts (``user``, which the scaffolding contains too), one render of the conversation with a unique
   marker in place of each text locates every text exactly.
2. *Boundaries*: rendering the first ``k`` messages through the same pipeline gives ``P_k + G`` (``G``: the
   generation prompt); its longest common prefix with the whole prompt and their common suffix bound where message
   ``k`` ends. A prefix rendering need not be a strict prefix (templates that rewrite earlier parts): such a rendering
   is ignored, and the content positions clamp the bounds. All renderings share one ``G``, which narrows the bounds
   further. Inside the remaining ambiguous span (e.g. ``<|im_end|>\\n<|im_start|>``, where the end of one turn and the
   start of the next look alike) the cut goes after the last end-of-turn token, else before the last special token,
   else at the last line start.
3. *Few renders*: the scaffolding between two messages' texts repeats (``<|im_end|>\\n<|im_start|>assistant\\n``), so a
   cut learned once is reused for the same scaffolding; a conversation needs a handful of short renders, not one per
   message (no O(n^2) re-rendering or re-tokenizing of prefixes).
4. *Template-only text*: the prompt before the first message's own header (a default system message the template
   adds) and after the last message (the generation prompt) belong to no message.
"""

from __future__ import annotations

import re
import warnings
from collections import UserDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .exceptions import KanibookError

SPECIAL, TEMPLATE = 1, 2  # token flag bits
_PLACEHOLDER_ATTRS = ("image_token_id", "image_token_index", "audio_token_id", "audio_token_index", "video_token_id",
                      "video_token_index")  # fmt: skip
_PLACEHOLDER_TOKENS = ("image_token", "audio_token", "video_token", "boi_token", "eoi_token")


@dataclass
class TokenizedPrompt:
    ids: list[int]
    texts: list[str]  # the prompt text each token covers
    starts: list[int]  # where each token starts in ``text`` (expanded placeholders: where their placeholder starts)
    ends: list[int]
    special: list[bool]
    text: str
    render: Callable[[list], str | None]  # messages -> the pipeline's text for them (None if the template refuses)
    eos_re: re.Pattern | None
    special_re: re.Pattern | None
    placeholder_ids: frozenset[int] = field(default_factory=frozenset)


def tokenize_prompt(engine, messages: list, functions, prompt=None) -> TokenizedPrompt:
    """The ids ``engine.build_prompt(messages, functions)`` returns, with the text each covers.

    :param prompt: What ``build_prompt`` returned for these messages, if it was already called.
    """
    import torch

    tok = engine.tokenizer
    if prompt is None:
        try:
            prompt = engine.build_prompt(messages, functions)
        except Exception as e:  # a template that refuses these roles, an empty conversation, ...
            what = "the conversation is empty" if not messages else "its prompt pipeline refused this conversation"
            first = (str(e).strip().splitlines() or [""])[0]
            raise KanibookError(
                f"The engine could not build this prompt: {what} ({type(e).__name__}: {first}). Pass other messages, "
                "or load the model with a prompt_pipeline= that accepts them."
            ) from e
    text = None
    if isinstance(prompt, str):  # as kani's _get_generate_args does
        text = prompt
        prompt = engine._processor_or_tokenizer(text=prompt, add_special_tokens=False, return_tensors="pt")
    if isinstance(prompt, torch.Tensor):
        ids, encoding = prompt[0].tolist(), None
    elif isinstance(prompt, (dict, UserDict)):
        ids, encoding = prompt["input_ids"][0].tolist(), _encoding_of(prompt)
    else:
        raise KanibookError(
            f"build_prompt returned a {type(prompt).__name__}: expected a str, Tensor or BatchEncoding."
        )

    special_ids, contents = _special_tokens(tok)
    pieces: dict[int, str] = {}

    def piece(i: int) -> str:
        if i not in pieces:
            pieces[i] = contents.get(i) or tok.decode(
                [i], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
        return pieces[i]

    def render(msgs: list) -> str | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = engine.pipeline(msgs, functions)
        except Exception:
            return None
        if isinstance(out, str):
            return out
        if isinstance(out, torch.Tensor):
            return "".join(piece(i) for i in out[0].tolist())
        return None

    if text is None:
        text = render(messages)
    if text is not None and encoding is not None and _offsets_fit(encoding, ids, text, contents):
        texts, starts, ends = _texts_one_to_one(text, encoding.offsets)
    elif text is not None and getattr(tok, "is_fast", False):
        own = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        mapping = _align(ids, own["input_ids"])
        texts, starts, ends = _texts_from_offsets(text, own["offset_mapping"], mapping, ids, piece)
    else:  # no text to point into: decode each id
        texts = [piece(i) for i in ids]
        starts, ends, pos = [], [], 0
        for t in texts:
            starts.append(pos)
            pos += len(t)
            ends.append(pos)
        text = "".join(texts)  # renders of a pipeline that returns tensors are decoded the same way
    eos = _eos_ids(engine, tok)
    return TokenizedPrompt(
        ids=ids,
        texts=texts,
        starts=starts,
        ends=ends,
        special=[i in special_ids for i in ids] if special_ids else [False] * len(ids),
        text=text,
        render=render,
        eos_re=_literal_re(contents.get(i) or tok.convert_ids_to_tokens(i) for i in eos),
        special_re=_literal_re(contents.values()),
        placeholder_ids=_placeholder_ids(engine, tok),
    )


def _encoding_of(prompt):
    try:
        encodings = prompt.encodings
    except (AttributeError, KeyError):
        return None
    return encodings[0] if encodings else None


def _special_tokens(tok) -> tuple[set[int], dict[int, str]]:
    contents = {i: t.content for i, t in getattr(tok, "added_tokens_decoder", {}).items() if t.special}
    for i, t in zip(tok.all_special_ids, tok.all_special_tokens):
        contents.setdefault(i, t)
    return set(contents), contents


def _eos_ids(engine, tok) -> set[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ids = set(engine._get_eos_tokens(return_ids=True))
        except Exception:
            ids = set()
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return ids


def _literal_re(strings) -> re.Pattern | None:
    strings = sorted({s for s in strings if s}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, strings))) if strings else None


def _placeholder_ids(engine, tok) -> frozenset[int]:
    """Token ids that a processor expands into runs (image / audio / video placeholders)."""
    found = set()
    config = getattr(getattr(engine, "model", None), "config", None)
    for obj in (engine._processor_or_tokenizer, tok, config):
        for name in _PLACEHOLDER_ATTRS:
            value = getattr(obj, name, None) if obj is not None else None
            if isinstance(value, int) and value >= 0:
                found.add(value)
        for name in _PLACEHOLDER_TOKENS:
            value = getattr(obj, name, None) if obj is not None else None
            if isinstance(value, str) and value:
                i = tok.convert_tokens_to_ids(value)
                if isinstance(i, int) and i != tok.unk_token_id:
                    found.add(i)
    return frozenset(found)


def _offsets_fit(encoding, ids: list[int], text: str, contents: dict[int, str]) -> bool:
    """Whether ``encoding`` is the tokenization of ``text`` (cheap checks: ids, bounds, special tokens in place)."""
    offsets = encoding.offsets
    if list(encoding.ids) != ids or (offsets and offsets[-1][1] > len(text)):
        return False
    for i, token_id in enumerate(ids):
        content = contents.get(token_id)
        if content is not None:
            s, e = offsets[i]
            if text[s:e] != content:
                return False
    return True


def _align(ids: list[int], own: list[int]) -> list[int | None]:
    """For each id, the index of the token of ``own`` it corresponds to (runs a processor expanded map to one)."""
    if ids == own:
        return list(range(len(ids)))
    out, j = [], 0
    for x in ids:
        if j < len(own) and own[j] == x:
            out.append(j)
            j += 1
        elif j > 0 and own[j - 1] == x:
            out.append(j - 1)  # an expansion of the placeholder just passed
        else:
            break
    else:
        return out
    import difflib

    out = [None] * len(ids)
    for tag, i1, i2, j1, _ in difflib.SequenceMatcher(None, ids, own, autojunk=False).get_opcodes():
        for k in range(i1, i2):
            if tag == "equal":
                out[k] = j1 + k - i1
            elif own:
                out[k] = min(j1, len(own) - 1)
    return out


def _texts_from_offsets(text, offsets, mapping, ids, piece) -> tuple[list[str], list[int], list[int]]:
    """Each token's text (the prompt characters from the end of the previous token to the end of this one), start
    and end."""
    if mapping == list(range(len(ids))):
        return _texts_one_to_one(text, offsets)
    texts, starts, ends = [], [], []
    cursor, last = 0, None
    for i, j in enumerate(mapping):
        if j is None or j == last:  # inserted by a processor, or a further copy of an expanded placeholder
            texts.append(piece(ids[i]))
            starts.append(starts[-1] if starts else 0)
            ends.append(starts[-1])
            continue
        s, e = offsets[j]
        texts.append(text[cursor:e] if e > cursor else "")
        starts.append(max(s, cursor) if e > cursor else s)
        ends.append(max(e, starts[-1]))
        cursor, last = max(cursor, e), j
    if texts and cursor < len(text):
        texts[-1] += text[cursor:]
    return texts, starts, ends


def _texts_one_to_one(text: str, offsets) -> tuple[list[str], list[int], list[int]]:
    """:func:`_texts_from_offsets` when every id has its own offsets (the common case), without a Python loop."""
    import numpy as np

    if not len(offsets):
        return [], [], []
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    s, e = off[:, 0], off[:, 1]
    after = np.maximum.accumulate(e)
    before = np.concatenate(([0], after[:-1]))
    starts = np.where(e > before, np.maximum(s, before), s)
    texts = [text[a:b] for a, b in zip(before.tolist(), after.tolist())]
    if after[-1] < len(text):
        texts[-1] += text[int(after[-1]) :]
    return texts, starts.tolist(), np.maximum(e, starts).tolist()


# ---------------------------------------------------------------- segmentation


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
    return [p for p in message.parts if isinstance(p, str) and p]


def _anchors(text: str, messages: list, render) -> list[tuple[int, int] | None]:
    """Where each message's own text is in the prompt.

    A forward search is enough when every text occurs exactly once between its neighbours' texts (the usual case);
    otherwise (a text like ``user`` that the scaffolding contains too) one render with a unique marker in place of
    each text settles it.
    """
    found = _anchors_by_search(text, messages)
    if _unambiguous(text, messages, found):
        return found
    marked = []
    for k, m in enumerate(messages):
        strs = _strings(m)
        if not strs:
            marked.append(m)
            continue
        parts, n = [], 0
        for p in m.parts:
            if isinstance(p, str) and p:
                p, n = f"\ue000{k}.{n}\ue001", n + 1
            parts.append(p)
        marked.append(m.copy_with(content=parts[0]) if isinstance(m.content, str) else m.copy_with(parts=parts))
    return _anchors_from_markers(text, messages, render(marked)) or found


def _unambiguous(text: str, messages: list, found: list) -> bool:
    """Whether each message's single text occurs once only between the texts found for its neighbours."""
    ends = [0] + [span[1] if span else None for span in found]
    starts = [span[0] if span else None for span in found] + [len(text)]
    for k, (m, span) in enumerate(zip(messages, found)):
        strs = _strings(m)
        if len(strs) > 1 or (strs and span is None):
            return False
        if span is None:
            continue
        lo = next(e for e in reversed(ends[: k + 1]) if e is not None)
        hi = next(s for s in starts[k + 1 :] if s is not None)
        if text.count(text[span[0] : span[1]], lo, hi) != 1:
            return False
    return True


def _anchors_from_markers(text, messages, probe) -> list | None:
    if probe is None:
        return None
    out, cursor, shift = [], 0, 0  # shift: real position - marked position
    for k, m in enumerate(messages):
        span = None
        for n, real in enumerate(_strings(m)):
            marker = f"\ue000{k}.{n}\ue001"
            pos = probe.find(marker, cursor)
            if pos < 0:
                return None
            at = pos + shift
            for variant in (real, real.strip()):
                if text.startswith(variant, at):
                    break
            else:
                return None
            span = (span[0] if span else at, at + len(variant))
            cursor, shift = pos + len(marker), shift + len(variant) - len(marker)
        out.append(span)
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


def segment(text: str, messages: list, render, eos_re, special_re):
    """-> ``bounds`` (``bounds[k]``: where message k's part of the prompt starts; ``bounds[n]``: where the generation
    prompt starts; before ``bounds[0]``: template text) and each message's own-text span ``(start, end)``."""
    n, size = len(messages), len(text)
    if n == 0:
        return [size], []
    anchors = _anchors(text, messages, render)
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


def assign(tp: TokenizedPrompt, bounds: list[int], spans: list[tuple[int, int]]):
    """-> per token: its slot (0: template text before the first message, k+1: message k, n+1: the generation
    prompt) and its flags (special, template). A token across a boundary goes where most of it is."""
    import numpy as np

    n = len(spans)
    starts, ends = np.asarray(tp.starts, dtype=np.float64), np.asarray(tp.ends, dtype=np.float64)
    mids = np.where(ends > starts, (starts + ends) / 2, starts)
    if n:
        slots = np.maximum.accumulate(np.searchsorted(np.asarray(bounds, dtype=np.float64), mids, side="right"))
    else:
        slots = np.zeros(len(mids), dtype=np.int64)
    span = np.asarray([(-1, -1), *spans, (-1, -1)], dtype=np.float64)[slots]
    own = (span[:, 0] <= mids) & (mids < span[:, 1])
    if tp.placeholder_ids:
        own |= np.isin(np.asarray(tp.ids), list(tp.placeholder_ids)) & (slots >= 1) & (slots <= n)
    flags = np.where(own, 0, TEMPLATE) | np.where(np.asarray(tp.special, dtype=bool), SPECIAL, 0)
    return slots.tolist(), flags.tolist()
