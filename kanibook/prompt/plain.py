"""A plain text's tokens, as a model reads it to continue it: the prompt view of a model without a chat template (a
base model), and of any text given as a string (``show_prompt(engine, "Once upon a time")``).

The ids are the model's own tokenizer's over the text, with the special tokens it adds itself (a BOS), exactly what
``score_text`` scores and the quantization lab's answers continue for such a model; llama.cpp's engine tokenizes with
llama.cpp. The BOS is template text before the first message, as in every prompt view.
"""

from __future__ import annotations

from .tokens import SPECIAL, TEMPLATE, _special_tokens, _texts_from_bytes, _texts_one_to_one
from .view import PromptView, Segment

__all__ = ["PLAIN_NOTE", "NO_TEMPLATE_NOTE", "plain_ids", "plain_view"]

PLAIN_NOTE = "a plain text, no chat template applied: its tokens as the model reads them to continue it"
NO_TEMPLATE_NOTE = ("no chat template (a base model?): the conversation's texts as plain text, as the model reads them "
                    "to continue; chat needs a template (load with chat_template=...)")  # fmt: skip


def plain_ids(engine, text: str) -> list[int]:
    """The ids a model reads for a plain text: its tokenizer's, with the special tokens it adds (a BOS)."""
    if callable(getattr(engine, "prompt_ids", None)):  # llama.cpp: its own tokenizer, its own BOS rule
        return list(engine.model.tokenize(text.encode("utf-8"), add_bos=True, special=False))
    return list(engine.tokenizer(text)["input_ids"])


def plain_view(engine, text: str, *, note: str, context: int | None, reserve: int, title: str,
               element_id=None) -> PromptView:  # fmt: skip
    """The prompt view of ``text`` continued as it is (one segment of text, a BOS before it)."""
    from kani import ChatMessage

    tok = engine.tokenizer
    ids = plain_ids(engine, text)
    special_ids, _ = _special_tokens(tok)
    texts = None
    if callable(getattr(engine, "token_bytes", None)):
        body = [i for i in ids if i not in special_ids]
        found = _texts_from_bytes(text, body, engine.token_bytes)
        if found is not None:
            it = iter(found[0])
            texts = [(tok.convert_ids_to_tokens(i) or "") if i in special_ids else next(it) for i in ids]
    elif getattr(tok, "is_fast", False):
        own = tok(text, return_offsets_mapping=True)
        if list(own["input_ids"]) == ids:
            texts = _texts_one_to_one(text, own["offset_mapping"])[0]
            texts = [tok.convert_ids_to_tokens(i) if i in special_ids and not t else t for i, t in zip(ids, texts)]
    if texts is None:
        texts = [tok.decode([i]) for i in ids]
    lead = 0
    while lead < len(ids) and ids[lead] in special_ids:
        lead += 1
    flags = [(SPECIAL | TEMPLATE) if i in special_ids else 0 for i in ids]
    segments, token_segments = [], []
    if lead:
        segments.append(Segment("template", "template (before the messages)", 0, lead))
    preview = text.replace("\n", " ")
    preview = preview if len(preview) <= 80 else preview[:79] + "\u2026"
    own = sum(1 for f in flags[lead:] if not f)
    segments.append(Segment("user", "plain text", lead, len(ids), 0, own, preview))
    token_segments = [0 if lead and p < lead else len(segments) - 1 for p in range(len(ids))]
    return PromptView(
        token_ids=ids, texts=texts, flags=flags, token_segments=token_segments, segments=segments,
        messages=[ChatMessage.user(text)], context_size=context, reply_tokens=reserve, note=note, title=title,
        element_id=element_id,
    )  # fmt: skip
