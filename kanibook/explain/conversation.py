"""The reply to explain and the prompt it answers: which conversation, which reply, its tokens, and the checks.

:func:`resolve` turns what the user passed (a ``Kani``, the notebook's ``ChatSession``, a chat panel, or an engine
with messages) into a :class:`Reply`: the engine and its model, the messages before the reply, the reply, and the
real prompt as the prompt view shows it (:func:`kanibook.show_prompt`: the same ids :func:`kanibook.score_text`
scores). What cannot be explained says so in one line: an engine that cannot score (an OpenAI-compatible server), a
conversation with images or sounds, one that does not fit the context, a missing reply. kanibook's llama.cpp engine
is explained like a transformers one, from llama.cpp's own ids and logits.
:func:`prompt_ids` renders any message list through the engine's own pipeline, as ``build_prompt`` does, and
:func:`text_ids` tokenizes a text as the engine's own tokenizer does (llama.cpp's for a GGUF run by llama.cpp).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import KanibookError

__all__ = ["Reply", "resolve", "prompt_ids", "plain_text_ids", "text_ids"]


@dataclass
class Reply:
    """A reply and the prompt it answers.

    :param engine: The kani engine (a local Hugging Face one, or kanibook's llama.cpp engine).
    :param context: The messages before the reply (system prompt and always-included messages first).
    :param message: The reply (an assistant ``ChatMessage``).
    :param functions: The functions the prompt describes (a Kani's enabled functions; else none).
    :param view: :func:`kanibook.show_prompt` of ``context + [message]``.
    :param start: The position of the reply's first own token in ``view``; ``end``: one past its last.
    """

    engine: Any
    context: list
    message: Any
    functions: list | None
    view: Any
    start: int
    end: int

    @property
    def model(self):
        return self.engine.model

    @property
    def ids(self) -> list[int]:
        """The real prompt's ids up to the end of the reply's own text."""
        return list(self.view.token_ids[: self.end])

    @property
    def reply_ids(self) -> list[int]:
        return list(self.view.token_ids[self.start : self.end])

    @property
    def prefix(self) -> list[int]:
        """The real prompt before the reply's own text (the generation prompt included)."""
        return list(self.view.token_ids[: self.start])

    @property
    def tail(self) -> list[int]:
        """The real prompt from the reply's own text to its end (what a re-rendered prompt must end with)."""
        return list(self.view.token_ids[self.start :])


def resolve(target, index: int = -1, messages=None) -> Reply:
    """The reply number ``index`` (among the conversation's replies; -1: the last) of ``target``, checked.

    :param target: A ``kani.Kani``, a ``ChatSession``, a chat panel, or a kanibook / Hugging Face engine together with
        ``messages``.
    :param messages: The conversation (for an engine; with a Kani: in place of its own).
    """
    engine, conversation, functions = _conversation(target, messages)
    _check_engine(engine)
    from ..engine._template import has_chat_template

    if not has_chat_template(engine):
        raise KanibookError(
            "This model has no chat template (a base model?): explain_reply and template_what_if take a chat reply "
            "apart by its messages; load it with chat_template=... to explain one, or score plain text with "
            "kanibook.score_text."
        )
    replies = [i for i, m in enumerate(conversation) if m.role.value == "assistant" and isinstance(m.content, str)
               and m.content.strip()]  # fmt: skip
    if not replies:
        raise KanibookError("There is no reply to explain yet: chat first (%%chat, the panel, or kani's chat_round).")
    if not -len(replies) <= index < len(replies):
        raise KanibookError(f"index={index} is out of range: this conversation has {len(replies)} "
                            f"repl{'y' if len(replies) == 1 else 'ies'} "
                            f"(use 0..{len(replies) - 1}, or -1 for the last).")  # fmt: skip
    at = replies[index]
    context, message = list(conversation[:at]), conversation[at]
    for k, m in enumerate([*context, message]):
        if any(not isinstance(p, str) for p in m.parts):
            raise KanibookError(
                f"Message #{k + 1} has an image or a sound: explain_reply and template_what_if work on text "
                "conversations only (take the media out, or ask about a reply in a text-only conversation)."
            )
    from ..prompt import show_prompt

    view = show_prompt(engine, [*context, message], functions)
    own = [t.position for s in view.segments_of(len(context)) for t in view.tokens[s.start : s.end]
           if not t.is_template]  # fmt: skip
    if not own:
        raise KanibookError("The reply has no tokens of its own in the prompt (the template dropped it): "
                            "nothing to explain.")  # fmt: skip
    size = engine.max_context_size
    if size and view.total > size:
        raise KanibookError(
            f"This conversation ({view.total} tokens) does not fit the model's context ({size} tokens): explain a "
            "shorter one (kanibook.explain_reply(engine, messages=[...]) with the messages that matter)."
        )
    if not context:
        raise KanibookError("The reply has nothing before it: there is no prompt to explain.")
    return Reply(engine, context, message, functions, view, own[0], own[-1] + 1)


def _conversation(target, messages):
    from kani import Kani

    if not isinstance(target, Kani) and getattr(target, "loaded", True) is False:  # a session: never load here
        raise KanibookError("No model is loaded in this session yet: chat first (%%chat or %kani load).")
    kani = getattr(target, "kani", None) if not isinstance(target, Kani) else target
    if isinstance(kani, Kani):
        history = list(messages) if messages is not None else [*kani.always_included_messages, *kani.chat_history]
        return kani.engine, history, kani.get_enabled_functions() or None
    if messages is None:
        raise KanibookError(
            f"Pass a Kani, the notebook's session, a chat panel, or an engine with messages=[...]; got "
            f"{type(target).__name__} without messages."
        )
    return target, list(messages), None


def _check_engine(engine) -> None:
    model = getattr(engine, "model", None)
    ok = getattr(engine, "tokenizer", None) is not None and hasattr(engine, "build_prompt")
    if ok and not callable(getattr(engine, "score_ids", None)):  # llama.cpp scores with its own logits
        import torch

        ok = isinstance(model, torch.nn.Module)
    if not ok:
        raise KanibookError(
            f"{type(engine).__name__} cannot score a given reply token by token (a server only sends what it "
            "generates): load the model locally with kanibook.load(...) to explain its replies."
        )


def prompt_ids(engine, messages: list, functions=None) -> list[int] | None:
    """The ids ``engine.build_prompt(messages, functions)`` sends (as kani turns a text prompt into ids), or None
    where the template refuses the conversation."""
    import warnings
    from collections import UserDict

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prompt = engine.build_prompt(messages, functions)
    except Exception:  # noqa: BLE001 - a template that refuses this conversation
        return None
    if isinstance(prompt, str):
        return text_ids(engine, prompt)
    if isinstance(prompt, torch.Tensor):
        return prompt[0].tolist()
    if isinstance(prompt, (dict, UserDict)):
        return prompt["input_ids"][0].tolist()
    return None


def plain_text_ids(engine, messages: list) -> list[int]:
    """The messages as plain text, no chat template: their texts one after another, a blank line after each, as a
    tokenizer sends text (its own special tokens, e.g. a BOS, included)."""
    from ..prompt.plain import plain_ids

    return plain_ids(engine, "".join(m.text.strip() + "\n\n" for m in messages if m.text and m.text.strip()))


def text_ids(engine, text: str) -> list[int]:
    """A rendered prompt's ids, as the engine sends a prompt text (no special tokens added: the template wrote its
    own): llama.cpp's tokenizer for kanibook's llama.cpp engine, else the engine's processor or tokenizer."""
    own = getattr(engine, "prompt_ids", None)
    if callable(own):
        return list(own(text))
    encoded = engine._processor_or_tokenizer(text=text, add_special_tokens=False, return_tensors="pt")
    return encoded["input_ids"][0].tolist()
