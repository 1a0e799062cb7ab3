"""The lab's answers and token-level data: how each setting answers a prompt (a chat turn, or, for a model without a
chat template, the prompt as plain text to continue), each answer split where it leaves the reference's, and the
reference text's tokens with each position's top predictions, as plain data for the report (text, never ids alone)."""

from __future__ import annotations

import math

__all__ = ["PLAIN_ANSWERS_NOTE", "answer_stream", "answer_table", "answers_note", "token_texts", "top_tokens"]

PLAIN_ANSWERS_NOTE = ("no chat template (a base model?): each prompt was given as plain text to continue, and the "
                      "answers are the model's continuations")  # fmt: skip


def answer_stream(engine, prompt: str, max_new_tokens: int):
    """The greedy answer's stream: a chat turn, or (a model without a chat template) the prompt continued as text."""
    if getattr(engine, "has_chat_template", True) is False:
        from ..prompt.plain import plain_ids

        return engine.stream_from_ids(plain_ids(engine, prompt), max_new_tokens=max_new_tokens, do_sample=False)
    from kani import ChatMessage

    return engine.stream([ChatMessage.user(prompt)], max_new_tokens=max_new_tokens, do_sample=False)


def answers_note(engine) -> str | None:
    """What the report says about how this engine answered (None: as a chat)."""
    return PLAIN_ANSWERS_NOTE if getattr(engine, "has_chat_template", True) is False else None


def answer_table(prompts, answers: dict, ref_label: str, tokenizer) -> list[dict]:
    """Per prompt, each setting's answer and the index of its first token that differs from the reference's."""
    table = []
    for i, prompt in enumerate(prompts):
        ref_ids = answers.get(ref_label, [{}] * len(prompts))[i].get("token_ids", [])
        entry = {"prompt": prompt, "answers": {}}
        for label, items in answers.items():
            ids = items[i]["token_ids"]
            diverge = next((k for k, (a, b) in enumerate(zip(ids, ref_ids)) if a != b), None)
            if diverge is None and len(ids) != len(ref_ids):
                diverge = min(len(ids), len(ref_ids))
            entry["answers"][label] = {"text": items[i]["text"], "token_ids": ids, "diverges_at": diverge,
                                       "parts": _split_at(ids, diverge, tokenizer)}  # fmt: skip
        table.append(entry)
    return table


def _split_at(ids: list[int], k: int | None, tokenizer) -> list[str]:
    """``[same, first different token, rest]`` as text (decoding prefixes, so no character is split)."""
    full = tokenizer.decode(ids, skip_special_tokens=True)
    if k is None or k >= len(ids):
        return [full, "", ""]
    same = tokenizer.decode(ids[:k], skip_special_tokens=True)
    upto = tokenizer.decode(ids[: k + 1], skip_special_tokens=True)
    return [same, upto[len(same) :], full[len(upto) :]]


def token_texts(ids: list[int], tokenizer) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def top_tokens(scores, tokenizer) -> list[list[list]]:
    """Each position's top tokens as ``[[text, probability, id], ...]`` (plain data for the report; the id tells
    apart two tokens with the same text)."""
    return [
        [[tokenizer.decode([t]), round(math.exp(lp), 6), int(t)] for t, lp in zip(ids, lps)]
        for ids, lps in zip(scores.top_ids, scores.top_logprobs)
    ]
