"""The prompt's tokens and which message each came from, for any template (the logic behind the prompt view).

Tokens: the ids are exactly what ``engine.build_prompt`` returns. The text each token covers comes from the offsets
of that very tokenization where the tokenizer keeps them (a fast tokenizer's ``BatchEncoding``); otherwise the prompt
text is tokenized once with offsets and aligned to the ids (a processor that expanded ``<image>`` into N tokens); with
no text at all, each id is decoded.

Segmentation (which message each token came from) is :mod:`kanibook.prompt.segment`.
"""

from __future__ import annotations

import re
import warnings
from collections import UserDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..exceptions import KanibookError

SPECIAL, TEMPLATE = 1, 2  # token flag bits
__all__ = ["SPECIAL", "TEMPLATE", "TokenizedPrompt", "tokenize_prompt"]
_PLACEHOLDER_ATTRS = ("image_token_id", "image_token_index", "audio_token_id", "audio_token_index", "video_token_id",
                      "video_token_index")  # fmt: skip
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids", "position_ids")
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
    render_with: Callable[[list, list | None], str | None]  # the same with other functions
    eos_re: re.Pattern | None
    special_re: re.Pattern | None
    placeholder_ids: frozenset[int] = field(default_factory=frozenset)
    #: The processor's media inputs beside the ids (``pixel_values``, ``input_features``, ...) -> their shapes.
    media_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: The tokenizer's beginning-of-sequence id (None: it has none).
    bos_id: int | None = None


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
            from .refusal import refusal_error

            raise refusal_error(engine, messages, functions, e) from None
    text, pieces_of = None, None
    own_ids = getattr(engine, "prompt_ids", None)  # an engine with its own tokenizer (llama.cpp): its very ids
    if isinstance(prompt, str) and callable(own_ids):
        text = prompt
        ids = own_ids(prompt)
        prompt, pieces_of = torch.tensor([ids], dtype=torch.long), engine.token_bytes
    elif isinstance(prompt, str):  # as kani's _get_generate_args does
        text = prompt
        prompt = engine._processor_or_tokenizer(text=prompt, add_special_tokens=False, return_tensors="pt")
    media_shapes: dict[str, tuple[int, ...]] = {}
    if isinstance(prompt, torch.Tensor):
        ids, encoding = prompt[0].tolist(), None
    elif isinstance(prompt, (dict, UserDict)):
        ids, encoding = prompt["input_ids"][0].tolist(), _encoding_of(prompt)
        media_shapes = {
            k: tuple(v.shape) for k, v in prompt.items()
            if k not in _TEXT_INPUTS and isinstance(v, torch.Tensor) and v.dim() >= 2
        }  # fmt: skip
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
        return render_with(msgs, functions)

    def render_with(msgs: list, fns) -> str | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = engine.pipeline(msgs, fns)
        except Exception:
            return None
        if isinstance(out, str):
            return out
        if isinstance(out, torch.Tensor):
            return "".join(piece(i) for i in out[0].tolist())
        return None

    if text is None:
        text = render(messages)
    by_bytes = _texts_from_bytes(text, ids, pieces_of) if pieces_of is not None and text is not None else None
    if by_bytes is not None:
        texts, starts, ends = by_bytes
    elif text is not None and encoding is not None and _offsets_fit(encoding, ids, text, contents):
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
        render_with=render_with,
        eos_re=_literal_re(contents.get(i) or tok.convert_ids_to_tokens(i) for i in eos),
        special_re=_literal_re(contents.values()),
        placeholder_ids=_placeholder_ids(engine, tok),
        media_shapes=media_shapes,
        bos_id=getattr(tok, "bos_token_id", None),
    )


def _texts_from_bytes(text: str, ids: list[int], pieces_of) -> tuple[list[str], list[int], list[int]] | None:
    """Each token's text from the bytes it stands for (an engine with its own tokenizer), when they spell ``text``
    exactly; a character split over several tokens belongs to the first of them (the others cover ``""``), as in a
    Hugging Face tokenizer's offsets, so that the two roads' prompts compare token by token."""
    data = text.encode("utf-8")
    ends_b, pos = [], 0
    for i in ids:
        pos += len(pieces_of(i))
        ends_b.append(pos)
    if pos != len(data) or b"".join(pieces_of(i) for i in ids) != data:
        return None
    char_at = [0] * (len(data) + 1)  # byte offset -> characters up to it (a character begun counts whole)
    b = 0
    for c, ch in enumerate(text):
        n = len(ch.encode("utf-8"))
        for k in range(1, n + 1):
            char_at[b + k] = c + 1
        b += n
    texts, starts, ends, prev = [], [], [], 0
    for e in ends_b:
        end = char_at[e]
        texts.append(text[prev:end])
        starts.append(prev)
        ends.append(end)
        prev = end
    return texts, starts, ends


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
    """For each id, the index of the same token in ``own`` (the text's own tokenization), or None for a token that a
    processor inserted or put in place of others (an image placeholder expanded into ``\\n\\n<boi>`` + N image
    tokens + ``<eoi>\\n\\n``): such a token shows its own id's text, never a neighbour's."""
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

    out: list[int | None] = [None] * len(ids)  # None: not in the text's own tokenization (inserted or replaced)
    for tag, i1, i2, j1, _ in difflib.SequenceMatcher(None, ids, own, autojunk=False).get_opcodes():
        if tag == "equal":
            for k in range(i1, i2):
                out[k] = j1 + k - i1
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
            starts.append(cursor)
            ends.append(cursor)
            continue
        if j > (-1 if last is None else last) + 1:  # the text's own tokens in between were replaced: not shown
            cursor = max(cursor, offsets[j][0])
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
